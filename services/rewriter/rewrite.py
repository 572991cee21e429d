"""``mindgap rewrite`` in embedded mode: read problems, align them in batches, append JSONL."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mindgap.datasets import append_jsonl, read_jsonl_ids
from mindgap.jsonl import json_lines
from mindgap.rewriter.aligner import Aligner, RoundDone
from mindgap.schemas import Problem


class OutputExistsError(RuntimeError):
    """The output file exists and neither resume nor overwrite was asked for."""


@dataclass
class RewriteSummary:
    """What one ``rewrite`` run did, and what its output file now holds."""

    problems_in_output: int
    sources_in_output: dict[str, int]
    problems_this_run: int
    skipped_resumed: int
    samples: int
    generated_tokens: int
    engine_calls: int
    verifier_errors: dict[str, int]
    seconds: float
    problems_per_s: float
    generated_tokens_per_s: float
    config: dict[str, Any]


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def _sources_in(out: Path) -> Counter[str]:
    """How many complete lines of ``out`` hold each source."""
    if not out.exists():
        return Counter()
    return Counter(row["source"] for _, row in json_lines(out, complete_only=True))


def rewrite(problems: list[Problem], aligner: Aligner, out: Path, batch_size: int,
            resume: bool = False, overwrite: bool = False, progress: bool = True,
            config: dict[str, Any] | None = None) -> RewriteSummary:
    """Align ``problems`` into ``out`` batch by batch (each batch flushed and fsynced)."""
    if out.exists() and not (resume or overwrite):
        raise OutputExistsError(f"{out} exists: pass --resume to continue it or --overwrite")
    if overwrite and out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_jsonl_ids(out, key="problem_id") if resume else set()
    todo = [p for p in problems if p.id not in done]
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="problem", desc="rewrite", disable=not progress,
               dynamic_ncols=True)
    stage = "-"

    def show() -> None:
        sources = aligner.stats.sources
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(ordered_dict={
            "self": sources["self"], "guided": sources["guided"], "expert": sources["expert"],
            "round": stage, "tok/s": f"{aligner.stats.generated_tokens / elapsed:.0f}"})

    def on_round(done: RoundDone) -> None:  # progress inside a batch, after every round
        nonlocal stage
        kind = "self" if done.kind == "plain" else "guided"
        stage = f"{kind} {done.round}: {done.solved}/{done.prompts} solved"
        show()

    previous, aligner.on_round = aligner.on_round, on_round
    try:
        with bar:
            for first in range(0, len(todo), batch_size):
                batch = todo[first : first + batch_size]
                append_jsonl(out, aligner.align(batch))
                bar.update(len(batch))
                show()
    finally:
        aligner.on_round = previous
    seconds = time.perf_counter() - start
    in_output = _sources_in(out)
    stats = aligner.stats
    summary = RewriteSummary(
        problems_in_output=sum(in_output.values()), sources_in_output=dict(in_output),
        problems_this_run=len(todo), skipped_resumed=len(problems) - len(todo),
        samples=stats.samples, generated_tokens=stats.generated_tokens,
        engine_calls=stats.engine_calls, verifier_errors=dict(stats.verifier_errors),
        seconds=round(seconds, 3), problems_per_s=len(todo) / max(seconds, 1e-9),
        generated_tokens_per_s=stats.generated_tokens / max(seconds, 1e-9),
        config=config or {},
    )
    summary_path(out).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    return summary
