"""Fast rules of the verifier: answer extraction, exact normal forms, and equivalence."""

from __future__ import annotations

from fractions import Fraction

import pytest

from mindgap.schemas import VerifyReason
from mindgap.verifier.check import check
from mindgap.verifier.equivalence import answers_equal
from mindgap.verifier.extract import TAIL_CHARS, extract_answer, last_boxed, reference_answer
from mindgap.verifier.normalize import as_number, canonical_string, numbers_equal

# ---- extraction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "method"),
    [
        ("So $x = \\boxed{\\frac{a^{2}}{b_{1}}}$.", "\\frac{a^{2}}{b_{1}}", "boxed"),
        ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}", "boxed"),
        ("so the result is \\fbox{7}", "7", "boxed"),
        ("first \\boxed{1}, then \\boxed{2}", "2", "boxed"),
        ("\\boxed{3} and an unclosed \\boxed{4", "3", "boxed"),
        ("She makes 9 * 2 = $18.\n#### 18", "18", "gsm8k"),
        ("#### 1,234\n", "1,234", "gsm8k"),
        ("The answer is **42**.", "42", "answer_is"),
        ("Final answer: $\\frac{1}{2}$", "\\frac{1}{2}", "final_answer"),
        ("**Final Answer:** 12", "12", "final_answer"),
        ("**Final Answer**: $x=3$", "x=3", "final_answer"),
        ("Final Answer: The final answer is $36$. I hope it is correct.", "36", "final_answer"),
        ("The answer is: 36", "36", "answer_is"),
        ("The answer is 3.5. Next we check it.", "3.5", "answer_is"),
        ("The answer is \\(\\sqrt{2}\\).", "\\sqrt{2}", "answer_is"),
        ("The answer is $\\$18.90$.", "\\$18.90", "answer_is"),
        ("Thus the answer is $$\\frac{1}{2}$$", "\\frac{1}{2}", "answer_is"),
        ("The answer is $\\boxed{5}$ and not 6", "5", "boxed"),
    ],
)
def test_extracts_the_stated_answer(text: str, answer: str, method: str) -> None:
    found = extract_answer(text)
    assert (found.answer, found.method) == (answer, method)
    assert not found.truncated


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure how to solve this.",
        "3 + 4 = 7",  # a stray trailing number is not an answer: no last-number fallback
        "We get x = 12, so it costs 12",
        "Answer: let me think",
        "\\boxed{unclosed 5",
        "\\boxed{}",
    ],
)
def test_no_stated_answer_gives_none(text: str) -> None:
    found = extract_answer(text)
    assert found.answer is None and found.method is None


def test_no_answer_reason_from_check() -> None:
    result = check("so the total is 42", "42")
    assert not result.correct
    assert result.reason is VerifyReason.no_answer and result.extracted is None


def test_only_the_last_4_kib_is_examined() -> None:
    filler = "x" * TAIL_CHARS
    early = extract_answer("\\boxed{7}" + filler)
    assert early.answer is None and early.truncated
    late = extract_answer(filler + "The answer is \\boxed{7}")
    assert late.answer == "7" and late.truncated
    short = extract_answer("The answer is \\boxed{7}")
    assert short.answer == "7" and not short.truncated
    result = check("\\boxed{7}" + filler, "7")
    assert result.reason is VerifyReason.no_answer and result.truncated


def test_last_boxed_keeps_nested_braces() -> None:
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\fbox{\\sqrt{\\frac{3}{4}}}") == (
        "\\sqrt{\\frac{3}{4}}"
    )
    assert last_boxed("no box here") is None


@pytest.mark.parametrize(
    ("reference", "answer", "from_solution"),
    [
        ("42", "42", False),
        ("  \\frac{1}{2} ", "\\frac{1}{2}", False),
        ("Adding, 9 * 2 = 18.\n#### 18", "18", True),
        ("Hence $x = \\boxed{5}$.", "5", True),
    ],
)
def test_reference_answer(reference: str, answer: str, from_solution: bool) -> None:
    assert reference_answer(reference) == (answer, from_solution)


# ---- normal forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("27", Fraction(27)),
        ("27.0", Fraction(27)),
        ("025", Fraction(25)),
        ("-.5", Fraction(-1, 2)),
        ("1,000", Fraction(1000)),
        ("10,\\!080", Fraction(10080)),
        ("\\$32,\\!348", Fraction(32348)),
        ("\\dfrac{3}{4}", Fraction(3, 4)),
        ("\\frac43", Fraction(4, 3)),
        ("-\\frac{1}{2}", Fraction(-1, 2)),
        ("\\frac{1.5}{3}", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        ("-1./3", Fraction(-1, 3)),
        ("2.5 \\times 10^{3}", Fraction(2500)),
        ("10^{-2}", Fraction(1, 100)),
        ("-10^3", Fraction(-1000)),
        ("7.5e7", Fraction(75_000_000)),
        ("2.88e-19", Fraction(288, 10**21)),
        ("x = 2", Fraction(2)),
        ("30^\\circ", Fraction(30)),
        ("10\\text{ cm}", Fraction(10)),
    ],
)
def test_as_number(text: str, value: Fraction) -> None:
    assert as_number(text) == value


@pytest.mark.parametrize(
    "text", ["1,2", "\\frac{1}{0}", "3/0", "2^{10}", "x+1", "e7", "1e", "\\sqrt{2}"]
)
def test_as_number_rejects_non_numbers(text: str) -> None:
    assert as_number(text) is None


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (Fraction(1, 3), Fraction(333333, 10**6), True),  # six-digit rounding
        (Fraction(1, 3), Fraction(333, 1000), False),
        (Fraction(10**6), Fraction(10**6 + 1), False),  # integers compare exactly
        (Fraction(288, 10**21), Fraction(13, 10**28), False),  # tiny values: no absolute floor
        (Fraction(0), Fraction(1, 10**9), False),
    ],
)
def test_numbers_equal(a: Fraction, b: Fraction, equal: bool) -> None:
    assert numbers_equal(a, b) is equal
    assert numbers_equal(b, a) is equal


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("\\left( 3, \\dfrac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\tfrac{1}{2}", "\\frac{1}{2}"),
        ("\\text{(C)}", "(C)"),
        ("50\\%", "50"),
        ("12.5%", "12.5"),
        ("30^{\\circ}", "30"),
        ("45°", "45"),
        ("\\$5", "5"),
        ("$\\$5$", "5"),
        ("10\\text{ cm}", "10"),
        ("y = 2x + 3", "2x+3"),
        ("1{,}000", "1,000"),
        ("5x - 7y + 4 = 0", "5x-7y+4=0"),  # an equation is kept whole
    ],
)
def test_canonical_string(text: str, canonical: str) -> None:
    assert canonical_string(text) == canonical


# ---- equivalence --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extracted", "reference"),
    [
        ("10\\text{ cm}", "10"),
        ("10", "10 \\text{cm}"),
        ("864 \\mbox{ inches}^2", "864"),
        ("30^\\circ", "30"),
        ("30^{\\circ}", "30"),
        ("50\\%", "50"),
        ("50%", "50"),
        ("1,000", "1000"),
        ("1000", "1{,}000"),
        ("\\$5", "5"),
        ("\\$18.90", "18.9"),
        ("1,2", "2,1"),
        ("\\{1,2\\}", "\\{2,1\\}"),
        ("(1,2]", "(1, 2]"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
         "\\begin{pmatrix} -\\frac13 \\\\ \\frac{2}{3} \\end{pmatrix}"),
        ("x=2", "2"),
        ("2", "x = 2"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\frac{1}{2}", "0.5"),
        ("27", "27.0"),
        ("25", "025"),
        ("7.5 \\times 10^{7}", "7.5e7"),
        ("75000000", "7.5e7"),
        ("-\\frac{1}{3}", "-1./3"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("x^2+1", "1+x^2"),
        ("\\text{(C)}", "C"),
    ],
)
def test_equivalent_answers(extracted: str, reference: str) -> None:
    assert answers_equal(extracted, reference)


@pytest.mark.parametrize(
    ("extracted", "reference"),
    [
        ("3", "4"),
        ("-3", "3"),
        ("0.333", "\\frac13"),
        ("(1,2]", "[1,2]"),
        ("(1,2]", "(1,2)"),
        ("1,2,3", "1,2"),
        ("1,000", "1"),
        ("50", "0.5"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
        ("2.88 \\times 10^{-19}", "1.325e-27"),
        ("1000000", "1000001"),
        ("7.5e7", "7.6e7"),
        ("\\pi", "3.14"),
        ("A", "B"),
    ],
)
def test_different_answers(extracted: str, reference: str) -> None:
    assert not answers_equal(extracted, reference)


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        ("Final Answer: The final answer is $\\$36$. I hope it is correct.",
         "The price was $\\frac{\\$14.40}{.4}=\\boxed{\\$36}$", True),
        ("Janet makes \\$18.\n#### 18", "18", True),
        ("The answer is **42**.", "43", False),
        ("... so the answer is \\boxed{27}", "27.0", True),
        ("So $x = \\boxed{5}$.", "x=5", True),
    ],
)
def test_check_end_to_end(response: str, reference: str, correct: bool) -> None:
    result = check(response, reference)
    assert result.correct is correct
    assert result.reason is (VerifyReason.equal if correct else VerifyReason.not_equal)
