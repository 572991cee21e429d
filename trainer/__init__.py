"""mindgap's trainer: importance-sampled SFT on aligned examples (DESIGN.md, "Training loss").

- ``mindgap.trainer.losses``: the token-level losses ``sft``, ``dft``, ``is`` and their statistics;
- ``mindgap.trainer.collate``: tokenisation, truncation, padding, micro-batches by a token budget;
- ``mindgap.trainer.sources``: ``Source`` (the interface) and ``FileSource`` (JSONL / Parquet);
- ``mindgap.trainer.redis_source``: ``RedisSource`` (the live stream ``mindgap:aligned``);
- ``mindgap.trainer.loop``: ``train(config) -> summary`` (AdamW, cosine schedule, torchrun + FSDP2);
- ``mindgap.trainer.checkpoint``: checkpoints with optimizer, schedule, RNG and data position;
- ``mindgap.trainer.config``: ``TrainConfig``; ``python -m mindgap.trainer`` and
  ``train_command`` (the entry point of ``mindgap train``).

The trainer imports ``mindgap`` only, never ``services``: the model is given as a path or a
hub name (``mindgap train`` resolves its default model name before calling it).
Submodules are imported on demand, so ``import mindgap.trainer`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_command"]


def train_command(**options: Any) -> dict[str, Any]:
    """Run training with ``TrainConfig`` fields as keyword arguments; returns the summary.

    ``data`` may be one path or a list; ``model`` must be a loadable folder or hub name
    (resolve mindgap's default model name before calling). Unknown options raise TypeError.
    """
    from mindgap.trainer.config import TrainConfig
    from mindgap.trainer.loop import train

    return train(TrainConfig.from_dict(options))
