"""Option groups of the rewriting commands (``mindgap rewrite``, ``submit``, ``worker``).

Each option is declared here once, documented field by field; the commands' flags are
generated from these models (:mod:`mindgap.options`). How the aligner samples and chooses is
``mindgap.schemas.RewriteOptions`` (it is also part of the HTTP API).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mindgap.datasets import DatasetError, FieldMap, ProblemSelection, with_fields

EngineKind = Literal["transformers", "vllm", "openai"]
OpenAISeeds = Literal["auto", "per-request", "server"]
"""The generation engines: in-process transformers or vLLM, or an OpenAI-compatible server."""


class DataOptions(ProblemSelection):
    """Which problems to read, from where."""

    data: str = Field(description="Problems: a .jsonl/.json/.parquet file, a folder written by "
                      "Hugging Face `save_to_disk`, or a Hugging Face dataset name.")
    skip_invalid: bool = Field(default=False, description="Log and skip rows that are not "
                               "valid problems instead of stopping at the first.")
    field: list[str] = Field(default_factory=list, description="NAME=COLUMN: read the "
                             "problem field NAME (id, question, solution, answer, metadata) "
                             "from COLUMN instead of the preset's; question and solution may "
                             "be templates, e.g. 'question={body} {question}'. Repeatable.")

    @model_validator(mode="after")
    def _valid_fields(self) -> DataOptions:
        self.field_map()
        return self

    def field_map(self) -> FieldMap:
        """The preset's field map with the ``--field`` pairs applied."""
        try:
            return with_fields(self.preset, self.field)
        except DatasetError as exc:
            raise ValueError(f"--field {exc}") from None


class EngineOptions(BaseModel):
    """Which model generates, and through which engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineKind = Field(default="transformers", description="Generation engine: "
                               "transformers (in-process, CPU or GPU), vllm (in-process, "
                               "batched) or openai (an OpenAI-compatible server).")
    model: str | None = Field(default=None, description="Model name or folder (default: "
                              "SmolLM2-135M-Instruct, packaged with mindgap).")
    openai_url: str | None = Field(default=None, description="Base URL of the "
                                   "OpenAI-compatible server (engine openai only).")
    openai_seeds: OpenAISeeds = Field(
        default="auto", description="How the openai engine seeds sampling: per-request seeds "
        "(repeatable), or server (none sent; the server's --seed governs), which a vLLM server "
        "on CPU needs: seeded requests longer than its step budget kill it (\"CPU Generator "
        "does not use offset\"). auto: server when the server looks like vLLM on CPU (see "
        "the README), else per-request.")
    threads: int | None = Field(default=None, ge=1, le=1024, description="CPU threads of "
                                "torch, set before the model loads (default: OMP_NUM_THREADS "
                                "if set, else 1; more threads than free cores slows "
                                "generation down many times).")

    def torch_threads(self) -> int:
        """``threads``, else ``OMP_NUM_THREADS``, else 1."""
        if self.threads is not None:
            return self.threads
        try:
            return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        except ValueError:
            return 1

    @model_validator(mode="after")
    def _url_with_openai(self) -> EngineOptions:
        if self.engine == "openai" and not self.openai_url:
            raise ValueError("--engine openai needs --openai-url")
        if self.engine != "openai" and self.openai_url:
            raise ValueError("--openai-url is for --engine openai only")
        if self.engine != "openai" and self.openai_seeds != "auto":
            raise ValueError("--openai-seeds is for --engine openai only")
        return self


class WorkerOptions(BaseModel):
    """How a queue worker takes tasks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consumer: str | None = Field(default=None, min_length=1, description="Consumer name in "
                                 "the workers' group (default: host-pid).")
    batch_size: int = Field(default=32, ge=1, le=4096, description="Tasks claimed and "
                            "aligned together.")
    high_water: int = Field(default=0, ge=0, description="Pause while the trainers' lag (aligned "
                            "examples not yet trained on) exceeds this (0: never pause).")
    low_water: int = Field(default=0, ge=0, description="After a pause, resume once the lag "
                           "is at most this.")
    visibility_timeout_s: float = Field(default=600.0, gt=0, description="A task claimed but "
                                        "not finished is reclaimed by another worker after "
                                        "this many seconds.")
    engine_seed: int = Field(default=0, ge=0, description="Seed of the vLLM engine (it has no "
                             "per-request seeds on CPU).")
    follow_policy: bool = Field(default=True, description="Online rewriting: between batches, "
                                "load the newest policy version the trainer published "
                                "(`mindgap train --publish-every`), so examples come from "
                                "the current weights; each example records its version.")

    @model_validator(mode="after")
    def _water_marks(self) -> WorkerOptions:
        if self.high_water and self.low_water > self.high_water:
            raise ValueError("--low-water must be at most --high-water")
        return self
