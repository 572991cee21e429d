"""The aligner (DESIGN.md): keep a self solution, else a guided one, else the expert's.

Problems are processed together: every sampling round is one engine call for all the
problems still unsolved, and every verification pass one verifier batch.
"""

from __future__ import annotations

import random
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mindgap.datasets import reference_answer
from mindgap.rewriter.engines.base import Engine, Sample
from mindgap.rewriter.gates import rejection
from mindgap.rewriter.prompts import PromptTemplates
from mindgap.schemas import (
    AlignedExample,
    AttemptCounts,
    Behavior,
    Problem,
    PromptKind,
    RewriteOptions,
    SampleRecord,
    SamplingParams,
    Source,
    Timings,
    VerifyRequest,
    VerifyResult,
)


class Verifier(Protocol):
    """What the aligner needs of a verifier (``LocalVerifier`` and ``VerifierClient`` fit)."""

    def verify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]: ...


@dataclass
class _Candidate:
    sample: Sample
    kind: PromptKind
    record: SampleRecord


@dataclass
class _State:
    """What the aligner knows of one problem while it works on it."""

    problem: Problem
    reference: str
    attempts: AttemptCounts = field(default_factory=AttemptCounts)
    timings: Timings = field(default_factory=Timings)
    correct: list[_Candidate] = field(default_factory=list)
    source: Source | None = None
    example: AlignedExample | None = None
    """Set once the problem's outcome is final (see :meth:`Aligner._decide`)."""


@dataclass
class AlignStats:
    """Running totals over everything aligned so far."""

    sources: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    generated_tokens: int = 0
    engine_calls: int = 0
    verifier_errors: Counter[str] = field(default_factory=Counter)
    rejections: dict[PromptKind, Counter[str]] = field(
        default_factory=lambda: {"plain": Counter(), "guided": Counter()})
    """Samples not kept, per prompt kind, by the verifier's reason or the failed gate."""


@dataclass(frozen=True)
class RoundDone:
    """Reported after every sampling round (for progress displays)."""

    kind: PromptKind
    round: int
    """1-based, within this kind's rounds of the current ``align`` call."""
    prompts: int
    solved: int
    """Problems of the round that now have a correct response."""
    unsolved: int
    """Problems of the round still without one."""


class Aligner:
    """Turns problems into aligned examples with one engine and one verifier."""

    def __init__(self, engine: Engine, verifier: Verifier, config: RewriteOptions | None = None,
                 templates: PromptTemplates | None = None,
                 on_round: Callable[[RoundDone], None] | None = None,
                 on_decided: Callable[[AlignedExample], None] | None = None,
                 on_samples: Callable[[list[SampleRecord]], None] | None = None) -> None:
        self.engine = engine
        self.verifier = verifier
        self.config = config or RewriteOptions()
        self.templates = templates or PromptTemplates()
        self.on_round = on_round
        self.on_decided = on_decided
        """Called with each problem's example as soon as it is final, mid-``align``."""
        self.on_samples = on_samples
        """Called after every round with its samples and their verdicts (the audit trail)."""
        self.stats = AlignStats()
        self._eos = [engine.eos_token_id] if engine.eos_token_id is not None else []

    def _rounds(self, states: list[_State], kind: PromptKind, budget: int) -> None:
        """Sample in rounds for ``states`` until each has a correct response or ``budget``."""
        pending = list(states)
        used = 0
        round_index = 0
        while pending and used < budget:
            n = min(self.config.round_size, budget - used)
            prompts = [self._prompt(s, kind) for s in pending]
            start = time.perf_counter()
            outputs = self.engine.generate(
                prompts, n=n, temperature=self.config.temperature, top_p=self.config.top_p,
                max_tokens=self.config.max_tokens,
                seed=self.config.seed + 7919 * round_index + (104729 if kind == "guided" else 0))
            generate_s = (time.perf_counter() - start) / len(pending)
            self.stats.engine_calls += 1
            items = [VerifyRequest(response=sample.text, reference=state.reference)
                     for state, samples in zip(pending, outputs, strict=True) for sample in samples]
            start = time.perf_counter()
            verdicts = iter(self.verifier.verify_batch(items))
            verify_s = (time.perf_counter() - start) / len(pending)
            records: list[SampleRecord] = []
            for state, samples in zip(pending, outputs, strict=True):
                state.timings.generate_s += generate_s
                state.timings.verify_s += verify_s
                records += self._record(state, kind, round_index + 1, samples,
                                        [next(verdicts) for _ in samples])
            used += n
            round_index += 1
            solved = [s for s in pending if s.correct]  # rounds stop at the first correct one
            for state in solved:
                state.example = self._example(state)
            if self.on_samples is not None:
                self.on_samples(records)
            for state in solved:
                self._report(state)
            if self.on_round is not None:
                self.on_round(RoundDone(kind, round_index, len(pending), len(solved),
                                        len(pending) - len(solved)))
            pending = [s for s in pending if not s.correct]

    def _prompt(self, state: _State, kind: PromptKind) -> str:
        problem = state.problem
        if kind == "plain":
            return self.engine.render_chat(self.templates.plain_prompt(problem.question))
        return self.engine.render_chat(self.templates.guided_prompt(
            problem.question, problem.solution, hide_answer=self.config.hide_answer))

    def _record(self, state: _State, kind: PromptKind, round_number: int,
                samples: list[Sample], verdicts: list[VerifyResult]) -> list[SampleRecord]:
        """Count ``samples``, judge each (verifier, then gates) and keep the good ones."""
        attempts = state.attempts
        self.stats.samples += len(samples)
        self.stats.generated_tokens += sum(len(s.token_ids) for s in samples)
        if kind == "plain":
            attempts.self_samples += len(samples)
            attempts.self_rounds += 1
        else:
            attempts.guided_samples += len(samples)
            attempts.guided_rounds += 1
        records = []
        for sample, verdict in zip(samples, verdicts, strict=True):
            record = self._judge(state, kind, sample, verdict, round_number)
            if record.verdict != "correct":
                self.stats.rejections[kind][record.reason] += 1
            else:
                state.correct.append(_Candidate(sample, kind, record))
            records.append(record)
        return records

    def _judge(self, state: _State, kind: PromptKind, sample: Sample, verdict: VerifyResult,
               round_number: int) -> SampleRecord:
        """The record of one sample: incorrect, rejected by a gate, or correct."""
        record = SampleRecord(
            problem_id=state.problem.id, prompt_kind=kind, round=round_number,
            text=sample.text, tokens=len(sample.token_ids), finish_reason=sample.finish_reason,
            verdict="incorrect", reason=verdict.reason.value, extracted=verdict.extracted,
            detail=verdict.detail)
        if verdict.reason.value in ("timeout", "error"):
            self.stats.verifier_errors[verdict.reason.value] += 1
        if not verdict.correct:
            return record
        if kind == "guided":
            state.attempts.guided_correct += 1
        else:
            state.attempts.self_correct += 1
        failed = rejection(sample.text, sample.finish_reason, kind, verdict.extracted,
                           state.problem.solution, self.config)
        if failed is None:
            return record.model_copy(update={"verdict": "correct"})
        state.attempts.rejected.add(failed.gate)
        return record.model_copy(update={"verdict": "rejected", "reason": failed.gate,
                                         "detail": failed.detail})

    def _choose(self, state: _State) -> _Candidate:
        if self.config.choose == "likeliest":
            return max(state.correct, key=lambda c: sum(c.sample.logprobs)
                       / max(1, len(c.sample.logprobs)))
        key = zlib.crc32(f"{self.config.seed}:{state.problem.id}".encode())
        return random.Random(key).choice(state.correct)

    def _example(self, state: _State) -> AlignedExample:
        problem = state.problem
        prompt = self.engine.render_chat(self.templates.plain_prompt(problem.question))
        base = {"id": f"{problem.id}:v{self.engine.policy_version}", "problem_id": problem.id,
                "prompt": prompt, "reference_answer": state.reference,
                "expert_solution": problem.solution,
                "attempts": state.attempts, "timings": state.timings}
        if not state.correct:
            ids = self.engine.tokenize(problem.solution) + self._eos
            return AlignedExample(**base, response=problem.solution, response_token_ids=ids,
                                  source="expert", behavior=None)
        chosen = self._choose(state)
        chosen.record.verdict = "kept"
        behavior = Behavior(
            logprobs=chosen.sample.logprobs, prompt_kind=chosen.kind,
            model=self.engine.model_name, policy_version=self.engine.policy_version,
            sampling=SamplingParams.of(self.config),
            answer_shown=(not self.config.hide_answer) if chosen.kind == "guided" else None)
        return AlignedExample(**base, response=chosen.sample.text,
                              response_token_ids=chosen.sample.token_ids,
                              source="self" if chosen.kind == "plain" else "guided",
                              behavior=behavior)

    def _report(self, state: _State) -> None:
        """Count ``state``'s final example and hand it to ``on_decided``."""
        assert state.example is not None
        self.stats.sources[state.example.source] += 1
        if self.on_decided is not None:
            self.on_decided(state.example)

    def align(self, problems: Sequence[Problem]) -> list[AlignedExample]:
        """Aligned examples for ``problems``, in input order.

        Self solutions are final at their round, guided ones at theirs and expert ones at the
        end; ``on_decided`` hears of each then.
        """
        states = []
        for problem in problems:
            reference = reference_answer(problem)
            if reference is None:
                raise ValueError(f"problem {problem.id!r}: no reference answer in its solution")
            states.append(_State(problem, reference))
        self._rounds(states, "plain", self.config.k_self)
        self._rounds([s for s in states if not s.correct], "guided", self.config.k_guided)
        for state in states:
            if state.example is None:  # nothing correct: the expert solution
                state.example = self._example(state)
                self._report(state)
        return [s.example for s in states if s.example is not None]
