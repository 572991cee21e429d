"""Training configuration: one pydantic model, documented field by field (after TRL's SFTConfig).

Each field's description is its documentation and the help of its flag in ``mindgap train``
(and ``python -m mindgap.trainer``, the same command): ``--max-steps`` for ``max_steps``, and
so on; a YAML file (``--config``) can set every field, under the same names. This module
imports pydantic (and, to read or write a file, yaml) only, so the command line can be built
without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mindgap.config import QueueSettings

LossKind = Literal["sft", "dft", "is"]
"""The token-level losses of DESIGN.md."""
Reporter = Literal["jsonl", "tensorboard", "wandb"]
"""Where metrics can go (``mindgap.trainer.reporting``)."""


def _split_list(value: object) -> object:
    """One string or a list of strings, each possibly comma-separated -> a flat list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


class TrainConfig(BaseModel):
    """Everything ``mindgap.trainer.loop.train`` needs; defaults suit a small model on one host."""

    model_config = ConfigDict(extra="forbid")

    # --- data ---------------------------------------------------------------------------
    data: list[str] = Field(default_factory=list, description="Aligned examples: JSON lines "
                            "(.jsonl) or Parquet (.parquet) files of AlignedExample, as written "
                            "by `mindgap rewrite`; several paths after one flag (--data a b), "
                            "the flag repeated, or a comma-separated list; or use redis.")
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
        default="auto", description="Training precision: 'auto' (bfloat16 on GPU, float32 on "
        "CPU), 'float32' or 'bfloat16' (bf16 autocast). Master weights and optimizer states "
        "are fp32 in memory; checkpoints store the weights in this dtype (with bfloat16, the "
        "fp32 master weights go to the optimizer's file, so a resume is exact).")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto' "
                        "(cuda:LOCAL_RANK if CUDA is available, else cpu), 'cpu' or 'cuda'.")
    lora_r: int = Field(default=0, ge=0, description="LoRA rank (through peft; 0: train "
                        "every weight). Checkpoints then hold the adapter only.")
    lora_alpha: float = Field(default=16.0, gt=0, description="LoRA alpha (the update is "
                              "scaled by alpha / r).")
    lora_targets: list[str] = Field(default_factory=lambda: ["all-linear"], description=""
                                    "Modules that get adapters: names or suffixes "
                                    "(q_proj,v_proj) or 'all-linear' (every linear layer "
                                    "but the output head).")
    lora_save: Literal["adapter", "merged"] = Field(
        default="adapter", description="With LoRA, what OUT/final holds: 'adapter' (a link "
        "to the last checkpoint's adapter folder, loadable with peft) or 'merged' (the base "
        "model with the adapter merged in, a plain save_pretrained folder).")
    # --- loss ---------------------------------------------------------------------------
    loss: LossKind = Field(default="is", description="Loss per response token (DESIGN.md): "
                           "'sft' (-log p), 'dft' (-sg(p) log p) or 'is' (-min(sg(p/q), C) "
                           "log p, q = 1 for expert tokens).")
    clip_ratio: float = Field(default=5.0, gt=0, description="C: the cap on the importance "
                              "ratio p/q of the 'is' loss.")
    # --- optimisation -------------------------------------------------------------------
    max_steps: int = Field(default=100, ge=1, description="Optimizer steps to run (the "
                           "schedule's length; see reschedule for a resume that changes it).")
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
    eval_data: list[str] = Field(default_factory=list, description="Held-out aligned "
                                 "examples (JSONL/Parquet, like data) for eval_every.")
    eval_every: int = Field(default=0, ge=0, description="Every this many steps (and at the "
                            "last), log the held-out loss statistics of eval_data as eval/loss, "
                            "eval/ce, ... (0: never).")
    # --- online rewriting ---------------------------------------------------------------
    publish_every: int = Field(default=0, ge=0, description="Online rewriting (needs redis): "
                               "every this many steps publish the weights as a new policy "
                               "version (saved as safetensors to publish_dir/v<N>, atomically, "
                               "and recorded in Redis), which the rewriter workers load "
                               "between batches (0: never).")
    publish_dir: str | None = Field(default=None, description="Folder of the published "
                                    "versions, shared with the workers (default: OUT/policy).")
    max_staleness: int | None = Field(default=None, ge=0, description="Online rewriting (needs "
                                      "redis): a model response sampled more than this many "
                                      "policy versions before the trainer's current one is "
                                      "dropped and its problem re-queued for rewriting (once per "
                                      "problem; a second stale response is trained on, "
                                      "corrected by its behavior log-probs). Expert fallbacks "
                                      "are never stale. Unset: no bound.")
    # --- output, checkpoints ------------------------------------------------------------
    out: str = Field(default="runs/train", min_length=1, description="Output folder: "
                     "config.yaml (the resolved config), metrics.jsonl, tb/, wandb/, "
                     "checkpoints/step-N/, final/ (the last checkpoint's model folder).")
    save_every: int = Field(default=0, ge=0, description="Checkpoint every this many steps (0: "
                            "only at the end).")
    save_total_limit: int = Field(default=2, ge=0, description="Checkpoints to keep (older "
                                  "ones are deleted; 0: keep all).")
    save_final: bool = Field(default=True, description="At the end, write a last checkpoint "
                             "and OUT/final: a link to its model folder (the weights are "
                             "stored once).")
    final_copy: bool = Field(default=False, description="Make OUT/final a copy of the last "
                             "checkpoint's model folder instead of a link (a second copy of "
                             "the weights on disk).")
    resume: str | None = Field(default=None, min_length=1, description="'latest': continue "
                               "from the newest checkpoint in OUT (start afresh if there is "
                               "none); a path: from that checkpoint. The model, optimizer, "
                               "schedule, RNG states and data position are restored, so the "
                               "run continues exactly.")
    reschedule: bool = Field(default=False, description="Resuming with other schedule "
                             "settings (max_steps, lr, warm-up, min_lr_ratio) than the "
                             "checkpoint's: rebuild the schedule for the new settings from the "
                             "checkpoint's step (logged). Without it such a resume is refused.")
    stop_after: int | None = Field(default=None, ge=1, description="Stop (with a checkpoint) "
                                   "after this step although max_steps is larger, as a "
                                   "preemption would; resume later.")
    # --- logging ------------------------------------------------------------------------
    log_every: int = Field(default=1, ge=1, description="Write metrics every this many steps.")
    report_to: list[str] = Field(
        default_factory=lambda: ["jsonl"], description="Where metrics go, comma-separated or "
        "repeated: 'jsonl' (OUT/metrics.jsonl), 'tensorboard' (OUT/tb), 'wandb' (OUT/wandb; "
        "WANDB_MODE=offline works without an account); 'none' for nothing. TensorBoard and "
        "wandb need the extra mindgap[report]: asking for one not installed is an error.")
    wandb_project: str = Field(default="mindgap", min_length=1, description="With wandb: "
                               "the project (the run is named after OUT).")
    progress: bool = Field(default=True, description="Show a tqdm progress bar (rank 0).")
    log_example_ids: bool = Field(default=False, description="Record the ids of the examples "
                                  "of each step in the metrics (rank 0's share with several "
                                  "ranks), to audit the data order.")

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _data_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _targets_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("report_to", mode="before")
    @classmethod
    def _reporters(cls, value: object) -> object:
        names = _split_list(value)
        if not isinstance(names, list):
            return names
        unknown = sorted(set(names) - {*get_args(Reporter), "none"})
        if unknown:
            raise ValueError(f"unknown reporter {unknown[0]!r}: expected some of "
                             f"{', '.join(get_args(Reporter))} (or none)")
        return list(dict.fromkeys(n for n in names if n != "none"))

    @model_validator(mode="after")
    def _one_data_source(self) -> TrainConfig:
        if self.data and self.redis:
            raise ValueError("give either data (files) or redis (the live stream), not both")
        if self.job is not None and not self.redis:
            raise ValueError("job needs redis")
        if self.eval_every and not self.eval_data:
            raise ValueError("eval_every needs eval_data")
        if self.publish_every and not self.redis:
            raise ValueError("publish_every needs redis (workers learn of versions there)")
        if self.max_staleness is not None and not self.publish_every:
            raise ValueError("max_staleness needs publish_every (versions to be stale against)")
        return self


# --- config files ---------------------------------------------------------------------------

def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options of a YAML (or JSON) file: a mapping of field names (``max_steps`` or
    ``max-steps``) to values; unknown names are rejected when the config is built."""
    import yaml

    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(loaded).__name__}")
    return {str(key).replace("-", "_"): value for key, value in loaded.items()}


def merge_config(file_values: dict[str, Any], flags: TrainConfig, given: set[str],
                 more_data: list[str]) -> TrainConfig:
    """The config of a command: the file's options, overridden by the flags ``given`` on the
    command line; ``more_data`` (positional paths) extends ``--data``."""
    values = {**file_values, **{name: getattr(flags, name) for name in given}}
    if more_data:
        data = list(flags.data) if "data" in given else []
        values["data"] = [*data, *more_data]
    return TrainConfig.model_validate(values)


def write_config(config: TrainConfig, path: str | Path) -> None:
    """Save the resolved config as YAML (``mindgap train --config`` reads it back)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
                          encoding="utf-8")
