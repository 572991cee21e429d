"""``mindgap rewrite`` end to end with the real model: output, summary, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mindgap.schemas import AlignedExample
from tests.conftest import ROOT, data_file

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def rewrite_cmd(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mindgap.cli", "rewrite", "--data", str(data), "--out", str(out),
            *extra]


def read_examples(path: Path) -> list[AlignedExample]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "the file ends in a partial line"
    return [AlignedExample.model_validate_json(line) for line in text.splitlines()]


def test_rewrite_eight_gsm8k_problems(tmp_path: Path) -> None:
    gsm8k = data_file("gsm8k_test.jsonl")
    out = tmp_path / "aligned.jsonl"
    run = subprocess.run(
        rewrite_cmd(gsm8k, out, "--preset", "gsm8k", "--limit", "8", "--k-self", "2",
                    "--k-guided", "2", "--max-tokens", "128", "--batch-size", "8"),
        capture_output=True, text=True, timeout=1200, cwd=ROOT, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    examples = read_examples(out)
    assert len(examples) == 8
    assert len({e.problem_id for e in examples}) == 8
    for example in examples:
        if example.source == "expert":
            assert example.behavior is None
        else:
            assert example.behavior is not None
            assert len(example.behavior.logprobs) == len(example.response_token_ids)
            assert all(lp <= 0.0 for lp in example.behavior.logprobs)
        assert example.response_token_ids
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["problems_in_output"] == 8
    assert sum(summary["sources_in_output"].values()) == 8
    assert summary["samples"] >= 8 and summary["generated_tokens"] > 0
    print(summary["sources_in_output"], f"{summary['generated_tokens_per_s']:.1f} tok/s")
    assert json.loads(run.stdout.strip().splitlines()[-1]) == summary  # the last line is JSON


def test_killed_rewrite_resumes_without_duplicates(tmp_path: Path) -> None:
    sample = ROOT / "mindgap/samples/problems.jsonl"
    out = tmp_path / "aligned.jsonl"
    args = ["--limit", "12", "--k-self", "1", "--k-guided", "1", "--max-tokens", "24",
            "--batch-size", "2"]
    process = subprocess.Popen(rewrite_cmd(sample, out, *args), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        assert process.poll() is None, "rewrite ended before it could be killed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = out.read_text()
    done_before = partial.count("\n")
    assert 2 <= done_before < 12, f"killed too late ({done_before} lines)"
    # A kill leaves only whole lines; simulate the worst case too: a torn last line.
    with out.open("a") as handle:
        handle.write('{"id": "torn')
    run = subprocess.run(rewrite_cmd(sample, out, *args, "--resume"), capture_output=True,
                         text=True, timeout=900, cwd=ROOT, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    examples = read_examples(out)
    ids = [e.problem_id for e in examples]
    assert len(ids) == len(set(ids)) == 12
    expected = [json.loads(line)["id"] for line in sample.read_text().splitlines()[:12]]
    assert sorted(ids) == sorted(expected)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["skipped_resumed"] == done_before
    assert summary["problems_in_output"] == 12


def test_existing_output_needs_resume_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "aligned.jsonl"
    out.write_text("")
    run = subprocess.run(rewrite_cmd(ROOT / "mindgap/samples/problems.jsonl", out, "--limit", "1"),
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert run.returncode == 2
    assert "--resume" in run.stderr


def test_bad_row_is_named(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "a", "question": "q", "solution": "#### 1"}\n'
                    '{"id": "b", "question": "q"}\n')
    run = subprocess.run(rewrite_cmd(data, tmp_path / "o.jsonl"), capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=ENV)
    assert run.returncode == 2
    assert "bad.jsonl:2" in run.stderr and "solution" in run.stderr


def test_sigint_writes_what_is_decided_and_resume_finishes(tmp_path: Path) -> None:
    sample = ROOT / "mindgap/samples/problems.jsonl"
    out = tmp_path / "aligned.jsonl"
    # Batches of 2: the first batch's examples are on disk while the second one runs.
    args = ["--limit", "4", "--k-self", "1", "--k-guided", "1", "--max-tokens", "16",
            "--batch-size", "2"]
    process = subprocess.Popen(rewrite_cmd(sample, out, *args), cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 1:
            break
        assert process.poll() is None, "rewrite ended before it could be interrupted"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "--resume" in stderr.splitlines()[-1]
    last = json.loads(stdout.strip().splitlines()[-1])
    written = read_examples(out)
    assert last["interrupted"] == "SIGINT"
    assert last["problems_this_run"] == len(written) == last["problems_in_output"]
    assert 1 <= len(written) < 4, "interrupted too late"
    run = subprocess.run(rewrite_cmd(sample, out, *args, "--resume"), capture_output=True,
                         text=True, timeout=900, cwd=ROOT, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    ids = [e.problem_id for e in read_examples(out)]
    assert len(ids) == len(set(ids)) == 4
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["skipped_resumed"] == len(written)
    assert [p["status"] for p in summary["parts"]] == ["SIGINT", "done"]


def test_resume_with_other_settings_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    sample = ROOT / "mindgap/samples/problems.jsonl"
    out = tmp_path / "aligned.jsonl"
    out.write_text("")
    config = {"engine": "transformers", "model": "smollm2-135m-instruct", "temperature": 1.0,
              "max_tokens": 16}
    out.with_name(out.name + ".summary.json").write_text(json.dumps({"parts": [config]}))
    # A model that cannot load: the refusal must come first.
    run = subprocess.run(rewrite_cmd(sample, out, "--limit", "1", "--max-tokens", "32",
                                     "--resume", "--model", "/nonexistent/model"),
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert run.returncode == 2
    assert "max_tokens 16 -> 32" in run.stderr and "--force" in run.stderr
    forced = subprocess.run(rewrite_cmd(sample, out, "--limit", "1", "--max-tokens", "32",
                                        "--resume", "--force", "--model", "/nonexistent/model"),
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert forced.returncode == 2
    assert forced.stderr.strip() == "error: --model /nonexistent/model: no such folder"
