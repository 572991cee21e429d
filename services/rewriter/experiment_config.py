"""``mindgap experiment``'s configuration: one YAML file, one pydantic model, documented per field.

An experiment rewrites a training set once, trains every arm on it (or on the expert
solutions) from the same start, and measures each arm (``mindgap.rewriter.experiment``); an
online arm instead has its training problems rewritten while it trains, against the newest
policy version (``online``, ``mindgap.rewriter.experiment_online``). The ``rewrite`` and
``eval`` sections are the options of ``mindgap rewrite`` and ``mindgap eval`` (the same
fields, the same defaults); ``training`` holds ``mindgap train`` options shared by every arm,
checked by that command's own model when the experiment starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mindgap.config import QueueSettings
from mindgap.datasets import PRESETS
from mindgap.rewriter.eval_options import BENCHMARK_FILES, EvalOptions
from mindgap.schemas import RewriteOptions

ArmData = Literal["expert", "rewritten"]
"""What an arm trains on: every problem's expert solution, or the rewritten set."""
ArmMode = Literal["offline", "online"]
"""When an arm's data is rewritten: once before training (the paper), or during it."""
PER_ARM = ("data", "model", "loss", "seed", "out", "resume", "redis", "redis_prefix", "job",
           "publish_every", "publish_dir", "max_staleness")
"""``mindgap train`` options the experiment sets per arm (``training`` may not)."""


class ProblemSplit(BaseModel):
    """Problems of named benchmark files (the first ``limit`` of each, after those an earlier
    split of the same file took) or of one data set (``dataset``, read with ``preset``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmarks: list[str] = Field(default_factory=list, description="Benchmark names (files "
                                  "of data_dir): " + ", ".join(sorted(BENCHMARK_FILES)) + ".")
    dataset: str | None = Field(default=None, description="Instead of benchmarks: a data set "
                                "(a .jsonl/.parquet file, a save_to_disk folder or a Hugging "
                                "Face name such as AI-MO/NuminaMath-CoT).")
    preset: str | None = Field(default=None, description="With dataset: its field mapping "
                               "(" + ", ".join(sorted(PRESETS)) + ").")
    split: str = Field(default="train", min_length=1, description="With dataset: the split.")
    limit: int | None = Field(default=None, ge=1, description="Problems from each benchmark "
                              "(or from the data set); unset: all of them.")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list):
            return value
        names = [str(n).strip() for n in names if str(n).strip()]
        unknown = [n for n in names if n not in BENCHMARK_FILES]
        if unknown:
            raise ValueError(f"unknown benchmark {unknown[0]!r}; known: "
                             + ", ".join(sorted(BENCHMARK_FILES)))
        return names

    @model_validator(mode="after")
    def _one_source(self) -> ProblemSplit:
        if bool(self.benchmarks) == bool(self.dataset):
            raise ValueError("give benchmarks or a dataset, one of them")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}")
        return self

    def names(self) -> list[str]:
        """The split's parts by name: its benchmarks, or the data set's file or last name."""
        if self.dataset:
            return [Path(self.dataset.rstrip("/")).name.removesuffix(".jsonl")
                    .removesuffix(".parquet").lower()]
        return list(self.benchmarks)


class Arm(BaseModel):
    """One training recipe: a data set and a loss, trained once per seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9+_-]*$", description="Name in the report and "
                      "folder name (lower case, digits, + _ -).")
    data: ArmData = Field(description="'expert' (the expert solutions of the training "
                          "problems) or 'rewritten' (mindgap rewrite's output on them).")
    loss: Literal["sft", "dft", "is"] = Field(description="The token loss (DESIGN.md).")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Training "
                             "seeds: one run per seed (two or more measure seed noise).")
    mode: ArmMode = Field(default="offline", description="'offline': train on the data "
                          "rewritten once before training (the paper); 'online': a worker "
                          "rewrites the training problems through the Redis queue while the "
                          "arm trains, against the newest policy version it publishes (needs "
                          "data 'rewritten'; see `online`).")

    @model_validator(mode="after")
    def _online_rewrites(self) -> Arm:
        if self.mode == "online" and self.data != "rewritten":
            raise ValueError(f"arm {self.name}: mode online rewrites the training problems "
                             "while it trains, so it needs data 'rewritten'")
        return self


class OnlineOptions(BaseModel):
    """How the online arms run: one ``mindgap worker`` rewrites the training problems (a job
    of the queue) while ``mindgap train`` trains on its results and publishes versions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str = Field(default_factory=lambda: QueueSettings().redis_url,
                           description="The Redis of the queue (default: "
                           "MINDGAP_QUEUE_REDIS_URL, else redis://127.0.0.1:6379/0); not one "
                           "of the settings a work_dir is checked against.")
    prefix: str = Field(default="mindgap-experiment", min_length=1, pattern=r"^[^*?\[\]]+$",
                        description="Base of the runs' key prefixes: a run uses "
                        "<prefix>:<hash of work_dir>:<run>, its keys deleted before it starts "
                        "and after its results are saved.")
    publish_every: int = Field(default=2, ge=1, description="The trainer publishes its "
                               "weights as a new policy version every this many steps; the "
                               "worker loads the newest between batches.")
    max_staleness: int | None = Field(default=1, ge=0, description="A model response sampled "
                                      "more than this many versions before the trainer's "
                                      "current one is dropped and its problem re-queued (once; "
                                      "`mindgap train --max-staleness`). Unset: no bound.")
    worker_batch_size: int = Field(default=8, ge=1, description="Tasks the worker claims and "
                                   "rewrites together (at one policy version).")
    max_ahead_steps: int = Field(default=2, ge=1, description="Backpressure: the worker claims "
                                 "no task while this many steps of examples (times "
                                 "training.global_batch) are rewritten or in hand but not yet "
                                 "trained on. Without a bound it would rewrite everything "
                                 "before training starts, offline in effect.")

    def high_water(self, global_batch: int) -> int:
        """The worker's high-water mark of untrained examples."""
        return self.max_ahead_steps * global_batch


def _default_arms() -> list[Arm]:
    """The paper's comparison: SFT and DFT on expert and on rewritten data (DR+DFT), and IS."""
    return [Arm(name="sft-expert", data="expert", loss="sft", seeds=[0, 1]),
            Arm(name="dft-expert", data="expert", loss="dft"),
            Arm(name="sft-rewritten", data="rewritten", loss="sft"),
            Arm(name="dft-rewritten", data="rewritten", loss="dft", seeds=[0, 1]),
            Arm(name="is-rewritten", data="rewritten", loss="is")]


class ExperimentConfig(BaseModel):
    """Everything one experiment run needs; every stage's output goes under ``work_dir``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="experiment", description="Title of the report.")
    work_dir: str = Field(default="runs/experiment", description="Folder of every stage's "
                          "output (data, checkpoints, evaluations): the cache a killed run "
                          "continues from.")
    report_dir: str = Field(default="runs/experiment/report", description="Folder of "
                            "report.md, its PNGs, the config, the raw metrics and the "
                            "rewritten data's summary (what gets committed; no weights).")
    model: str = Field(default="", description="The start model of every arm (empty: the "
                       "packaged SmolLM2-135M-Instruct).")
    engine: Literal["vllm", "transformers"] = Field(default="vllm", description="Engine of "
                                                    "rewriting, evaluation and drift sampling.")
    data_dir: str = Field(default="../shared/data/benchmarks", description="Folder of the "
                          "benchmark files.")
    train: ProblemSplit = Field(description="Training problems (rewritten once).")
    heldout: ProblemSplit = Field(description="Held-out accuracy benchmarks: problems after "
                                  "the training ones of the same file, never trained on.")
    drift: ProblemSplit = Field(description="Drift prompts: the start model's own responses "
                                "to these (after the training and held-out problems of the "
                                "same file) are scored under each trained model, a forgetting "
                                "proxy (per-token KL from the start model).")
    drift_max_tokens: int = Field(default=256, ge=1, description="Most tokens of each drift "
                                  "response (sampled at T = 1, top-p 1: the model itself).")
    rewrite: RewriteOptions = Field(default_factory=RewriteOptions, description="Options of "
                                    "the rewriting (`mindgap rewrite`).")
    eval: EvalOptions = Field(default_factory=EvalOptions, description="Options of the "
                              "held-out evaluation (`mindgap eval`), before and after training.")
    training: dict[str, Any] = Field(default_factory=dict, description="`mindgap train` "
                                     "options shared by every arm (max_steps, global_batch, "
                                     "lr, ...); data, model, loss, seed and out are set per "
                                     "arm.")
    train_launcher: str | None = Field(default=None, description="How training processes "
                                       "start, for many GPUs: a command that runs "
                                       "`-m mindgap.trainer --config FILE` after it, e.g. "
                                       "'torchrun --nproc_per_node 8' (unset: one process, "
                                       "`mindgap train`).")
    arms: list[Arm] = Field(default_factory=_default_arms, min_length=1, description="The "
                            "arms, in report order.")
    baseline: str = Field(default="sft-expert", description="The arm every other is compared "
                          "with in the report's paired intervals.")
    resamples: int = Field(default=10_000, ge=100, description="Paired bootstrap resamples.")
    online: OnlineOptions = Field(default_factory=OnlineOptions, description="How the online "
                                  "arms run (the queue, policy versions, staleness, the "
                                  "worker's batch and backpressure).")

    @field_validator("training")
    @classmethod
    def _per_arm_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        value = {str(k).replace("-", "_"): v for k, v in value.items()}
        taken = sorted(set(PER_ARM) & set(value))
        if taken:
            raise ValueError(f"training: {taken[0]} is set per arm by the experiment")
        return value

    @model_validator(mode="after")
    def _arms_named_once(self) -> ExperimentConfig:
        names = [arm.name for arm in self.arms]
        if len(set(names)) < len(names):
            raise ValueError("arms: an arm name is used twice")
        if self.baseline not in names:
            raise ValueError(f"baseline: no arm named {self.baseline!r}")
        if any(arm.mode == "online" for arm in self.arms) and \
                "global_batch" not in self.training:
            raise ValueError("online arms need training.global_batch (online.max_ahead_steps "
                             "counts the worker's backpressure bound in batches)")
        return self

    def runs(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed) to train, in report order."""
        return [(arm, seed) for arm in self.arms for seed in arm.seeds]


def run_name(arm: Arm, seed: int) -> str:
    """The folder and label of one training run: ``<arm>-s<seed>``."""
    return f"{arm.name}-s{seed}"


def read_experiment_config(path: str | Path) -> ExperimentConfig:
    """The config of a YAML file (``ValueError`` naming the field that is wrong)."""
    import yaml
    from pydantic import ValidationError

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of options")
    try:
        return ExperimentConfig.model_validate(loaded)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "config"
        raise ValueError(f"{path}: {where}: {error['msg']}") from None
