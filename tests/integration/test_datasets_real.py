"""Every benchmark file in ../shared/data/benchmarks loads with its preset, and its own
solutions verify against its answers (skipped when the folder is absent)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mindgap.datasets import PRESET_FILES, ReadReport, read_problems
from mindgap.schemas import VerifyRequest
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import data_file

ANSWER_ONLY = {"amc23.jsonl", "multiarith.jsonl"}
"""Files with no worked solution: the preset's solution is the answer stated, so the check is
that each answer field reads back as itself."""


@pytest.fixture(scope="module")
def verifier() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=2) as pool:
        yield pool


@pytest.mark.parametrize("name", sorted(PRESET_FILES))
def test_file_loads_and_its_solutions_verify(name: str, verifier: LocalVerifier) -> None:
    path = data_file(name)
    rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    report = ReadReport()
    problems = read_problems(str(path), preset=PRESET_FILES[name], skip_invalid=True,
                             report=report)
    assert (report.rows, report.loaded, report.skipped) == (rows, rows, 0), report.errors[:3]
    assert len(problems) == rows
    if name in ANSWER_ONLY:
        assert all(p.solution.startswith(("The answer is", "####")) for p in problems)
    results = verifier.verify_batch([VerifyRequest(response=p.solution, reference=p.answer)
                                     for p in problems])
    agreement = sum(r.correct for r in results) / len(results)
    print(f"{name}: {agreement:.2%} of {len(results)} solutions verify")
    assert agreement >= 0.99, [(p.id, r.extracted, r.reference) for p, r in
                               zip(problems, results, strict=True) if not r.correct][:5]


def test_asdiv_answers_drop_their_units() -> None:
    path = data_file("asdiv.jsonl")
    first = read_problems(str(path), preset="asdiv", limit=1)[0]
    assert json.loads(path.open(encoding="utf-8").readline())["answer"] == "9 (apples)"
    assert first.answer == "9"
    assert first.question == ("Seven red apples and two green apples are in the basket. "
                              "How many apples are in the basket?")


def test_svamp_equations_evaluate_to_the_answers(verifier: LocalVerifier) -> None:
    """An independent check of the composed SVAMP data: the equation alone gives the answer."""
    path = data_file("svamp.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    problems = read_problems(str(path), preset="svamp")
    results = verifier.verify_batch([
        VerifyRequest(response=f"\\boxed{{{row['Equation']}}}", reference=p.answer)
        for row, p in zip(rows, problems, strict=True)])
    assert sum(r.correct for r in results) / len(results) >= 0.99
