"""Option groups of ``mindgap eval``: which benchmarks, and how each problem is sampled.

Benchmarks are named (``math500``, ``gsm8k``, ...: the files of ``--data-dir`` with their
presets, :data:`mindgap.datasets.PRESET_FILES`) or given as data sets read with ``--preset``
and ``--field``, as ``mindgap rewrite`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindgap.datasets import PRESET_FILES, PRESETS, FieldMap, read_problems, with_fields
from mindgap.schemas import Problem

BENCHMARK_FILES: dict[str, str] = {
    Path(name).stem.removesuffix("_test"): name for name in PRESET_FILES}
"""Benchmark names (``gsm8k``, ``math500``, ...) and their files in ``--data-dir``."""
PAPER_BENCHMARKS = "math500,minerva_math,olympiadbench,aime24,amc23"
"""The paper's five benchmarks (its Table 1 average)."""


class BenchmarkOptions(BaseModel):
    """Which benchmarks to evaluate on, and how many of their problems."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmarks: str = Field(default=PAPER_BENCHMARKS, description="Comma-separated benchmark "
                            "names (" + ", ".join(sorted(BENCHMARK_FILES)) + ": files in "
                            "--data-dir) or data sets (a .jsonl/.parquet file, a "
                            "`save_to_disk` folder or a Hugging Face name, read with "
                            "--preset and --field).")
    data_dir: str = Field(default="../shared/data/benchmarks", description="Folder of the "
                          "named benchmarks' files.")
    preset: str | None = Field(default=None, description="Field mapping of benchmarks given "
                               "as data sets (default: the file's own when its name is a "
                               "known benchmark file, else mindgap): "
                               + ", ".join(sorted(PRESETS)) + ".")
    field: list[str] = Field(default_factory=list, description="NAME=COLUMN for benchmarks "
                             "given as data sets, as in `mindgap rewrite`. Repeatable.")
    split: str = Field(default="test", min_length=1, description="Split of Hugging Face data "
                       "sets with several.")
    limit: int | None = Field(default=None, ge=1, description="Only the first N problems of "
                              "each benchmark.")

    @field_validator("benchmarks")
    @classmethod
    def _listed(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError("name at least one benchmark")
        if len(set(names)) < len(names):
            raise ValueError("a benchmark is named twice")
        return ",".join(names)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value

    @field_validator("field")
    @classmethod
    def _valid_fields(cls, value: list[str]) -> list[str]:
        with_fields(None, value)  # DatasetError is a ValueError: the flag's one-line error
        return value

    def resolve(self) -> list[Benchmark]:
        """Each benchmark's name, source and field map, in the order given."""
        found = []
        for item in self.benchmarks.split(","):
            if item in BENCHMARK_FILES:
                file = BENCHMARK_FILES[item]
                found.append(Benchmark(item, str(Path(self.data_dir) / file),
                                       PRESETS[PRESET_FILES[file]]))
            else:
                preset = self.preset or PRESET_FILES.get(Path(item).name)
                found.append(Benchmark(Path(item).stem or item, item,
                                       with_fields(preset, self.field)))
        return found


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its name in the results, where its problems are, how they are read."""

    name: str
    source: str
    fields: FieldMap

    def read(self, split: str, limit: int | None) -> list[Problem]:
        """Its problems (``DatasetError`` for a bad row or source)."""
        return read_problems(self.source, fields=self.fields, split=split, limit=limit)


class EvalOptions(BaseModel):
    """How each problem is sampled: the paper's protocol by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=16, ge=1, le=1024, description="Samples per problem (avg@n, "
                   "pass@k for k = 1, 2, 4, ... n).")
    temperature: float = Field(default=1.0, gt=0.0, le=4.0, description="Sampling "
                               "temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(default=4096, ge=1, le=131072, description="Most tokens per "
                            "response (longer ones are cut and counted).")
    seed: int = Field(default=0, ge=0, description="Seed of sampling.")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Problems sampled in one "
                            "engine call (and verified in one batch).")
