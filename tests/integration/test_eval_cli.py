"""``mindgap eval``: avg@n, pass@k, the shares and resume against a scripted engine with known
answers and the real sandboxed verifier; ``--compare``; the command's argument errors.

The scripted engine cannot be chosen from the command line, so the evaluation itself is tested
through the library function the command calls (:func:`mindgap.rewriter.evaluate.evaluate`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mindgap.cli import app
from mindgap.datasets import reference_answer
from mindgap.rewriter.engines.scripted import Script, ScriptedEngine
from mindgap.rewriter.eval_options import BenchmarkOptions, EvalOptions
from mindgap.rewriter.evaluate import (
    LogMismatchError,
    evaluate,
    load_benchmarks,
    log_path,
    read_log,
)
from mindgap.schemas import Problem
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import data_file

N = 4
MAX_TOKENS = 200
# What each sample of each problem says: ok (the answer boxed), wrong (another number boxed),
# none (no answer stated), cut (a wrong answer, then past max_tokens: finish reason length).
SCRIPTS = {
    "a0": ["wrong", "none", "cut", "wrong"],   # 0 of 4 correct
    "a1": ["ok", "wrong", "none", "wrong"],    # 1
    "a2": ["ok", "cut", "ok", "wrong"],        # 2
    "a3": ["ok", "ok", "ok", "ok"],            # 4
    "b0": ["ok", "ok", "ok", "ok"],            # 4
    "b1": ["none", "none", "none", "none"],    # 0
}


def problem(pid: str) -> Problem:
    answer = str(10 + int(pid[1]))
    return Problem(id=pid, question=f"TAG={pid} What is {answer} - 0?",
                   solution=f"{answer} - 0 = {answer}. #### {answer}", answer=answer)


def make_script(table: dict[str, list[str]]) -> Script:
    """A script answering each sample of each problem as ``table`` says."""

    def script(prompt: str, index: int) -> str:
        pid = re.search(r"TAG=(\w+)", prompt).group(1)  # type: ignore[union-attr]
        answer = 10 + int(pid[1])
        kind = table[pid][index % 1000]
        return {"ok": f"So {answer} - 0 = {answer}. The answer is \\boxed{{{answer}}}.",
                "wrong": f"I get \\boxed{{{answer + 1}}}.",
                "none": "I am not sure how to go on here.",
                "cut": f"The answer is \\boxed{{{answer + 2}}}. " + "and so on " * 40}[kind]

    return script


script = make_script(SCRIPTS)


def problems(*ids: str) -> dict[str, list[Problem]]:
    found: dict[str, list[Problem]] = {}
    for pid in ids:
        found.setdefault("bench_" + pid[0], []).append(problem(pid))
    return found


@pytest.fixture(scope="module")
def verifier() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=2, timeout_s=10.0) as pool:
        yield pool


OPTIONS = EvalOptions(n=N, max_tokens=MAX_TOKENS, batch_size=3)
CONFIG = {"model": "scripted", "engine": "scripted"}


def run(out: Path, verifier: LocalVerifier, ids: tuple[str, ...] = tuple(SCRIPTS),
        engine: ScriptedEngine | None = None, **kwargs: object) -> dict:
    return evaluate(problems(*ids), engine or ScriptedEngine(script), verifier,
                    kwargs.pop("options", OPTIONS), out, config=CONFIG,  # type: ignore[arg-type]
                    progress=False, **kwargs)  # type: ignore[arg-type]


def test_metrics_match_the_scripted_answers(tmp_path: Path, verifier: LocalVerifier) -> None:
    results = run(tmp_path / "r.json", verifier)
    a, b, average = results["benchmarks"]["bench_a"], results["benchmarks"]["bench_b"], \
        results["average"]
    assert (a["problems"], a["n"], a["samples"]) == (4, 4, 16)
    assert a["avg_at_n"] == pytest.approx((0 + 1 / 4 + 2 / 4 + 1) / 4)
    assert a["pass_at_k"] == pytest.approx({"1": 0.4375, "2": (0 + 0.5 + 5 / 6 + 1) / 4,
                                            "4": 0.75})
    assert a["no_answer"] == pytest.approx(2 / 16)
    assert a["cut"] == pytest.approx(2 / 16)
    assert b["avg_at_n"] == pytest.approx(0.5)
    assert b["pass_at_k"] == pytest.approx({"1": 0.5, "2": 0.5, "4": 0.5})
    assert b["no_answer"] == pytest.approx(0.5)
    assert average["avg_at_n"] == pytest.approx((0.4375 + 0.5) / 2)  # unweighted, as the paper
    assert average["no_answer"] == pytest.approx((2 / 16 + 0.5) / 2)
    verdicts = {p["problem_id"]: p for p in results["problems"]["bench_a"]}
    assert [s["correct"] for s in verdicts["a2"]["samples"]] == [True, False, True, False]
    assert verdicts["a2"]["samples"][1]["finish_reason"] == "length"
    assert verdicts["a1"]["samples"][2]["reason"] == "no_answer"
    assert verdicts["a0"]["samples"][0]["extracted"] == "11"
    assert results["config"]["chat_template"] is True  # the scripted engine has one
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["benchmarks"] == results["benchmarks"]
    table = (tmp_path / "r.md").read_text()
    assert "| bench_a | 4 | 43.8 | 43.8 | 58.3 | 75.0 | 12.5 | 12.5 |" in table
    assert "| **average** | 6 |" in table


def test_prompt_is_the_boxed_instruction_in_the_chat_template(tmp_path: Path,
                                                              verifier: LocalVerifier) -> None:
    seen: list[str] = []

    def spy(prompt: str, index: int) -> str:
        seen.append(prompt)
        return script(prompt, index)

    run(tmp_path / "r.json", verifier, ("a3",), engine=ScriptedEngine(spy))
    assert seen[0].startswith("<user>TAG=a3 What is 13 - 0?\n\nReason step by step")
    assert seen[0].endswith("\\boxed{}.</user><assistant>")


def test_resume_samples_only_what_is_missing(tmp_path: Path, verifier: LocalVerifier) -> None:
    out = tmp_path / "r.json"
    first = ScriptedEngine(script)
    run(out, verifier, ("a0", "a1"), engine=first)
    assert first.calls == [(2, N)]
    with open(log_path(out), "a", encoding="utf-8") as log:
        log.write('{"id": "bench_a/a2", "partial')  # a killed run's last line
    again = ScriptedEngine(script)
    resumed = run(out, verifier, engine=again, resume=True)
    assert again.calls == [(3, N), (1, N)]  # the 4 problems left, in batches of 3
    assert resumed["run"]["this_run"]["problems"] == 4
    assert resumed["run"]["this_run"]["generated_tokens"] > 0
    whole = run(tmp_path / "whole.json", verifier)
    assert resumed["benchmarks"] == whole["benchmarks"]
    parts, verdicts = read_log(log_path(out))
    assert len(verdicts) == len(SCRIPTS) and len(parts) == 1


def test_log_is_kept_unless_asked(tmp_path: Path, verifier: LocalVerifier) -> None:
    out = tmp_path / "r.json"
    run(out, verifier, ("a3",))
    with pytest.raises(LogMismatchError, match="--resume"):
        run(out, verifier, ("a3",))
    hotter = EvalOptions(n=N, max_tokens=MAX_TOKENS, temperature=0.7)
    with pytest.raises(LogMismatchError, match=r"temperature 1\.0 -> 0\.7"):
        run(out, verifier, ("a3",), options=hotter, resume=True)
    mixed = run(out, verifier, ("a3", "a1"), options=hotter, resume=True, force=True)
    assert len(mixed["run"]["parts"]) == 2
    fresh = run(out, verifier, ("a1",), overwrite=True)
    assert list(fresh["problems"]) == ["bench_a"]
    assert fresh["benchmarks"]["bench_a"]["problems"] == 1


def test_compare_pairs_problems(tmp_path: Path, verifier: LocalVerifier) -> None:
    base = run(tmp_path / "a.json", verifier)
    better = dict(SCRIPTS, a0=["ok", "ok", "none", "wrong"], b1=["ok", "none", "none", "none"])
    run(tmp_path / "b.json", verifier, engine=ScriptedEngine(make_script(better)))
    reply = CliRunner().invoke(app, ["eval", "--compare", str(tmp_path / "a.json"),
                                     str(tmp_path / "b.json"), "--resamples", "2000"])
    assert reply.exit_code == 0, reply.output
    assert base["benchmarks"]["bench_a"]["avg_at_n"] == pytest.approx(0.4375)
    lines = {line.split(" | ")[0].strip("| *"): line for line in reply.output.splitlines()
             if line.startswith("| ")}
    # a0 goes from 0 to 2 correct of 4 (+0.5 over 4 problems: +12.5 points), b1 from 0 to 1
    # of 4 (+0.25 over 2 problems: +12.5); every other problem is the same (no noise).
    assert lines["bench_a"].startswith("| bench_a | 4 | 43.8 | 56.2 | +12.5 | [")
    assert lines["bench_b"].startswith("| bench_b | 2 | 50.0 | 62.5 | +12.5 | [")
    assert lines["average"].startswith("| **average** | 6 | 46.9 | 59.4 | +12.5 | [")
    for name in ("bench_a", "bench_b", "average"):
        low, high = map(float, re.findall(r"\[([-+\d.]+), ([-+\d.]+)\]", lines[name])[0])
        assert 0.0 <= low <= 12.5 <= high  # resampling: every problem's gain is 0 or more
    same = CliRunner().invoke(app, ["eval", "--compare", str(tmp_path / "a.json"),
                                    str(tmp_path / "a.json")])
    assert "| **average** | 6 | 46.9 | 46.9 | +0.0 | [+0.0, +0.0] |" in same.output


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "r.txt"], "give a .json file"),
    (["--benchmarks", "gsm8k"], "gsm8k: no file"),
    (["--benchmarks", "nosuch.jsonl"], "nosuch: no file nosuch.jsonl"),
    (["--benchmarks", "gsm8k,gsm8k"], "named twice"),
    (["--n", "0"], "--n:"),
    (["--temperature", "0"], "--temperature:"),
    (["--preset", "nosuch"], "unknown preset"),
    (["--field", "question"], "--field"),
    (["--engine", "openai"], "--openai-url"),
])
def test_argument_errors(tmp_path: Path, args: list[str], message: str) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    reply = CliRunner().invoke(app, ["eval", "--data-dir", str(empty), "--benchmarks",
                                     "x.jsonl", "--out", str(tmp_path / "r.json"), *args])
    assert reply.exit_code == 2, reply.output
    assert message in reply.output


def test_compare_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    reply = CliRunner().invoke(app, ["eval", "--compare", str(junk), str(junk)])
    assert reply.exit_code == 2 and "not a results file" in reply.output
    missing = CliRunner().invoke(app, ["eval", "--compare", str(junk), str(tmp_path / "no")])
    assert missing.exit_code == 2


def test_resume_with_other_settings_stops_before_the_model_loads(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    header = {"config": {"model": "m", "engine": "transformers", "n": 4, "temperature": 1.0}}
    log_path(out).write_text(json.dumps(header) + "\n")
    data = tmp_path / "p.jsonl"
    data.write_text(problem("a1").model_dump_json() + "\n")
    base = ["eval", "--benchmarks", str(data), "--out", str(out), "--model", "m", "--n", "4"]
    exists = CliRunner().invoke(app, base)
    assert exists.exit_code == 2 and "pass --resume" in exists.output
    other = CliRunner().invoke(app, [*base, "--resume", "--temperature", "0.5"])
    assert other.exit_code == 2 and "temperature 1.0 -> 0.5" in other.output


def test_benchmarks_by_name_or_file_read_with_their_presets(tmp_path: Path) -> None:
    svamp = data_file("svamp.jsonl")
    names = BenchmarkOptions(benchmarks="gsm8k,asdiv," + str(svamp), data_dir=str(svamp.parent),
                             limit=3)
    loaded = load_benchmarks(names)
    assert list(loaded) == ["gsm8k", "asdiv", "svamp"]
    assert all(len(items) == 3 for items in loaded.values())
    assert loaded["asdiv"][0].answer and "(" not in loaded["asdiv"][0].answer  # units dropped
    assert all(reference_answer(p) for items in loaded.values() for p in items)
    copy = tmp_path / "mine.jsonl"
    copy.write_text("".join(svamp.read_text().splitlines(keepends=True)[:2]))
    with pytest.raises(ValueError, match="field 'question'"):  # the mindgap preset: no such
        load_benchmarks(BenchmarkOptions(benchmarks=str(copy)))
    mapped = load_benchmarks(BenchmarkOptions(benchmarks=str(copy), preset="svamp"))
    assert [p.question for p in mapped["mine"]] == [p.question for p in loaded["svamp"][:2]]
