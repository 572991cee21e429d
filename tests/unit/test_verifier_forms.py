"""The ways real solutions state their final answer (issue #13), each read in both directions.

Every case is taken from a public benchmark file in ``../shared/data/benchmarks`` (cited by
its id: MATH-500 ``unique_id``, OlympiadBench ``id``, Minerva ``idx``, GSM8K and ASDiv row
numbers), restated in the form under test; the "not equal" case changes the answer.
"""

from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor

import pytest

from mindgap.schemas import VerifyReason
from mindgap.verifier.check import check
from mindgap.verifier.extract import extract_answer

# ---- several boxes: one solution set ---------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        # OlympiadBench 1737: final_answer "(6,3),(9,3),(9,5),(54,5)", boxes in another order
        ("so $\\boxed{(9,3)}$, $\\boxed{(6,3)}$, $\\boxed{(54,5)}$ and $\\boxed{(9,5)}$.",
         "(6,3),(9,3),(9,5),(54,5)", True),
        ("so $\\boxed{(9,3)}$, $\\boxed{(6,3)}$ and $\\boxed{(54,5)}$.",  # one pair missing
         "(6,3),(9,3),(9,5),(54,5)", False),
        ("so $\\boxed{(9,3)}$, $\\boxed{(6,3)}$, $\\boxed{(54,5)}$ and $\\boxed{(5,9)}$.",
         "(6,3),(9,3),(9,5),(54,5)", False),
        # OlympiadBench 1709: final_answer "1,3,5"; written as a set \{1, 3, 5\} as well
        ("The values are \\boxed{5}, \\boxed{1}, \\boxed{3}.", "1,3,5", True),
        ("The values are \\boxed{5}, \\boxed{1}, \\boxed{3}.", "\\{1, 3, 5\\}", True),
        ("The values are \\boxed{5} and \\boxed{1}.", "1,3,5", False),
        # OlympiadBench 2544: final_answer "(2,32), (8,18)", a label between the boxes
        ("$\\boxed{(2,32)}$ in case (i) and $\\boxed{(8,18)}$ in case (ii).",
         "(2,32), (8,18)", True),
        ("$\\boxed{(2,32)}$ in case (i) and $\\boxed{(8,19)}$ in case (ii).",
         "(2,32), (8,18)", False),
        # MATH-500 test/precalculus/541.json: answer "\left( \frac{3}{2}, -13 \right)", a
        # tuple: its components boxed one by one count in order only
        ("so $a = \\boxed{\\frac{3}{2}}$ and $b = \\boxed{-13}$.",
         "\\left( \\frac{3}{2}, -13 \\right)", True),
        ("so $b = \\boxed{-13}$ and $a = \\boxed{\\frac{3}{2}}$.",
         "\\left( \\frac{3}{2}, -13 \\right)", False),
        # MATH-500 test/number_theory/459.json: the solution boxes one answer twice,
        # "\boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches"
        ("The answer is $\\frac{639}{40}$.",
         "Expressed as a fraction, $d = 15\\frac{975}{1000} = \\boxed{15\\frac{39}{40}},$ or "
         "$\\boxed{\\frac{639}{40}}$ inches.", True),
        ("The answer is $\\frac{639}{41}$.",
         "Expressed as a fraction, $d = 15\\frac{975}{1000} = \\boxed{15\\frac{39}{40}},$ or "
         "$\\boxed{\\frac{639}{40}}$ inches.", False),
    ],
)
def test_several_boxes_form_one_solution_set(response: str, reference: str,
                                             correct: bool) -> None:
    result = check(response, reference)
    assert result.correct is correct, result
    assert result.reason is (VerifyReason.equal if correct else VerifyReason.not_equal)


def test_boxes_in_separate_statements_are_not_joined() -> None:
    # MATH-500 test/geometry/178.json: the same answer boxed again in a second sentence,
    # and a box after "then" is a new statement, not a second member of a set
    text = ("$\\tan A = \\frac{BC}{AB} = \\boxed{2}$.\n\nWe also could have noted that "
            "$\\tan A = \\frac{\\sin A}{\\cos A} =\\boxed{2}$.")
    assert (extract_answer(text).answer, extract_answer(text).method) == ("2", "boxed")
    found = extract_answer("first \\boxed{1}, then \\boxed{2}")
    assert (found.answer, found.parts) == ("2", ())
    joined = extract_answer("$\\boxed{69}$ and $\\boxed{84}$")  # OlympiadBench 1664 ("$69$,$84$")
    assert (joined.answer, joined.method, joined.parts) == ("69, 84", "boxed_set",
                                                            ("69", "84"))


# ---- answer markers other than "the answer is" ----------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "correct", "method"),
    [
        # OlympiadBench 1964: final_answer "$k \geqslant 2$"
        ("Hence the solution is $k \\ge 2$.", "k \\geqslant 2", True, "result_is"),
        ("Hence the solution is $k >= 2$.", "k \\geqslant 2", True, "result_is"),
        ("Hence the solution is $k > 2$.", "k \\geqslant 2", False, "result_is"),
        ("Hence the solution is $k \\geq 3$.", "k \\geqslant 2", False, "result_is"),
        # MATH-500 test/algebra/841.json: answer "350"
        ("The sixth term is $200 + 2d$, so the result is $350$.", "350", True, "result_is"),
        ("The sixth term is $200 + 2d$, so the result is $351$.", "350", False, "result_is"),
        # MATH-500 test/algebra/1031.json: answer "\frac{11}{2}"
        ("$x = \\frac{11}{2}$ is the solution.", "\\frac{11}{2}", True, "is_the_answer"),
        ("$x = \\frac{11}{3}$ is the solution.", "\\frac{11}{2}", False, "is_the_answer"),
    ],
)
def test_other_answer_markers(response: str, reference: str, correct: bool,
                              method: str) -> None:
    assert extract_answer(response).method == method
    assert check(response, reference).correct is correct


@pytest.mark.parametrize(
    ("ours", "theirs", "equal"),
    [
        ("y \\geq -1", "y >= -1", True),
        ("y \\ge -1", "y \\geqslant -1", True),
        ("y \\geq -1", "y > -1", False),
        ("x \\lt 3", "x < 3", True),
        ("x \\lt 3", "x \\leq 3", False),
        ("x \\neq 2", "x != 2", True),
        ("x \\ne 2", "x \\neq 2", True),
        ("x \\neq 2", "x = 2", False),
    ],
)
def test_relations_match_in_any_spelling(ours: str, theirs: str, equal: bool) -> None:
    # The relation forms of OlympiadBench answers (1964 "k \geqslant 2") and MATH intervals
    for response in (f"The answer is ${ours}$.", f"the solution is ${ours}$"):
        assert check(response, theirs).correct is equal
        assert check(response.replace(ours, theirs), ours).correct is equal


# ---- "Answer" labels: display math, no "is", a sentence after the marker ----------------


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("Answer $12$", "12"),  # AMC/AoPS-style label with inline math
        ("**Answer:** $$58,500$$", "58,500"),  # MATH-500 test/counting_and_probability/737
        ("Answer: $$\\frac{11}{2}$$", "\\frac{11}{2}"),  # MATH-500 test/algebra/1031
        ("Answer \\[ \\frac{11}{2} \\]", "\\frac{11}{2}"),
        ("Answer:\n\\[\n1.6\n\\]", "1.6"),  # Minerva idx 0 (display math on the next lines)
        ("Final Answer: The smallest $k$ is 7.", "7"),
        # MATH-500 test/algebra/291.json: a fraction after other math on the same line
        ("Final Answer: Since $a = 2b$ and $a + b = 1$, Alice wins with probability "
         "$\\frac{2}{3}$", "\\frac{2}{3}"),
    ],
)
def test_answer_labels(response: str, answer: str) -> None:
    assert extract_answer(response).answer == answer
    assert check(response, answer).correct
    assert not check(response, "13" if answer != "13" else "14").correct


@pytest.mark.parametrize(
    "text",
    [
        "Answer: let me think",
        "In order to answer $Q_1$ we first compute $x$.",  # "answer" as a verb, mid-sentence
        "The result is consistent with the bound.",  # "result is" without math or a number
    ],
)
def test_markers_without_an_answer_state_none(text: str) -> None:
    assert extract_answer(text).answer is None
    assert check(text, "1").reason is VerifyReason.no_answer


# ---- decimal commas by digit grouping ---------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        ("The answer is $1,6$.", "1.6", True),  # Minerva idx 0: "\boxed{1.6} cm"
        ("The answer is $1,25$.", "1.25", True),  # MATH-500 test/prealgebra/1558.json
        ("The answer is $1,250$.", "1.25", False),  # groups of three: a thousands separator
        ("The answer is $1,250$.", "1250", True),
        ("The answer is $0,15$.", "0.15", True),  # MATH-500 test/prealgebra/572.json
        ("The answer is $0,15$.", "0.51", False),
        ("The answer is 0,5", "\\frac{1}{2}", True),
        ("The answer is $2500,75$.", "2500.75", True),
        ("The answer is $2500,75$.", "250075", False),
        ("The answer is $3,25$.", "3.52", False),
    ],
)
def test_decimal_commas(response: str, reference: str, correct: bool) -> None:
    result = check(response, reference)
    assert result.correct is correct, result
    if correct and "," in response and "1,250" not in response:
        assert result.detail is not None and "decimal comma" in result.detail


# ---- expressions to evaluate ------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        # MATH-500 test/precalculus/920.json: answer the matrix -I, stated as a sum
        ("\\boxed{\\begin{pmatrix} -2 & 0 \\\\ 0 & -2 \\end{pmatrix} + "
         "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}}", True),
        ("\\boxed{\\begin{pmatrix} -2 & 0 \\\\ 0 & -2 \\end{pmatrix} + "
         "\\begin{pmatrix} 1 & 0 \\\\ 0 & 2 \\end{pmatrix}}", False),
    ],
)
def test_matrix_sums_are_evaluated(response: str, correct: bool) -> None:
    result = check(response, "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}")
    assert result.correct is correct
    assert result.detail is not None and "math-verify" in result.detail


@pytest.mark.parametrize(("sum_", "correct"), [("\\frac{1}{2}+\\frac{1}{6}", True),
                                               ("\\frac{1}{2}+\\frac{1}{4}", False)])
def test_sums_of_fractions_are_evaluated(sum_: str, correct: bool) -> None:
    # MATH-500 test/algebra/291.json: answer \frac{2}{3}
    assert check(f"The answer is ${sum_}$.", "\\frac{2}{3}").correct is correct


# ---- units and labels after a number ---------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        ("The answer is 17 oranges.", "17", True),  # GSM8K test row 60 ("17 oranges are good")
        ("The answer is 18 oranges.", "17", False),
        ("The answer is 9.", "9 (apples)", True),  # ASDiv row 0: answer "9 (apples)"
        ("The answer is 9 apples.", "9 (apples)", True),
        ("The answer is 8 apples.", "9 (apples)", False),
        ("The answer is $2 \\pi$.", "2", False),  # a math word is not a unit
    ],
)
def test_units_and_labels_after_numbers(response: str, reference: str, correct: bool) -> None:
    assert check(response, reference).correct is correct


# ---- two numbers are not one -----------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        ("The answer is $45, 120$.", "45120", False),
        ("The answer is $45,120$.", "45120", True),
        ("The answer is $58, 500$.", "58,500", False),  # MATH-500 counting_and_probability/737
        ("The answer is $58,500$.", "58,500", True),
        ("The answer is $58{,}500$.", "58500", True),
        # OlympiadBench 2521: final_answer "2400, 1350, 864" (a list, not a number)
        ("\\boxed{864, 2400, 1350}", "2400, 1350, 864", True),
        ("\\boxed{2400, 1350}", "2400, 1350, 864", False),
        ("\\boxed{24001350864}", "2400, 1350, 864", False),
    ],
)
def test_lists_of_numbers_are_not_one_number(response: str, reference: str,
                                             correct: bool) -> None:
    result = check(response, reference)
    assert result.correct is correct, result


# ---- every verdict says which rule decided it -----------------------------------------


@pytest.mark.parametrize(
    ("response", "reference", "detail"),
    [
        ("\\boxed{5}, \\boxed{1}, \\boxed{3}", "1,3,5",
         "boxed_set; 3 against 3 items, in any order"),
        ("\\boxed{2}", "2.0", "boxed; numbers"),
        ("The answer is $45, 120$.", "45120", "answer_is; a list of 2 items is not one number"),
        ("so the result is $x=7$", "7", "result_is; same normal form"),
        ("The answer is $0,5$", "0.5", "answer_is; numbers (decimal comma)"),
    ],
)
def test_detail_names_the_rule(response: str, reference: str, detail: str) -> None:
    assert check(response, reference).detail == detail


def _parse_expr_inputs() -> list[str]:
    """The strings sympy's ``parse_expr`` (``eval``) receives while every form is checked."""
    import sympy.parsing.sympy_parser as sympy_parser

    seen: list[str] = []
    original = sympy_parser.parse_expr

    def spy(text: str, *args: object, **kwargs: object) -> object:
        seen.append(text)
        return original(text, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sympy_parser, "parse_expr", spy)
        for response, reference in [
            ("\\boxed{(9,3)}, \\boxed{__import__('os')}", "(6,3),(9,3)"),
            ("Answer: $$x != 2$$", "x \\neq 2"), ("The answer is 0,5", "\\frac12"),
            ("Final Answer: The smallest $k$ is 7 oranges.", "7"),
            ("\\boxed{\\frac{1}{2}+\\frac{1}{6}}", "\\frac{2}{3}"),
        ]:
            check(response, reference)
    return seen


def test_no_untrusted_text_reaches_parse_expr() -> None:
    """At most plain number tokens reach ``parse_expr`` (through ``sympy.Number``); checked
    in a child process so the patched parser leaves nothing behind."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        seen = child.submit(_parse_expr_inputs).result()
    assert all(re.fullmatch(r"[0-9]*\.?[0-9]*", text) for text in seen), seen
