"""The ``mindgap`` command line, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def mindgap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mindgap.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_verify_prints_one_json_object() -> None:
    run = mindgap("verify", "--response", "so \\boxed{\\dfrac{3}{4}}", "--reference", "0.75")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["correct"] is True and result["extracted"] == "\\dfrac{3}{4}"


def test_verify_reads_the_response_from_a_file(tmp_path: Path) -> None:
    answer = tmp_path / "answer.txt"
    answer.write_text("Step 1 ... step 9.\n#### 72\n")
    run = mindgap("verify", "--response-file", str(answer), "--reference", "71")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["reason"] == "not_equal"


def test_verify_batch_of_the_shipped_sample() -> None:
    run = mindgap("verify", "--batch", "mindgap/samples/verify_sample.jsonl")
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == 12
    assert sum(r["correct"] for r in results) == 10
    assert "10/12 correct" in run.stderr


def test_bad_batch_line_names_line_and_field(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"response": "#### 1", "reference": "1"}\n{"response": "#### 2"}\n')
    run = mindgap("verify", "--batch", str(pairs))
    assert run.returncode == 2
    assert "pairs.jsonl:2" in run.stderr and "'reference'" in run.stderr


def test_missing_arguments_are_explained() -> None:
    run = mindgap("verify", "--response", "x")
    assert run.returncode == 2
    assert "--reference" in run.stderr
