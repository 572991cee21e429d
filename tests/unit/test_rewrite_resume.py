"""The embedded rewrite through the library: examples written once decided, signals, resume."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from mindgap.rewriter.aligner import Aligner
from mindgap.rewriter.engines.scripted import ScriptedEngine
from mindgap.rewriter.options import EngineOptions
from mindgap.rewriter.rewrite import (
    OutputExistsError,
    ResumeMismatchError,
    check_references,
    check_resume,
    rewrite,
    summary_path,
)
from mindgap.schemas import AlignedExample, Problem, RewriteOptions
from mindgap.verifier.pool import LocalVerifier

SOLUTION = "6 * 7 = 42 eggs.\n#### 42"
OPTIONS = RewriteOptions(k_self=1, k_guided=1, round_size=1)
CONFIG = {"engine": "scripted", "model": "scripted", **OPTIONS.model_dump()}


@pytest.fixture(scope="module")
def verifier() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=2) as pool:
        yield pool


def problems(count: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"How many eggs? (variant {i})", solution=SOLUTION)
            for i in range(count)]


def lines(out: Path) -> list[AlignedExample]:
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [AlignedExample.model_validate_json(line) for line in text.splitlines()]


def solves_even(prompt: str, index: int) -> str:
    """Even variants solve themselves; odd ones never do (they fall back to the expert)."""
    variant = int(prompt.split("variant ")[1].split(")")[0])
    return "\\boxed{42}" if variant % 2 == 0 else "\\boxed{7}"


def signalling(signum: int) -> ScriptedEngine:
    """An engine that sends ``signum`` to this process in its first guided round."""

    def script(prompt: str, index: int) -> str:
        if "<reference>" in prompt:
            os.kill(os.getpid(), signum)
        return solves_even(prompt, index)

    return ScriptedEngine(script)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_batch_keeps_decided_and_resume_completes(
        tmp_path: Path, verifier: LocalVerifier, signum: int) -> None:
    out = tmp_path / "aligned.jsonl"
    before = signal.getsignal(signum)
    aligner = Aligner(signalling(signum), verifier, OPTIONS)
    summary = rewrite(problems(6), aligner, out, batch_size=6, progress=False, config=CONFIG)
    assert signal.getsignal(signum) is before  # the handlers are put back
    assert summary.interrupted == signal.Signals(signum).name
    # Self solutions were decided in the plain round, before the signal: all on disk.
    assert [e.problem_id for e in lines(out)] == ["p0", "p2", "p4"]
    assert summary.problems_this_run == 3 and summary.problems_in_output == 3
    assert summary.parts[-1]["status"] == signal.Signals(signum).name

    again = Aligner(ScriptedEngine(solves_even), verifier, OPTIONS)
    resumed = rewrite(problems(6), again, out, batch_size=2, resume=True, progress=False,
                      config=CONFIG)
    ids = [e.problem_id for e in lines(out)]
    assert sorted(ids) == [f"p{i}" for i in range(6)] and len(ids) == len(set(ids))
    assert resumed.interrupted is None and resumed.skipped_resumed == 3
    assert [p["status"] for p in resumed.parts] == [signal.Signals(signum).name, "done"]
    assert [p["problems"] for p in resumed.parts] == [3, 3]
    saved = json.loads(summary_path(out).read_text())
    assert saved["sources_in_output"] == {"self": 3, "expert": 3}
    assert saved["output"] == str(out)


def test_examples_are_on_disk_as_soon_as_decided(tmp_path: Path,
                                                 verifier: LocalVerifier) -> None:
    out = tmp_path / "aligned.jsonl"
    seen: list[int] = []

    def script(prompt: str, index: int) -> str:
        if "<reference>" in prompt:  # the guided round: the self ones are written already
            seen.append(len(out.read_text().splitlines()))
        return solves_even(prompt, index)

    aligner = Aligner(ScriptedEngine(script), verifier, OPTIONS)
    rewrite(problems(4), aligner, out, batch_size=4, progress=False, config=CONFIG)
    assert seen and set(seen) == {2}
    assert len(lines(out)) == 4


def test_resume_refuses_other_settings_unless_forced(tmp_path: Path,
                                                     verifier: LocalVerifier) -> None:
    out = tmp_path / "aligned.jsonl"
    aligner = Aligner(ScriptedEngine(solves_even), verifier, OPTIONS)
    rewrite(problems(2), aligner, out, batch_size=2, progress=False, config=CONFIG)
    check_resume(out, CONFIG)  # the same settings: fine
    hotter = {**CONFIG, "temperature": 0.2}
    with pytest.raises(ResumeMismatchError, match=r"temperature 1\.0 -> 0\.2"):
        check_resume(out, hotter)
    with pytest.raises(ResumeMismatchError, match="model"):
        check_resume(out, {**CONFIG, "model": "other"})
    with pytest.raises(ResumeMismatchError):
        rewrite(problems(4), aligner, out, batch_size=2, resume=True, progress=False,
                config=hotter)
    forced = rewrite(problems(4), aligner, out, batch_size=2, resume=True, progress=False,
                     config=hotter, force=True)
    assert [p["temperature"] for p in forced.parts] == [1.0, 0.2]
    assert forced.problems_in_output == 4


def test_resume_reads_an_older_summary(tmp_path: Path) -> None:
    out = tmp_path / "aligned.jsonl"
    out.write_text("")
    summary_path(out).write_text(json.dumps({"config": {**CONFIG, "k_self": 8}}))
    with pytest.raises(ResumeMismatchError, match="k_self"):
        check_resume(out, CONFIG)


def test_a_problem_without_reference_is_named() -> None:
    with pytest.raises(ValueError, match="'bad'"):
        check_references([*problems(1), Problem(id="bad", question="q", solution="no answer")])


def test_threads_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert EngineOptions().torch_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert EngineOptions().torch_threads() == 3
    assert EngineOptions(threads=2).torch_threads() == 2


def test_samples_out_is_the_audit_trail(verifier: LocalVerifier, tmp_path: Path) -> None:
    def script(prompt: str, index: int) -> str:
        variant = int(prompt.split("variant ")[1].split(")")[0])
        if "<reference>" in prompt:
            return "6 * 7 = 41, so \\boxed{42}"  # verifies; its working does not
        return "\\boxed{42}" if variant == 0 else "The answer is 42. " * 40  # p1: cut loop

    out, samples = tmp_path / "aligned.jsonl", tmp_path / "samples.jsonl"
    options = RewriteOptions(k_self=1, k_guided=1, max_tokens=200)
    summary = rewrite(problems(2), Aligner(ScriptedEngine(script), verifier, options), out,
                      batch_size=8, progress=False, samples_out=samples)
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    assert [(r["problem_id"], r["prompt_kind"], r["verdict"], r["reason"]) for r in rows] == [
        ("p0", "plain", "kept", "equal"), ("p1", "plain", "rejected", "cut"),
        ("p1", "guided", "rejected", "wrong_calculation")]
    assert rows[1]["finish_reason"] == "length" and rows[1]["tokens"] == 200
    assert summary.rejections == {"plain": {"cut": 1}, "guided": {"wrong_calculation": 1}}
    saved = json.loads(summary_path(out).read_text(encoding="utf-8"))
    assert saved["rejections"] == summary.rejections and saved["samples_out"] == str(samples)
    assert [e.source for e in lines(out)] == ["self", "expert"]
    with pytest.raises(OutputExistsError, match=r"samples\.jsonl exists"):
        rewrite(problems(2), Aligner(ScriptedEngine(script), verifier, options),
                tmp_path / "other.jsonl", batch_size=8, progress=False, samples_out=samples)
