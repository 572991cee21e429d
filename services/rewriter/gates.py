"""Quality gates: verified model responses that are still not kept, and why.

A response the verifier accepts can still be bad training data. Each gate is switchable
in :class:`~mindgap.schemas.RewriteOptions`, and the first that fails names the rejection:

- ``cut``: generation stopped at ``max_tokens`` (finish reason ``length``), so the response
  ends mid-thought, often in a loop after an early "The answer is N";
- ``repetition``: degenerate looping, measured as the share of word n-grams that repeat an
  earlier one (see :func:`repeated_ngram_share`);
- ``copied`` (guided only): a long verbatim copy of the reference;
- ``no_working`` / ``wrong_calculation`` / ``answer_not_derived`` (guided only): the
  answer is all the response shares with the reference: no number at all before it (the
  answer alone), or shown working that contradicts it: a calculation whose two sides differ,
  or an answer that no shown calculation (nor any number stated after the last one)
  reaches, as when the final number was lifted from the hint after broken working.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import get_args

from mindgap.schemas import GateName, PromptKind, RewriteOptions
from mindgap.verifier.arithmetic import calculations, evaluate, normalise, stated_numbers

GATES: tuple[GateName, ...] = get_args(GateName)
"""Every rejection a gate can give, in the order the gates run."""
REPETITION_NGRAM = 4
"""Words per n-gram of the repetition measure."""
_FINAL_MARKERS = ("\\boxed", "answer", "####")


@dataclass(frozen=True)
class Rejection:
    """Why a verified response is not kept."""

    gate: GateName
    detail: str


def longest_common_substring(a: str, b: str) -> int:
    """Length of the longest string found in both ``a`` and ``b``."""
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size


def repeated_ngram_share(text: str, n: int = REPETITION_NGRAM) -> float:
    """Share of the word ``n``-grams of ``text`` that already occurred earlier in it.

    About 0.0–0.1 for ordinary working; a response stuck in a loop approaches 1.
    """
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def final_statement_start(text: str) -> int | None:
    """Where the working ends: the first final-answer marker (``\\boxed``, "answer",
    ``####``), None without one. Whatever follows the first statement of an answer is not
    working (weak models restate, or ramble on)."""
    lowered = text.lower()
    starts = [lowered.find(marker.lower()) for marker in _FINAL_MARKERS]
    found = [s for s in starts if s >= 0]
    return min(found) if found else None


def working_rejection(text: str, answer: str | None) -> Rejection | None:
    """Whether the working before the final statement contradicts the stated ``answer``.

    Applies to numeric answers stated with a marker; calculations are judged when shown.
    """
    value = evaluate(normalise(answer or "").strip().rstrip("."))
    start = final_statement_start(text)
    if value is None or start is None:
        return None
    working = text[:start]
    if not stated_numbers(working):
        return Rejection("no_working", "no number before the answer: the answer alone")
    shown = calculations(working)
    for calculation in shown:
        error = calculation.first_error()
        if error is not None:
            return Rejection("wrong_calculation", error)
    if not shown:
        return None
    reached = {v for c in shown for v in c.values}
    after_last = stated_numbers(normalise(working)[shown[-1].end :])
    if value in reached or value in after_last:
        return None
    return Rejection("answer_not_derived",
                     f"the answer {answer} is not the result of any shown calculation "
                     f"(last: {shown[-1].text})")


def rejection(text: str, finish_reason: str, kind: PromptKind, answer: str | None,
              reference_solution: str, options: RewriteOptions) -> Rejection | None:
    """The first enabled gate a verified response fails, None when it may be kept."""
    if options.reject_cut and finish_reason == "length":
        return Rejection("cut", f"stopped at max_tokens={options.max_tokens}")
    if options.reject_repetition:
        share = repeated_ngram_share(text)
        if share > options.repetition_max_share:
            return Rejection("repetition", f"{share:.2f} of its {REPETITION_NGRAM}-word "
                             f"n-grams repeat (limit {options.repetition_max_share})")
    if kind != "guided":
        return None
    copied = longest_common_substring(text, reference_solution)
    if copied >= options.copy_min_chars:
        return Rejection("copied", f"shares {copied} characters with the reference")
    if options.check_working:
        return working_rejection(text, answer)
    return None
