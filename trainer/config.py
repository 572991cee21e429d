"""Training configuration: one dataclass, documented field by field (after TRL's SFTConfig).

Each field's ``metadata["help"]`` is its documentation and the help of its flag in
``python -m mindgap.trainer`` (``--max-steps`` for ``max_steps``, and so on).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    """A field with an immutable default and its documentation."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """Everything ``mindgap.trainer.loop.train`` needs; defaults suit a small model on one host."""

    # --- data ---------------------------------------------------------------------------
    data: list[str] = field(default_factory=list, metadata={
        "help": "Aligned examples: JSON lines (.jsonl) or Parquet (.parquet) files of "
                "AlignedExample, as written by `mindgap rewrite` (or use redis)."})
    redis: str | None = _f(None, "Train on the live stream instead of files: the Redis URL "
                           "of the queue (redis://host:6379/0); examples of the stream "
                           "<redis_prefix>:aligned, read as consumer group 'trainers'.")
    job: str | None = _f(None, "With redis: stop once this job is finished and all its "
                         "examples are trained on (examples of other jobs in the stream are "
                         "trained on too).")
    redis_prefix: str = _f("mindgap", "Key prefix of the queue (as the rewriter's "
                           "MINDGAP_QUEUE_PREFIX).")
    redis_consumer: str | None = _f(None, "Consumer name in the group 'trainers' (default: "
                                    "derived from the output folder, so a run restarted on "
                                    "the same folder re-reads what it had not acknowledged).")
    redis_block_ms: int = _f(1000, "Longest single wait for new stream entries.")
    redis_idle_timeout_s: float | None = _f(None, "With redis and no job: stop after this many "
                                            "seconds without a new example (None: wait; "
                                            "max_steps ends the run).")
    shuffle: bool = _f(True, "Shuffle the examples every epoch (seeded with seed + epoch).")
    epochs: int | None = _f(None, "Stop after this many passes over the data (None: as many "
                            "as max_steps needs).")
    max_length: int = _f(2048, "Most tokens of prompt plus response. Longer examples keep "
                         "the whole prompt and lose the response's tail; an example whose "
                         "prompt alone fills max_length is dropped (see mindgap.trainer.collate).")
    # --- model --------------------------------------------------------------------------
    model: str = _f("", "Model to train: a local folder or a hub name, loaded with "
                    "AutoModelForCausalLM. The trainer does not know mindgap's default model "
                    "name: `mindgap train` resolves it to a path before calling the trainer.")
    tokenizer: str | None = _f(None, "Tokenizer to use (default: the model's).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass "
                                      "(less memory, about a third more compute).")
    dtype: str = _f("auto", "Compute precision: 'auto' (bf16 autocast on GPU, fp32 on CPU), "
                    "'float32' or 'bfloat16' (autocast). Weights and optimizer states are "
                    "always kept in fp32.")
    device: str = _f("auto", "'auto' (cuda:LOCAL_RANK if CUDA is available, else cpu), "
                     "'cpu' or 'cuda'.")
    # --- loss ---------------------------------------------------------------------------
    loss: str = _f("is", "Loss per response token (DESIGN.md): 'sft' (-log p), 'dft' "
                   "(-sg(p) log p) or 'is' (-min(sg(p/q), C) log p, q = 1 for expert "
                   "tokens).", choices=["sft", "dft", "is"])
    clip_ratio: float = _f(5.0, "C: the cap on the importance ratio p/q of the 'is' loss.")
    # --- optimisation -------------------------------------------------------------------
    max_steps: int = _f(100, "Optimizer steps to run (the schedule's length).")
    global_batch: int = _f(32, "Examples per optimizer step, over all ranks and "
                           "micro-batches.")
    batch_tokens: int = _f(8192, "Most padded tokens per micro-batch per rank; the global "
                           "batch is accumulated over as many micro-batches as it needs.")
    lr: float = _f(1e-5, "Peak learning rate of AdamW.")
    min_lr_ratio: float = _f(0.0, "The cosine schedule ends at lr * min_lr_ratio.")
    warmup_steps: int = _f(0, "Linear warm-up steps from 0 to lr (then cosine decay).")
    warmup_ratio: float = _f(0.0, "Warm-up as a fraction of max_steps (used when "
                             "warmup_steps is 0).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_eps: float = _f(1e-8, "AdamW epsilon.")
    fused_adamw: bool = _f(True, "Use torch's fused AdamW kernel where supported (CPU and "
                           "CUDA fp32; on CPU it is many times faster than the default).")
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this (0: no clipping; the "
                          "norm is logged either way).")
    seed: int = _f(0, "Seed of the data order and of the random number generators.")
    # --- distribution -------------------------------------------------------------------
    dist_mode: str = _f("auto", "With torchrun: 'fsdp' (FSDP2 fully_shard, also on CPU with "
                        "gloo), 'allreduce' (replicated weights, gradients summed with "
                        "all-reduce) or 'auto' (fsdp).", choices=["auto", "fsdp", "allreduce"])
    # --- output, checkpoints ------------------------------------------------------------
    out: str = _f("runs/train", "Output folder: metrics.jsonl, TensorBoard events, "
                  "checkpoints/step-N/, final/ (a save_pretrained folder).")
    save_every: int = _f(0, "Checkpoint every this many steps (0: only at the end).")
    keep_last: int = _f(2, "Checkpoints to keep (older ones are deleted; 0: keep "
                       "all).")
    save_final: bool = _f(True, "Save the final model to OUT/final and a last checkpoint.")
    resume: str | None = _f(None, "'latest': continue from the newest checkpoint in OUT (start "
                            "afresh if there is none); a path: from that checkpoint. The "
                            "model, optimizer, schedule, RNG states and data position are "
                            "restored, so the run continues exactly.")
    stop_after: int | None = _f(None, "Stop (with a checkpoint) after this step although "
                                "max_steps is larger, as a preemption would; resume later.")
    # --- logging ------------------------------------------------------------------------
    log_every: int = _f(1, "Write metrics every this many steps.")
    tensorboard: bool = _f(True, "Write TensorBoard events to OUT/tb when tensorboard is "
                           "installed (silently skipped otherwise).")
    progress: bool = _f(True, "Show a tqdm progress bar (rank 0).")
    log_example_ids: bool = _f(False, "Record the ids of the examples of each step in the "
                               "metrics (rank 0's share with several ranks), to audit the "
                               "data order.")

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.data and self.redis:
            raise ValueError("give either data (files) or redis (the live stream), not both")
        if self.job is not None and not self.redis:
            raise ValueError("job needs redis")
        if self.loss not in ("sft", "dft", "is"):
            raise ValueError(f"loss must be sft, dft or is, not {self.loss!r}")
        if self.dist_mode not in ("auto", "fsdp", "allreduce"):
            raise ValueError(f"dist_mode must be auto, fsdp or allreduce, not {self.dist_mode!r}")
        for name in ("max_steps", "global_batch", "batch_tokens", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.clip_ratio <= 0:
            raise ValueError("clip_ratio must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown training options: {sorted(unknown)}")
        return cls(**values)
