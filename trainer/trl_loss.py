"""mindgap's losses inside TRL's ``SFTTrainer``, for those who keep their TRL setup.

- ``trl_rows(examples, tokenizer, max_length)``: aligned examples as dataset rows
  (``input_ids``, ``labels`` with -100 on the prompt, ``behavior_logprobs``,
  ``has_behavior``), encoded and truncated exactly as ``mindgap train`` does;
- ``TrlCollator``: pads those rows into a batch;
- ``mindgap_loss(logits, batch, kind, clip, num_items)``: the loss of
  ``mindgap.trainer.losses`` from Hugging Face-style (unshifted) labels;
- ``MindgapSFTTrainer``: an ``SFTTrainer`` whose ``compute_loss`` is ``mindgap_loss``
  (``loss_kind`` ``"is"`` by default, ``clip_ratio`` 5).

Use::

    trainer = MindgapSFTTrainer(model=model, args=SFTConfig(..., remove_unused_columns=False,
                                dataset_kwargs={"skip_prepare_dataset": True}),
                                train_dataset=Dataset.from_list(trl_rows(examples, tok)),
                                data_collator=TrlCollator(tok.pad_token_id))

The token mean is over the response tokens of the optimizer step (TRL's
``num_items_in_batch``), as in ``mindgap train``. trl itself is the extra ``mindgap[trl]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mindgap.schemas import AlignedExample
from mindgap.trainer.collate import Encoded, encode_example
from mindgap.trainer.config import LossKind
from mindgap.trainer.losses import response_logprobs, token_loss

IGNORE = -100


def trl_rows(examples: Sequence[AlignedExample], tokenizer: Any,
             max_length: int = 2048) -> list[dict[str, list]]:
    """Dataset rows of the examples ``mindgap train`` would keep (same truncation)."""
    rows = []
    for i, example in enumerate(examples):
        e = encode_example(str(i), example, tokenizer, max_length)
        if not isinstance(e, Encoded):
            continue
        n_prompt, n_resp = e.prompt_len, e.response_len
        behavior = e.behavior if e.behavior is not None else [0.0] * n_resp
        rows.append({"input_ids": e.ids, "labels": [IGNORE] * n_prompt + e.ids[n_prompt:],
                     "behavior_logprobs": [0.0] * n_prompt + list(behavior),
                     "has_behavior": [False] * n_prompt + [e.behavior is not None] * n_resp})
    return rows


@dataclass
class TrlCollator:
    """Right-pads ``trl_rows`` rows (or rows with some of their keys) into tensors (labels
    padded with -100), with an ``attention_mask``."""

    pad_id: int

    def __call__(self, rows: list[dict[str, list]]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        pads = {"input_ids": self.pad_id, "labels": IGNORE, "behavior_logprobs": 0.0,
                "has_behavior": False, "attention_mask": 0}
        dtypes = {"behavior_logprobs": torch.float32, "has_behavior": torch.bool}
        out = {}
        for key, pad in pads.items():
            if key not in rows[0] and key != "attention_mask":
                continue
            values = [r[key] if key != "attention_mask" else [1] * len(r["input_ids"])
                      for r in rows]
            out[key] = torch.tensor([v + [pad] * (length - len(v)) for v in values],
                                    dtype=dtypes.get(key, torch.long))
        return out


def mindgap_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], kind: LossKind = "is",
                 clip: float = 5.0, num_items: float | torch.Tensor | None = None
                 ) -> torch.Tensor:
    """mindgap's token loss from unshifted ``labels`` (position ``i`` predicts token ``i+1``),
    divided by ``num_items`` (default: this batch's response tokens)."""
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    n = float(num_items) if num_items is not None else float(mask.sum())
    logp = response_logprobs(logits[:, :-1], targets.clamp(min=0), mask)
    loss, _ = token_loss(logp, mask, kind, max(n, 1.0),
                         behavior_logprobs=batch["behavior_logprobs"][:, 1:],
                         has_behavior=batch["has_behavior"][:, 1:], clip=clip)
    return loss


def _sft_trainer() -> type:
    try:
        from trl import SFTTrainer
    except ImportError as exc:
        raise ImportError("MindgapSFTTrainer needs trl: pip install 'mindgap[trl]'") from exc
    return SFTTrainer


class MindgapSFTTrainer(_sft_trainer()):  # type: ignore[misc]
    """TRL's ``SFTTrainer`` training with mindgap's ``sft``/``dft``/``is`` loss."""

    def __init__(self, *args: Any, loss_kind: LossKind = "is", clip_ratio: float = 5.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_kind, self.clip_ratio = loss_kind, clip_ratio

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        use_cache=False)
        loss = mindgap_loss(outputs.logits, inputs, self.loss_kind, self.clip_ratio,
                            num_items_in_batch)
        return (loss, outputs) if return_outputs else loss
