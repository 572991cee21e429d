"""``mindgap experiment``'s configuration: one YAML file, one pydantic model, documented per field.

An experiment rewrites a training set once, trains every arm on it (or on the expert
solutions) from the same start, and measures each arm (``mindgap.rewriter.experiment``).
The ``rewrite`` and ``eval`` sections are the options of ``mindgap rewrite`` and ``mindgap
eval`` (the same fields, the same defaults); ``training`` holds ``mindgap train`` options
shared by every arm, checked by that command's own model when the experiment starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mindgap.datasets import PRESETS
from mindgap.rewriter.eval_options import BENCHMARK_FILES, EvalOptions
from mindgap.schemas import RewriteOptions

ArmData = Literal["expert", "rewritten"]
"""What an arm trains on: every problem's expert solution, or the rewritten set."""


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

    @field_validator("training")
    @classmethod
    def _per_arm_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        value = {str(k).replace("-", "_"): v for k, v in value.items()}
        taken = sorted({"data", "model", "loss", "seed", "out", "resume", "redis"} & set(value))
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
