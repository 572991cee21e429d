"""``mindgap rewrite`` in embedded mode: read problems, align them in batches, append JSONL.

Each problem's example is appended (flushed and fsynced) as soon as the aligner decides it.
SIGINT and SIGTERM end the run cleanly: what is decided is on disk, the summary is written,
and ``--resume`` continues. The summary keeps the settings of each part of a resumed run, and
a resume with other settings is refused unless forced.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from tqdm import tqdm

from mindgap.datasets import append_jsonl, read_jsonl_ids, reference_answer
from mindgap.jsonl import json_lines
from mindgap.rewriter.aligner import Aligner, RoundDone
from mindgap.schemas import AlignedExample, Problem, RewriteOptions, SampleRecord

RESUME_KEYS = ("engine", "model", *RewriteOptions.model_fields)
"""Settings a resumed run must share with the part before it (unless forced)."""


class OutputExistsError(RuntimeError):
    """The output file exists and neither resume nor overwrite was asked for."""


class ResumeMismatchError(RuntimeError):
    """``--resume`` with settings other than those the output was written with."""


class Interrupted(BaseException):  # like KeyboardInterrupt: no handler swallows it
    """SIGINT or SIGTERM arrived during the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RewriteSummary:
    """What one ``rewrite`` run did, and what its output file now holds."""

    output: str
    problems_in_output: int
    sources_in_output: dict[str, int]
    problems_this_run: int
    """Examples written by this run (fewer than asked when it was interrupted)."""
    skipped_resumed: int
    samples: int
    generated_tokens: int
    engine_calls: int
    verifier_errors: dict[str, int]
    rejections: dict[str, dict[str, int]]
    """Samples of this run not kept, per prompt kind (plain, guided), by the verifier's
    reason (``not_equal``, ``no_answer``, ...) or the quality gate that failed."""
    samples_out: str | None
    """Where every sample and its verdict went (``--samples-out``), if anywhere."""
    seconds: float
    problems_per_s: float
    generated_tokens_per_s: float
    interrupted: str | None
    """The signal that ended the run early (SIGINT, SIGTERM), else None."""
    config: dict[str, Any]
    """This part's settings."""
    parts: list[dict[str, Any]]
    """Every part of the output's run, first to last: settings, problems written, status."""


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def check_output(out: Path, resume: bool, overwrite: bool,
                 samples_out: Path | None = None) -> None:
    """Raise :class:`OutputExistsError` when ``out`` (or ``samples_out``) exists and may be
    neither kept nor replaced."""
    for path in (out, samples_out):
        if path is not None and path.exists() and not (resume or overwrite):
            raise OutputExistsError(f"{path} exists: pass --resume to continue it or "
                                    "--overwrite")


def check_references(problems: list[Problem]) -> None:
    """Raise ``ValueError`` naming the first problem whose solution gives no answer."""
    for problem in problems:
        if reference_answer(problem) is None:
            raise ValueError(f"problem {problem.id!r}: no reference answer in its solution")


def previous_parts(out: Path) -> list[dict[str, Any]]:
    """The parts recorded in ``out``'s summary (an older summary's ``config`` is one part)."""
    path = summary_path(out)
    if not path.exists():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    return list(old.get("parts") or ([old["config"]] if old.get("config") else []))


def check_resume(out: Path, config: dict[str, Any], force: bool = False) -> None:
    """Raise :class:`ResumeMismatchError` if ``out`` was last written with other settings."""
    parts = previous_parts(out) if out.exists() else []
    if force or not parts:
        return
    last, now = parts[-1], json.loads(json.dumps(config))
    changed = [k for k in RESUME_KEYS if k in last and last[k] != now.get(k)]
    if changed:
        diff = ", ".join(f"{k} {last[k]!r} -> {now.get(k)!r}" for k in changed)
        raise ResumeMismatchError(f"--resume: {out} was written with other settings ({diff}); "
                                  "pass --force to mix them, or write to a new --out")


class _Writer:
    """Appends each decided example at once; SIGINT/SIGTERM stop the run, never mid-write."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written = 0
        self.signum: int | None = None
        self._writing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Writer:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        if not self._writing:
            raise Interrupted(signum)

    def write(self, example: AlignedExample) -> None:
        self._writing = True
        try:
            append_jsonl(self.out, [example])
        finally:
            self._writing = False
        self.written += 1
        if self.signum is not None:
            raise Interrupted(self.signum)


class _Progress:
    """A progress bar with the sources so far, the round in hand and tokens per second."""

    def __init__(self, aligner: Aligner, total: int, enabled: bool) -> None:
        self.aligner = aligner
        self.start = time.perf_counter()
        self.stage = "-"
        self.bar = tqdm(total=total, unit="problem", desc="rewrite", disable=not enabled,
                        dynamic_ncols=True)

    def show(self) -> None:
        sources = self.aligner.stats.sources
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(ordered_dict={
            "self": sources["self"], "guided": sources["guided"], "expert": sources["expert"],
            "round": self.stage, "tok/s": f"{self.aligner.stats.generated_tokens / elapsed:.0f}"})

    def on_round(self, done: RoundDone) -> None:  # progress inside a batch, after every round
        kind = "self" if done.kind == "plain" else "guided"
        self.stage = f"{kind} {done.round}: {done.solved}/{done.prompts} solved"
        self.show()

    def on_decided(self) -> None:
        self.show()
        self.bar.update(1)


def _summary(out: Path, aligner: Aligner, writer: _Writer, skipped: int, seconds: float,
             config: dict[str, Any], parts: list[dict[str, Any]],
             samples_out: Path | None) -> RewriteSummary:
    """The run's summary, also written to ``<out>.summary.json``."""
    in_output = (Counter(row["source"] for _, row in json_lines(out, complete_only=True))
                 if out.exists() else Counter())
    stats = aligner.stats
    summary = RewriteSummary(
        output=str(out), problems_in_output=sum(in_output.values()),
        sources_in_output=dict(in_output), problems_this_run=writer.written,
        skipped_resumed=skipped, samples=stats.samples, generated_tokens=stats.generated_tokens,
        engine_calls=stats.engine_calls, verifier_errors=dict(stats.verifier_errors),
        rejections={kind: dict(counts.most_common()) for kind, counts in stats.rejections.items()},
        samples_out=str(samples_out) if samples_out else None,
        seconds=round(seconds, 3), problems_per_s=writer.written / max(seconds, 1e-9),
        generated_tokens_per_s=stats.generated_tokens / max(seconds, 1e-9),
        interrupted=signal.Signals(writer.signum).name if writer.signum else None,
        config=config, parts=parts)
    summary_path(out).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    return summary


def rewrite(problems: list[Problem], aligner: Aligner, out: Path, batch_size: int,
            resume: bool = False, overwrite: bool = False, progress: bool = True,
            config: dict[str, Any] | None = None, force: bool = False,
            samples_out: Path | None = None) -> RewriteSummary:
    """Align ``problems`` into ``out`` batch by batch, writing each example once decided
    (and every sample with its verdict to ``samples_out``, after each round).

    A SIGINT or SIGTERM ends the run early; the summary's ``interrupted`` names it.
    """
    config = config or {}
    check_output(out, resume, overwrite, samples_out)
    if resume:
        check_resume(out, config, force)
    for path in (out, samples_out):
        if overwrite and path is not None and path.exists():
            path.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_jsonl_ids(out, key="problem_id") if resume else set()
    todo = [p for p in problems if p.id not in done]
    parts = [*(previous_parts(out) if resume else []), {**config, "problems": 0,
                                                          "status": "running"}]
    writer, bar = _Writer(out), _Progress(aligner, len(todo), progress)
    _summary(out, aligner, writer, len(problems) - len(todo), 0.0, config, parts, samples_out)

    def on_decided(example: AlignedExample) -> None:
        writer.write(example)
        bar.on_decided()

    def on_samples(records: list[SampleRecord]) -> None:
        if samples_out is not None:
            append_jsonl(samples_out, records)

    saved = aligner.on_round, aligner.on_decided, aligner.on_samples
    aligner.on_round, aligner.on_decided, aligner.on_samples = (bar.on_round, on_decided,
                                                                on_samples)
    try:
        with bar.bar, writer:
            for first in range(0, len(todo), batch_size):
                aligner.align(todo[first : first + batch_size])
    except Interrupted:
        pass
    finally:
        aligner.on_round, aligner.on_decided, aligner.on_samples = saved
    status = signal.Signals(writer.signum).name if writer.signum else "done"
    parts[-1].update(problems=writer.written, status=status)
    return _summary(out, aligner, writer, len(problems) - len(todo),
                    time.perf_counter() - bar.start, config, parts, samples_out)
