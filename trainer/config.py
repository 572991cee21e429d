"""Training configuration: one pydantic model, documented field by field (after TRL's SFTConfig).

Each field's description is its documentation and the help of its flag in ``mindgap train``
(and ``python -m mindgap.trainer``, the same command): ``--max-steps`` for ``max_steps``, and
so on. This module imports pydantic only, so the command line can be built without torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mindgap.config import QueueSettings

LossKind = Literal["sft", "dft", "is"]
"""The token-level losses of DESIGN.md."""


class TrainConfig(BaseModel):
    """Everything ``mindgap.trainer.loop.train`` needs; defaults suit a small model on one host."""

    model_config = ConfigDict(extra="forbid")

    # --- data ---------------------------------------------------------------------------
    data: list[str] = Field(default_factory=list, description="Aligned examples: JSON lines "
                            "(.jsonl) or Parquet (.parquet) files of AlignedExample, as written "
                            "by `mindgap rewrite` (repeat the flag for several; or use redis).")
    redis: str | None = Field(default=None, description="Train on the live stream instead of "
                              "files: the Redis URL of the queue (redis://host:6379/0); examples "
                              "of the stream <redis_prefix>:aligned, read as consumer group "
                              "'trainers'.")
    job: str | None = Field(default=None, description="With redis: stop once this job is "
                            "finished and all its examples are trained on (examples of other "
                            "jobs in the stream are trained on too).")
    redis_prefix: str = Field(default_factory=lambda: QueueSettings().prefix, min_length=1,
                              description="Key prefix of the queue (default: the services' "
                              "MINDGAP_QUEUE_PREFIX, else 'mindgap').")
    redis_consumer: str | None = Field(default=None, description="Consumer name in the group "
                                       "'trainers' (default: derived from the output folder, "
                                       "so a run restarted on the same folder re-reads what it "
                                       "had not acknowledged).")
    redis_block_ms: int = Field(default=1000, ge=1, description="Longest single wait for new "
                                "stream entries, milliseconds.")
    redis_idle_timeout_s: float | None = Field(default=None, gt=0, description="With redis and "
                                               "no job: stop after this many seconds without a "
                                               "new example (unset: wait; max_steps ends the "
                                               "run).")
    shuffle: bool = Field(default=True, description="Shuffle the examples every epoch (seeded "
                          "with seed + epoch).")
    epochs: int | None = Field(default=None, ge=1, description="Stop after this many passes "
                               "over the data (unset: as many as max_steps needs).")
    max_length: int = Field(default=2048, ge=1, description="Most tokens of prompt plus "
                            "response. Longer examples keep the whole prompt and lose the "
                            "response's tail; an example whose prompt alone fills max_length "
                            "is dropped (see mindgap.trainer.collate).")
    # --- model --------------------------------------------------------------------------
    model: str = Field(default="", description="Model to train: a local folder or a hub name, "
                       "loaded with AutoModelForCausalLM (empty: the packaged "
                       "SmolLM2-135M-Instruct, resolved by the command).")
    tokenizer: str | None = Field(default=None, description="Tokenizer to use (default: the "
                                  "model's).")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in "
                                         "the backward pass (less memory, about a third more "
                                         "compute).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="Compute precision: 'auto' (bf16 autocast on GPU, fp32 on "
        "CPU), 'float32' or 'bfloat16' (autocast). Weights and optimizer states are always "
        "kept in fp32.")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto' "
                        "(cuda:LOCAL_RANK if CUDA is available, else cpu), 'cpu' or 'cuda'.")
    # --- loss ---------------------------------------------------------------------------
    loss: LossKind = Field(default="is", description="Loss per response token (DESIGN.md): "
                           "'sft' (-log p), 'dft' (-sg(p) log p) or 'is' (-min(sg(p/q), C) "
                           "log p, q = 1 for expert tokens).")
    clip_ratio: float = Field(default=5.0, gt=0, description="C: the cap on the importance "
                              "ratio p/q of the 'is' loss.")
    # --- optimisation -------------------------------------------------------------------
    max_steps: int = Field(default=100, ge=1, description="Optimizer steps to run (the "
                           "schedule's length).")
    global_batch: int = Field(default=32, ge=1, description="Examples per optimizer step, over "
                              "all ranks and micro-batches.")
    batch_tokens: int = Field(default=8192, ge=1, description="Most padded tokens per "
                              "micro-batch per rank; the global batch is accumulated over as "
                              "many micro-batches as it needs.")
    lr: float = Field(default=1e-5, ge=0, description="Peak learning rate of AdamW.")
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="The cosine schedule ends "
                                "at lr * min_lr_ratio.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps from 0 to lr "
                              "(then cosine decay).")
    warmup_ratio: float = Field(default=0.0, ge=0, le=1, description="Warm-up as a fraction of "
                                "max_steps (used when warmup_steps is 0).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(default=0.999, ge=0, lt=1, description="AdamW beta2.")
    adam_eps: float = Field(default=1e-8, gt=0, description="AdamW epsilon.")
    fused_adamw: bool = Field(default=True, description="Use torch's fused AdamW kernel where "
                              "supported (CPU and CUDA fp32; on CPU it is many times faster "
                              "than the default).")
    grad_clip: float = Field(default=1.0, ge=0, description="Clip the global gradient norm to "
                             "this (0: no clipping; the norm is logged either way).")
    seed: int = Field(default=0, ge=0, description="Seed of the data order and of the random "
                      "number generators.")
    # --- distribution -------------------------------------------------------------------
    dist_mode: Literal["auto", "fsdp", "allreduce"] = Field(
        default="auto", description="With torchrun: 'fsdp' (FSDP2 fully_shard, also on CPU "
        "with gloo), 'allreduce' (replicated weights, gradients summed with all-reduce) or "
        "'auto' (fsdp).")
    # --- output, checkpoints ------------------------------------------------------------
    out: str = Field(default="runs/train", min_length=1, description="Output folder: "
                     "metrics.jsonl, TensorBoard events, checkpoints/step-N/, final/ (a "
                     "save_pretrained folder).")
    save_every: int = Field(default=0, ge=0, description="Checkpoint every this many steps (0: "
                            "only at the end).")
    keep_last: int = Field(default=2, ge=0, description="Checkpoints to keep (older ones are "
                           "deleted; 0: keep all).")
    save_final: bool = Field(default=True, description="Save the final model to OUT/final and "
                             "a last checkpoint.")
    resume: str | None = Field(default=None, min_length=1, description="'latest': continue "
                               "from the newest checkpoint in OUT (start afresh if there is "
                               "none); a path: from that checkpoint. The model, optimizer, "
                               "schedule, RNG states and data position are restored, so the "
                               "run continues exactly.")
    stop_after: int | None = Field(default=None, ge=1, description="Stop (with a checkpoint) "
                                   "after this step although max_steps is larger, as a "
                                   "preemption would; resume later.")
    # --- logging ------------------------------------------------------------------------
    log_every: int = Field(default=1, ge=1, description="Write metrics every this many steps.")
    tensorboard: bool = Field(default=True, description="Write TensorBoard events to OUT/tb "
                              "when tensorboard is installed (silently skipped otherwise).")
    progress: bool = Field(default=True, description="Show a tqdm progress bar (rank 0).")
    log_example_ids: bool = Field(default=False, description="Record the ids of the examples "
                                  "of each step in the metrics (rank 0's share with several "
                                  "ranks), to audit the data order.")

    @field_validator("data", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_data_source(self) -> TrainConfig:
        if self.data and self.redis:
            raise ValueError("give either data (files) or redis (the live stream), not both")
        if self.job is not None and not self.redis:
            raise ValueError("job needs redis")
        return self
