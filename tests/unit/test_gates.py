"""The quality gates and the arithmetic they read responses with."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import pytest

from mindgap.rewriter.aligner import Aligner
from mindgap.rewriter.engines.scripted import ScriptedEngine
from mindgap.rewriter.gates import rejection, repeated_ngram_share, working_rejection
from mindgap.schemas import GateCounts, Problem, RewriteOptions, SampleRecord
from mindgap.verifier.arithmetic import calculations, evaluate
from mindgap.verifier.pool import LocalVerifier

GATED = RewriteOptions()


# --- arithmetic -------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "value"), [
    ("3 + 4", Fraction(7)), ("2 * (3 + 4)", Fraction(14)), ("22 / 3", Fraction(22, 3)),
    ("0.1 + 0.2", Fraction(3, 10)), ("-5 + 2", Fraction(-3)),
])
def test_evaluate_is_exact(expression: str, value: Fraction) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", [
    "__import__('os')", "2 ** 99999999", "x + 1", "1 / 0", "(1 + 2", "9" * 40, "1 +" * 100,
])
def test_evaluate_refuses_what_is_not_plain_arithmetic(expression: str) -> None:
    assert evaluate(expression) is None


def test_calculations_read_latex_unicode_and_thousands() -> None:
    text = ("She pays $3 \\times 4 = 12$ dollars, then 1,200 ÷ 4 = 300 and "
            "\\frac{1}{2} + \\frac{1}{4} = 0.75 and 5 x 6 = 30.")
    shown = calculations(text)
    assert [c.values[-1] for c in shown] == [12, 300, Fraction(3, 4), 30]
    assert all(c.first_error() is None for c in shown)


def test_a_wrong_step_is_found_and_a_running_chain_is_not() -> None:
    (wrong,) = calculations("So 3 + 4 = 8 apples.")
    assert wrong.first_error() == "3 + 4 = 8, but 3 + 4 is 7"
    (running,) = calculations("3 + 4 = 7 - 2 = 5")
    assert running.first_error() is None
    rounded = calculations("22 / 3 = 7.33 and 22 / 3 = 7 full bags")
    assert [c.first_error() for c in rounded] == [None, None]
    assert calculations("2 + 3 = 6")[0].first_error() is not None
    assert calculations("the years 2019 = 2020")  == []  # no operator: not a calculation


# --- the gates --------------------------------------------------------------------------------

LIFTED = ("Tom had 2 balloons and got 2 more, so 2 + 2 = 4 balloons. Then he gave some away."
          " So the answer is 6.")


def test_an_answer_no_calculation_reaches_is_rejected() -> None:
    # The example: right arithmetic, then the hint's final number.
    found = working_rejection(LIFTED, "6")
    assert found is not None and found.gate == "answer_not_derived"


def test_working_ends_at_the_first_statement_of_an_answer() -> None:
    # Seen with SmolLM2 on ASDiv (guided, T = 1): the hint's 15 after working that gives 6,
    # then rambling that restates an answer.
    text = ("Elena has six more balls than Marin. Let's need 15 over Marin. 15-9=6,  #### 15\n"
            "<rem>Incomplete\nOur answer: 65\n</rem>")
    found = working_rejection(text, "15")
    assert found is not None and found.gate == "answer_not_derived"


def test_a_calculation_stays_on_its_line() -> None:
    text = "Multiply them.\n(3 x 13) = 36\nSo Jake has 7 peaches.\n#### 7"
    found = working_rejection(text, "7")
    assert found is not None and found.gate == "wrong_calculation"
    assert [c.text for c in calculations("4 + 5\n= 9")] == []


def test_a_wrong_calculation_is_rejected() -> None:
    found = working_rejection("He buys 3 + 4 = 8 pens. The answer is \\boxed{8}.", "8")
    assert found is not None and found.gate == "wrong_calculation"
    assert "3 + 4 is 7" in found.detail


@pytest.mark.parametrize("text", [
    "5 * 3 = 15 apples, then she ate 5 so 10 are left. The answer is 10.",
    "First 6 * 7 = 42, then 42 - 2 = 40. \\boxed{40}",
    "Half of the 80 pages is 40 pages. The answer is 40.",  # no calculation shown: not judged
])
def test_working_that_reaches_the_answer_passes(text: str) -> None:
    answer = "10" if "10" in text[-8:] else "40"
    assert working_rejection(text, answer) is None


@pytest.mark.parametrize("text", ["$\\boxed{6}$",
                                  "I'd prefer a sentence.\n#### 6\nHere's the answer: 6"])
def test_the_answer_alone_is_no_working(text: str) -> None:
    found = working_rejection(text, "6")
    assert found is not None and found.gate == "no_working"


def test_non_numeric_answers_are_not_judged() -> None:
    assert working_rejection("1 + 1 = 3. The answer is \\boxed{x^2}", "x^2") is None


def test_repetition_share_separates_loops_from_working() -> None:
    working = ("There are 7 boxes with 6 eggs in each box, so there are 6 * 7 = 42 eggs. "
               "The farmer sells 2 of them and keeps the rest, which is 40 eggs.")
    loop = working + " The answer is 40." + " So the farmer has 40 eggs left." * 20
    assert repeated_ngram_share(working) < 0.05
    assert repeated_ngram_share(loop) > 0.7


def test_gates_switch_off_one_by_one() -> None:
    loop = "The answer is 16. " * 30
    assert rejection(loop, "length", "plain", "16", "", GATED).gate == "cut"  # type: ignore[union-attr]
    options = GATED.model_copy(update={"reject_cut": False})
    assert rejection(loop, "length", "plain", "16", "", options).gate == "repetition"  # type: ignore[union-attr]
    options = options.model_copy(update={"reject_repetition": False})
    assert rejection(loop, "length", "plain", "16", "", options) is None
    assert rejection(LIFTED, "stop", "guided", "6", "", GATED).gate == "answer_not_derived"  # type: ignore[union-attr]
    assert rejection(LIFTED, "stop", "plain", "6", "", GATED) is None  # guided only
    unchecked = GATED.model_copy(update={"check_working": False})
    assert rejection(LIFTED, "stop", "guided", "6", "", unchecked) is None


# --- in the aligner, with the real verifier ---------------------------------------------------

@pytest.fixture(scope="module")
def verifier() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=1) as pool:
        yield pool


PROBLEM = Problem(id="p", question="Tom had 2 balloons and got 2 more; then 4 more?",
                  solution="2 + 2 = 4, 4 + 2 = 6.\n#### 6")


def test_rejected_samples_are_recorded_with_their_gate(verifier: LocalVerifier) -> None:
    def script(prompt: str, index: int) -> str:
        if "<reference>" in prompt:
            return LIFTED if index % 1000 == 0 else "2 + 2 = 4 and 4 + 2 = 6. \\boxed{6}"
        return "The answer is 6. " * 40  # verifies, but cut in a loop

    records: list[SampleRecord] = []
    aligner = Aligner(ScriptedEngine(script), verifier,
                      RewriteOptions(k_self=1, k_guided=2, round_size=2, max_tokens=300),
                      on_samples=records.extend)
    (example,) = aligner.align([PROBLEM])
    assert example.source == "guided" and example.response.endswith("\\boxed{6}")
    assert example.attempts.rejected == GateCounts(cut=1, answer_not_derived=1)
    assert [(r.prompt_kind, r.verdict, r.reason) for r in records] == [
        ("plain", "rejected", "cut"), ("guided", "rejected", "answer_not_derived"),
        ("guided", "kept", "equal")]
    assert records[0].finish_reason == "length" and records[0].tokens == 300
    assert aligner.stats.rejections["guided"] == {"answer_not_derived": 1}


def test_without_gates_the_lifted_answer_is_kept(verifier: LocalVerifier) -> None:
    options = RewriteOptions(k_self=0, k_guided=1, check_working=False)
    (example,) = Aligner(ScriptedEngine(lambda p, i: LIFTED), verifier, options).align([PROBLEM])
    assert example.source == "guided"
    gated = RewriteOptions(k_self=0, k_guided=1)
    (example,) = Aligner(ScriptedEngine(lambda p, i: LIFTED), verifier, gated).align([PROBLEM])
    assert example.source == "expert"
