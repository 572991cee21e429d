"""mindgap's trainer: importance-sampled SFT on aligned examples (DESIGN.md, "Training loss").

- ``mindgap.trainer.losses``: the token-level losses ``sft``, ``dft``, ``is`` and their statistics;
- ``mindgap.trainer.collate``: tokenisation, truncation, padding, micro-batches by a token budget;
- ``mindgap.trainer.sources``: ``ExampleStream`` (the interface) and ``FileStream`` (JSONL /
  Parquet);
- ``mindgap.trainer.redis_source``: ``RedisStream`` (the live stream ``mindgap:aligned``);
- ``mindgap.trainer.loop``: ``train(config) -> summary`` (AdamW, cosine schedule, torchrun + FSDP2);
- ``mindgap.trainer.checkpoint``: checkpoints with optimizer, schedule, RNG and data position;
- ``mindgap.trainer.schedule``: the learning-rate schedule and its resume rules;
- ``mindgap.trainer.reporting``: metrics.jsonl, TensorBoard, wandb, the progress bar;
- ``mindgap.trainer.lora``: LoRA adapters through peft;
- ``mindgap.trainer.trl_loss``: mindgap's losses inside TRL's ``SFTTrainer``;
- ``mindgap.trainer.config``: ``TrainConfig`` (every option, documented; the flags of
  ``mindgap train`` and ``python -m mindgap.trainer``, the same command, and the keys of
  ``--config`` files).

The trainer imports ``mindgap`` only, never ``services``: the model is given as a path or a
hub name (``mindgap train`` resolves its default model name before calling it).
Submodules are imported on demand, so ``import mindgap.trainer`` stays light.
"""

from __future__ import annotations
