"""The verifier agrees with real data's own answers, and with Math-Verify, on the answer forms
of issue #13 (multi-answer and interval OlympiadBench problems included).

Responses are the data's solutions followed by a final statement in a form models use; the
references are the data's answers as the presets read them. Each response is also checked
against the next row's different answer (the data says: not equal). Verdicts come from the
sandboxed ``LocalVerifier``; Math-Verify runs directly in the main thread (its timeouts use
``signal.alarm``). ``benchmarks/verifier_agreement.py`` runs the same on every row.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from mindgap.answers import last_boxed, unbox
from mindgap.datasets import read_problems
from mindgap.schemas import VerifyRequest
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import data_file

_DOLLAR = re.compile(r"(?<!\\)\$")
_LHS = re.compile(r"^[a-zA-Z]=")
Case = tuple[str, str, bool]


@pytest.fixture(scope="module")
def verifier() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=2) as pool:
        yield pool




def _statements(answer: str, items: list[str]) -> list[str]:
    """The final statements of the forms under test (several boxes only for several items)."""
    bare = _DOLLAR.sub("", answer)
    out = [f"Therefore the solution is ${bare}$.", f"Answer: $${bare}$$",
           f"Hence ${bare}$ is the answer.",
           f"Final Answer: The final answer is ${bare}$. I hope it is correct."]
    if len(items) > 1:
        out.append("So the answers are " + ", ".join(f"$\\boxed{{{i}}}$" for i in items) + ".")
    return out


def _plain(answer: str) -> str:
    """An answer without spaces or an ``x=`` in front (MATH-500 has both ``5`` and ``x=5``)."""
    return _LHS.sub("", answer.replace(" ", ""))


def _cases(rows: list[tuple[str, str, list[str]]]) -> list[Case]:
    """Each (body, answer, items) restated in every form, against its answer and the next
    row's different answer."""
    cases: list[Case] = []
    for i, (body, answer, items) in enumerate(rows):
        other = next(rows[(i + k) % len(rows)][1] for k in range(1, len(rows))
                     if _plain(rows[(i + k) % len(rows)][1]) != _plain(answer))
        for statement in _statements(answer, items):
            response = f"{body}\n\n{statement}"
            cases += [(response, answer, True), (response, other, False)]
    return cases


def _olympiad_rows() -> list[tuple[str, str, list[str]]]:
    path = data_file("olympiadbench.jsonl")
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    problems = read_problems(str(path), preset="olympiadbench")
    rows = []
    for row, problem in zip(raw, problems, strict=True):
        if row["is_multiple_answer"] or row["answer_type"] == "Interval":
            items = [_DOLLAR.sub("", a).strip() for a in row["final_answer"]]
            assert problem.answer is not None
            rows.append(("\n\n".join(row["solution"]), problem.answer, items))
    return rows


def _agreement(verifier: LocalVerifier, cases: list[Case]) -> tuple[float, list[Case]]:
    results = verifier.verify_batch([VerifyRequest(response=r, reference=a)
                                     for r, a, _ in cases])
    wrong = [case for case, result in zip(cases, results, strict=True)
             if result.correct is not case[2]]
    return 1 - len(wrong) / len(cases), wrong


def test_olympiadbench_multi_answer_and_interval_problems(verifier: LocalVerifier) -> None:
    rows = _olympiad_rows()
    assert len(rows) >= 95  # 94 multi-answer problems, 6 interval ones
    cases = _cases(rows)
    rate, wrong = _agreement(verifier, cases)
    print(f"OlympiadBench multi-answer/interval: {rate:.2%} of {len(cases)}")
    assert rate >= 0.995, [(a, expected, r[-120:]) for r, a, expected in wrong[:5]]


def _math_rows(name: str, preset: str, limit: int) -> list[tuple[str, str, list[str]]]:
    problems = read_problems(str(data_file(name)), preset=preset, limit=limit)
    return [(unbox(p.solution), p.answer or last_boxed(p.solution) or "", []) for p in problems]


@pytest.mark.parametrize(("name", "preset"), [("math500.jsonl", "math"),
                                              ("minerva_math.jsonl", "minerva")])
def test_math_and_minerva_forms_agree_with_data_and_math_verify(
        verifier: LocalVerifier, name: str, preset: str) -> None:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cases = _cases(_math_rows(name, preset, limit=40))
    rate, wrong = _agreement(verifier, cases)
    print(f"{name}: {rate:.2%} of {len(cases)} agree with the data")
    assert rate >= 0.995, [(a, expected, r[-120:]) for r, a, expected in wrong[:5]]
    theirs = [bool(verify(parse(f"${a}$"), parse(r))) for r, a, _ in cases]
    results = verifier.verify_batch([VerifyRequest(response=r, reference=a)
                                     for r, a, _ in cases])
    same = sum(ours.correct is mv for ours, mv in zip(results, theirs, strict=True))
    print(f"{name}: {same / len(cases):.2%} agree with Math-Verify run directly")
    assert same / len(cases) >= 0.99
