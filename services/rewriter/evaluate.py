"""``mindgap eval``: sample ``n`` responses per benchmark problem, verify each, log verdicts.

The paper's protocol: zero-shot, the rewriter's plain prompt (reason step by step, answer in
``\\boxed{}``) in the model's chat template (the bare prompt when the model has none), ``n``
samples per problem. Each problem's verdicts are appended (fsynced) to the log, a JSON-lines
file, as soon as its batch is verified; the log's first line records the settings (a
resumed part with other settings, allowed with ``force``, or other benchmarks adds a line), so
a rerun with ``resume`` skips the problems already there and refuses other settings.
:mod:`mindgap.rewriter.eval_report` turns the log into results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field
from tqdm import tqdm

from mindgap.datasets import append_jsonl, reference_answer
from mindgap.jsonl import json_lines
from mindgap.rewriter.aligner import Verifier
from mindgap.rewriter.engines.base import Engine, Sample
from mindgap.rewriter.eval_options import BenchmarkOptions, EvalOptions
from mindgap.rewriter.eval_report import summarise, write_results
from mindgap.rewriter.prompts import PromptTemplates
from mindgap.schemas import Problem, VerifyRequest, VerifyResult

RESUME_KEYS = ("model", "engine", "n", "temperature", "top_p", "max_tokens", "seed", "prompt",
               "chat_template")
"""Settings a resumed evaluation must share with the part before it (unless forced)."""


def load_benchmarks(suite: BenchmarkOptions) -> dict[str, list[Problem]]:
    """The problems of every benchmark by name; ``ValueError`` (a ``DatasetError``, a missing
    file, a problem without a reference answer, two benchmarks of one name) names the first."""
    problems: dict[str, list[Problem]] = {}
    for bench in suite.resolve():
        if bench.name in problems:
            raise ValueError(f"two benchmarks are named {bench.name!r}")
        path = Path(bench.source)
        if bench.source != bench.name and not path.exists() and path.suffix:
            raise ValueError(f"benchmark {bench.name}: no file {path} (see --data-dir)")
        items = bench.read(suite.split, suite.limit)
        for problem in items:
            if reference_answer(problem) is None:
                raise ValueError(f"benchmark {bench.name}: problem {problem.id!r} has no "
                                 "reference answer")
        problems[bench.name] = items
    return problems


class SampleVerdict(BaseModel):
    """The verifier's verdict on one sampled response."""

    correct: bool
    reason: str
    """The verifier's reason: equal, not_equal, no_answer, timeout, ..."""
    extracted: str | None
    finish_reason: str
    """``stop``, or ``length`` when cut at ``max_tokens``."""
    tokens: int


class ProblemVerdict(BaseModel):
    """One problem's samples and their verdicts (a line of the log)."""

    id: str
    """``benchmark/problem id``: unique across benchmarks."""
    benchmark: str
    problem_id: str
    reference: str
    samples: list[SampleVerdict]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def correct(self) -> int:
        """How many samples are correct."""
        return sum(s.correct for s in self.samples)


class LogMismatchError(ValueError):
    """The log exists and may not be continued (no resume, or other settings)."""


class _Header(BaseModel):
    config: dict[str, Any]


def read_log(log: Path) -> tuple[list[dict[str, Any]], list[ProblemVerdict]]:
    """The settings of each part of the log, and its verdicts (a partial last line ignored)."""
    parts: list[dict[str, Any]] = []
    verdicts: list[ProblemVerdict] = []
    if not log.exists():
        return parts, verdicts
    for _, row in json_lines(log, complete_only=True):
        if "config" in row:
            parts.append(row["config"])
        else:
            verdicts.append(ProblemVerdict.model_validate(row))
    return parts, verdicts


def check_log(log: Path, config: dict[str, Any], *, resume: bool, overwrite: bool,
              force: bool) -> None:
    """Raise :class:`LogMismatchError` when ``log`` may be neither continued nor replaced
    (settings missing from ``config`` are not compared: the CLI checks before the model
    loads)."""
    if not log.exists() or overwrite:
        return
    if not resume:
        raise LogMismatchError(f"{log} exists: pass --resume to continue it or --overwrite")
    parts, _ = read_log(log)
    if force or not parts:
        return
    last, now = parts[-1], json.loads(json.dumps(config))
    changed = [k for k in RESUME_KEYS if k in now and last.get(k) != now[k]]
    if changed:
        diff = ", ".join(f"{k} {last.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise LogMismatchError(f"--resume: {log} was written with other settings ({diff}); "
                               "pass --force to mix them, or write to a new --out")


def prepare(suite: BenchmarkOptions, options: EvalOptions, out: Path, config: dict[str, Any],
            *, resume: bool, overwrite: bool, force: bool) -> dict[str, list[Problem]]:
    """What can fail before the model loads: ``out``, the log's settings, the benchmarks
    (``ValueError`` naming the first). Adds the sampling and the benchmarks to ``config``."""
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: give a .json file (the log and the table go next to "
                         "it)")
    config.update(options.model_dump(exclude={"batch_size"}))
    check_log(log_path(out), config, resume=resume, overwrite=overwrite, force=force)
    problems = load_benchmarks(suite)
    config["benchmarks"] = {b.name: b.source for b in suite.resolve()}
    return problems


def render_prompt(engine: Engine, question: str, templates: PromptTemplates) -> str:
    """The plain prompt in the model's chat template, else bare (a model without one)."""
    text = templates.plain_prompt(question)
    try:
        return engine.render_chat(text)
    except ValueError:  # transformers: "tokenizer.chat_template is not set"
        return text


def has_chat_template(engine: Engine) -> bool:
    """Whether prompts go through the model's chat template."""
    return render_prompt(engine, "x", PromptTemplates()) != PromptTemplates().plain_prompt("x")


@dataclass
class EvalRun:
    """One evaluation: the engine, the verifier, the sampling and the log."""

    engine: Engine
    verifier: Verifier
    options: EvalOptions
    log: Path
    templates: PromptTemplates
    progress: bool = True
    sampled: int = 0
    """Problems sampled by this run (not found in the log)."""
    generated_tokens: int = 0
    seconds: float = 0.0

    def run(self, problems: dict[str, list[Problem]],
            config: dict[str, Any]) -> list[ProblemVerdict]:
        """Verdicts of every problem, sampling those not yet in the log (appended each)."""
        parts, done = read_log(self.log)
        known = {v.id for v in done}
        todo = [(name, p) for name, items in problems.items() for p in items
                if f"{name}/{p.id}" not in known]
        if not parts or parts[-1] != json.loads(json.dumps(config)):
            append_jsonl(self.log, [_Header(config=config)])
        start = time.perf_counter()
        with tqdm(total=len(todo), unit="problem", desc="eval", disable=not self.progress,
                  dynamic_ncols=True) as bar:
            fresh: list[ProblemVerdict] = []
            for index, batch in enumerate(_batches(todo, self.options.batch_size)):
                for verdict in self._batch(batch, self.options.seed + 7919 * index):
                    append_jsonl(self.log, [verdict])
                    fresh.append(verdict)
                    bar.update(1)
                bar.set_postfix(ordered_dict=self._postfix(fresh, start))
        self.seconds = time.perf_counter() - start
        self.sampled = len(fresh)
        latest = {v.id: v for v in [*done, *fresh]}
        return [latest[f"{name}/{p.id}"] for name, items in problems.items() for p in items]

    def _postfix(self, fresh: list[ProblemVerdict], start: float) -> dict[str, str]:
        samples = sum(len(v.samples) for v in fresh)
        accuracy = sum(v.correct for v in fresh) / max(samples, 1)
        elapsed = max(time.perf_counter() - start, 1e-9)
        return {"acc": f"{accuracy:.3f}", "tok/s": f"{self.generated_tokens / elapsed:.0f}"}

    def _batch(self, batch: list[tuple[str, Problem]], seed: int) -> list[ProblemVerdict]:
        """Sample and verify one batch of (benchmark, problem)."""
        opts = self.options
        prompts = [render_prompt(self.engine, p.question, self.templates) for _, p in batch]
        outputs = self.engine.generate(prompts, n=opts.n, temperature=opts.temperature,
                                       top_p=opts.top_p, max_tokens=opts.max_tokens, seed=seed)
        references = [reference_answer(p) or "" for _, p in batch]
        items = [VerifyRequest(response=s.text, reference=ref)
                 for ref, samples in zip(references, outputs, strict=True) for s in samples]
        results = iter(self.verifier.verify_batch(items))
        verdicts = []
        for (name, problem), ref, samples in zip(batch, references, outputs, strict=True):
            self.generated_tokens += sum(len(s.token_ids) for s in samples)
            verdicts.append(ProblemVerdict(
                id=f"{name}/{problem.id}", benchmark=name, problem_id=problem.id, reference=ref,
                samples=[_verdict(s, next(results)) for s in samples]))
        return verdicts


def _verdict(sample: Sample, result: VerifyResult) -> SampleVerdict:
    return SampleVerdict(correct=result.correct, reason=result.reason.value,
                         extracted=result.extracted, finish_reason=sample.finish_reason,
                         tokens=len(sample.token_ids))


def _batches(items: list[tuple[str, Problem]], size: int) -> Iterator[list[tuple[str, Problem]]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def log_path(out: Path) -> Path:
    """The verdict log of the results file ``out`` (``x.json`` -> ``x.jsonl``)."""
    return out.with_suffix(".jsonl")


def sampling_config(options: EvalOptions, templates: PromptTemplates) -> dict[str, Any]:
    """The settings of sampling that results depend on (all but the batch size)."""
    return {**options.model_dump(exclude={"batch_size"}), "prompt": templates.plain}


def evaluate(problems: dict[str, list[Problem]], engine: Engine, verifier: Verifier,
             options: EvalOptions, out: Path, *, config: dict[str, Any],
             templates: PromptTemplates | None = None, resume: bool = False,
             overwrite: bool = False, force: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate ``engine`` on ``problems`` (by benchmark): log verdicts next to ``out``, then
    write the results (JSON to ``out``, the table to ``out.md``) and return them.

    ``config`` holds the run's other settings (model, engine, benchmarks' sources).
    """
    templates = templates or PromptTemplates()
    config = {**config, **sampling_config(options, templates),
              "chat_template": has_chat_template(engine), "model_name": engine.model_name}
    log = log_path(out)
    check_log(log, config, resume=resume, overwrite=overwrite, force=force)
    if overwrite:
        log.unlink(missing_ok=True)
    runner = EvalRun(engine, verifier, options, log, templates, progress)
    verdicts = runner.run(problems, config)
    parts, _ = read_log(log)
    run = {"log": str(log), "parts": parts, "this_run": {
        "problems": runner.sampled, "seconds": round(runner.seconds, 3),
        "generated_tokens": runner.generated_tokens,
        "generated_tokens_per_s": runner.generated_tokens / max(runner.seconds, 1e-9)}}
    results = summarise(verdicts, config, run)
    write_results(out, results)
    return results
