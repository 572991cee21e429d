"""LoRA through peft: wrap a model with adapters, reload them from a checkpoint, merge them.

With ``lora_r > 0`` only the adapters train (the optimizer holds their state alone), and a
checkpoint's ``model/`` is the peft adapter folder (``adapter_config.json``,
``adapter_model.safetensors``), so checkpoints stay small; the base weights come from
``config.model`` again on resume. peft is the extra ``mindgap[lora]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mindgap.trainer.config import TrainConfig

EXTRA = "mindgap[lora]"


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise ImportError(f"--lora-r needs peft: pip install '{EXTRA}'") from exc
    return peft


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, _peft().PeftModel)


def add_adapters(model: torch.nn.Module, config: TrainConfig,
                 resume_from: Path | None) -> torch.nn.Module:
    """``model`` with fresh LoRA adapters, or those of the checkpoint ``resume_from``."""
    peft = _peft()
    if resume_from is not None:
        return peft.PeftModel.from_pretrained(model, str(resume_from / "model"),
                                              is_trainable=True)
    targets: str | list[str] = config.lora_targets
    if targets == ["all-linear"]:
        targets = "all-linear"
    lora = peft.LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                           target_modules=targets, task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lora)


def save_merged(model: torch.nn.Module, path: Path, tokenizer: Any | None) -> None:
    """The base model with the adapters merged in, as a ``save_pretrained`` folder (the
    model in memory keeps its adapters)."""
    import copy
    import shutil

    merged = copy.deepcopy(model).merge_and_unload()
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    merged.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
