"""The verifier on real benchmark data: every reference must verify against its own solution.

Each test calls ``check()`` in a forked child process (the sandbox pool is tested
elsewhere) with a SIGALRM per-item deadline, so one pathological pair fails its item instead
of hanging the run, and whatever an interrupted parse leaves behind (sympy and parser state)
dies with the child instead of reaching later tests. Each test prints its elapsed time and
up to ``MAX_SHOWN`` failures with inputs.
Data: ``../shared/data/benchmarks`` (read-only); tests skip when it is absent.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from mindgap.schemas import VerifyResult
from mindgap.verifier.check import check
from mindgap.verifier.extract import last_boxed

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
ITEM_TIMEOUT_S = 5
MAX_SHOWN = 30

Pair = tuple[str, str]


class _ItemTimeout(Exception):
    pass


def _raise_timeout(signum: int, frame: object) -> None:
    raise _ItemTimeout


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Raise ``_ItemTimeout`` in the main thread after ``seconds``."""
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def timed_check(response: str, reference: str) -> VerifyResult | None:
    """``check()`` under a per-item deadline; None when it ran out of time."""
    try:
        with _deadline(ITEM_TIMEOUT_S):
            return check(response, reference)
    except _ItemTimeout:
        return None


def load(name: str) -> list[dict[str, Any]]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real benchmark data not available: {path} is absent (see ../shared/data)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _short(text: str, keep: int = 160) -> str:
    return text if len(text) <= keep else "..." + text[-keep:]


def _results(pairs: Sequence[Pair]) -> list[VerifyResult | None]:
    return [timed_check(response, reference) for response, reference in pairs]


def run_pairs(name: str, pairs: Sequence[Pair], want_correct: bool) -> float:
    """Verify every pair; print timing and failures; return the rate of expected verdicts."""
    assert pairs, f"{name}: no pairs to check"
    start = time.perf_counter()
    failures: list[str] = []
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork) as child:
        results = child.submit(_results, list(pairs)).result()
    for i, ((response, reference), result) in enumerate(zip(pairs, results, strict=True)):
        if result is None:
            failures.append(f"  #{i} TIMEOUT (> {ITEM_TIMEOUT_S} s)\n"
                            f"    response:  {_short(response)!r}\n"
                            f"    reference: {_short(reference)!r}")
        elif result.correct != want_correct:
            failures.append(f"  #{i} correct={result.correct} reason={result.reason.value} "
                            f"extracted={result.extracted!r} reference={result.reference!r}\n"
                            f"    response:  {_short(response)!r}\n"
                            f"    reference: {_short(reference)!r}")
    elapsed = time.perf_counter() - start
    rate = 1 - len(failures) / len(pairs)
    verdict = "correct" if want_correct else "not correct"
    print(f"\n[{name}] {len(pairs) - len(failures)}/{len(pairs)} judged {verdict} "
          f"({rate:.2%}) in {elapsed:.1f} s")
    for line in failures[:MAX_SHOWN]:
        print(line)
    if len(failures) > MAX_SHOWN:
        print(f"  ... and {len(failures) - MAX_SHOWN} more")
    return rate


def next_different(values: Sequence[str], i: int,
                   differs: Callable[[str, str], bool] = lambda a, b: a != b) -> str | None:
    """The first value after ``values[i]`` (cyclically) that differs from it, or None."""
    for k in range(1, len(values)):
        other = values[(i + k) % len(values)]
        if differs(values[i], other):
            return other
    return None


# ---- GSM8K: worked solution ending in "#### <number>" ---------------------------------

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def gsm8k_rows() -> list[tuple[str, str]]:
    rows = load("gsm8k_test.jsonl")
    out = []
    for row in rows:
        match = _GSM8K_FINAL.search(row["answer"])
        assert match, f"GSM8K row without '####': {row['answer'][-80:]!r}"
        out.append((row["answer"], match.group(1)))
    return out


def test_gsm8k_solution_matches_its_own_number() -> None:
    rows = gsm8k_rows()
    assert len(rows) > 1000
    assert run_pairs("GSM8K own number", rows, want_correct=True) == 1.0


def test_gsm8k_solution_rejects_the_next_rows_number() -> None:
    rows = gsm8k_rows()
    numbers = [number for _, number in rows]
    pairs = [(solution, numbers[(i + 1) % len(rows)]) for i, (solution, number) in enumerate(rows)
             if numbers[(i + 1) % len(rows)] != number]
    assert len(pairs) > 1000
    assert run_pairs("GSM8K next row's number", pairs, want_correct=False) == 1.0


def test_gsm8k_prose_answer_against_full_solution() -> None:
    """A response stating the answer in prose, against the full worked solution as reference."""
    pairs = [(f"Adding it all up, the answer is {number}.", solution)
             for solution, number in gsm8k_rows()]
    assert run_pairs("GSM8K prose answer vs solution", pairs, want_correct=True) == 1.0


# ---- MATH-500: problem, solution (with \boxed), answer ------------------------------

def test_math500_solution_matches_answer() -> None:
    rows = load("math500.jsonl")
    assert len(rows) >= 499
    pairs = [(row["solution"], row["answer"]) for row in rows]
    assert run_pairs("MATH-500 solution vs answer", pairs, want_correct=True) >= 0.99


@pytest.mark.slow
def test_math500_solution_rejects_another_answer() -> None:
    rows = load("math500.jsonl")
    answers = [row["answer"] for row in rows]
    pairs = []
    for i, row in enumerate(rows):
        other = next_different(answers, i)
        if other is not None:
            pairs.append((row["solution"], other))
    assert len(pairs) >= 499
    assert run_pairs("MATH-500 solution vs other answer", pairs, want_correct=False) >= 0.99


def test_math500_prose_answer_against_full_solution() -> None:
    """The Minerva/lm-eval answer line ("Final Answer: The final answer is $x$. I hope ...")
    against the full solution: exercises phrase extraction (escaped ``\\$`` included) and
    extraction of the reference's answer from a solution."""
    rows = load("math500.jsonl")
    pairs = [(f"Final Answer: The final answer is ${row['answer']}$. I hope it is correct.",
              row["solution"]) for row in rows]
    assert run_pairs("MATH-500 prose answer vs solution", pairs, want_correct=True) == 1.0


# ---- Minerva math: solution with \boxed -------------------------------------------

def test_minerva_solution_matches_its_own_boxed_content() -> None:
    rows = load("minerva_math.jsonl")
    assert len(rows) > 200
    pairs = []
    for row in rows:
        boxed = last_boxed(row["solution"])
        assert boxed is not None, f"Minerva solution without \\boxed: {row['solution'][-80:]!r}"
        pairs.append((row["solution"], boxed))
    assert run_pairs("Minerva solution vs own boxed", pairs, want_correct=True) >= 0.99


_E_NOTATION = re.compile(r"^(-?\d+(?:\.\d+)?)e(-?\d+)$")


def test_minerva_scientific_notation_in_latex_form() -> None:
    """Minerva states many answers as ``7.5e7``; a response writing ``7.5 \\times 10^{7}``
    (or the plain number) is correct, and the next different such value is not."""
    rows = load("minerva_math.jsonl")
    values = [b for row in rows if (b := last_boxed(row["solution"])) and _E_NOTATION.match(b)]
    assert len(values) > 20, "expected many e-notation answers in Minerva"
    positive, negative = [], []
    for i, value in enumerate(values):
        mantissa, exponent = _E_NOTATION.match(value).groups()  # type: ignore[union-attr]
        latex = f"{mantissa} \\times 10^{{{int(exponent)}}}"
        positive.append((f"So the answer is $\\boxed{{{latex}}}$.", value))
        exact = Fraction(mantissa) * Fraction(10) ** int(exponent)
        if exact.denominator == 1:
            positive.append((f"The answer is {exact.numerator}.", value))
        other = next_different(values, i, lambda a, b: float(a) != float(b))
        if other is not None:
            negative.append((f"So the answer is $\\boxed{{{latex}}}$.", other))
    assert run_pairs("Minerva e-notation, LaTeX form", positive, want_correct=True) == 1.0
    assert run_pairs("Minerva e-notation, other value", negative, want_correct=False) == 1.0


# ---- AMC23 / AIME24: integer answers ----------------------------------------------

def _integer_pairs(name: str) -> list[Pair]:
    pairs = []
    for row in load(name):
        given = str(row["answer"])
        value = float(row["answer"])
        assert value.is_integer(), f"{name}: non-integer answer {given!r}"
        pairs.append((f"... so the answer is \\boxed{{{int(value)}}}", given))
    return pairs


@pytest.mark.parametrize("name", ["amc23.jsonl", "aime24.jsonl"])
def test_integer_answer_matches_dataset_format(name: str) -> None:
    """``27`` against ``27.0`` (AMC23 floats), ``25`` against ``025`` (AIME zero-padded)."""
    pairs = _integer_pairs(name)
    assert len(pairs) >= 30
    assert run_pairs(f"{name} integer answer", pairs, want_correct=True) == 1.0
