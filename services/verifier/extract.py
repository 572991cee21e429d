"""Find the final answer a text states explicitly (boxed, ``####``, answer markers).

In order: the last ``\\boxed{}`` (with the boxes joined to it by "and", "or" or a comma: a
solution set), else the GSM8K ``#### n``, else "Final answer: ...", else the last of the
other markers ("the answer/solution/result is ...", an "Answer" label before math or a
number, "$x$ is the answer"). There is deliberately no last-number fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mindgap.answers import GSM8K_ANSWER, closing_brace, last_boxed
from mindgap.verifier.phrases import INLINE_MATH, clean_phrase, opens_with_answer

__all__ = ["TAIL_CHARS", "Extraction", "extract_answer", "last_boxed", "reference_answer",
           "reference_extraction"]

TAIL_CHARS = 4096
"""Only the last 4 KiB of a response are examined."""

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_GAP_MAX = 40
"""Boxes further apart than this many characters are separate statements."""
_JOINER = re.compile(r"(?:^|[\s$)])(?:and|or)(?:$|[\s$(\\])|[,;]", re.IGNORECASE)
_NOT_A_JOINER = re.compile(
    r"\b(?:so|then|thus|hence|therefore|but|not|which|gives?|giving|gets?|yields?|means|"
    r"implies|instead|rather|wait|actually|sum|total|product)\b|\.\s|\n\s*\n",
    re.IGNORECASE,
)
"""Words and breaks between two boxes that make the later box a new statement."""
_FINAL_ANSWER = re.compile(r"final\s+answer\s*(?:\*\*)?\s*(?:is)?\s*[:：](?:\s*\*\*)?",
                           re.IGNORECASE)
_MARKERS = (
    ("answer_is", re.compile(r"(?:the\s+)?(?:final\s+)?answers?\s+(?:is|are|=)\s*[:：]?",
                             re.IGNORECASE), False),
    ("result_is", re.compile(r"\b(?:solutions?|results?)\s+(?:is|are|=)\s*[:：]?",
                             re.IGNORECASE), True),
    ("answer_label", re.compile(r"(?:^|(?<=[\n*#>.]))[ \t]*(?:\*\*)?\s*(?:final\s+)?answer\b"
                                r"\s*(?:\*\*)?\s*[:：]?(?:\s*\*\*)?", re.IGNORECASE | re.MULTILINE),
     True),
)
"""Phrase markers: (method, pattern, whether what follows must open with math or a number)."""
_MARKER_WORD = re.compile(r"answer|solution|result", re.IGNORECASE)
"""Every marker holds one of these words (a text without them is not searched further)."""
_IS_THE_ANSWER = re.compile(
    INLINE_MATH + r"\s+is\s+(?:the|our|my)\s+(?:final\s+)?(?:answer|solution|result)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Extraction:
    """An extracted answer (None when the text states none) and how it was found.

    ``parts`` holds the answers of a solution set stated in several boxes (``answer`` is
    them joined by ", "); it is empty for a single answer.
    """

    answer: str | None
    method: str | None
    truncated: bool
    parts: tuple[str, ...] = ()


def _last_boxes(text: str) -> list[tuple[int, int, int]]:
    """``(start, content start, end)`` of the complete top-level boxes, the last first, read
    from the end only as far as the caller goes (``text[content start:end - 1]`` is the
    content)."""
    starts = [match.span() for match in _BOX.finditer(text)]
    found: list[tuple[int, int, int]] = []
    for start, inner in reversed(starts):
        close = closing_brace(text, inner)
        if close is None:
            continue
        while found and found[-1][0] < close:  # the later box lies inside this one
            found.pop()
        found.append((start, inner, close + 1))
        yield_ = found[-1]
        del yield_
    return found


def _boxes_from_end(text: str) -> Iterator[tuple[int, int, int]]:
    """``(start, content start, end)`` of every complete box, the last first
    (``text[content start:end - 1]`` is its content)."""
    for start, inner in reversed([match.span() for match in _BOX.finditer(text)]):
        close = closing_brace(text, inner)
        if close is not None:
            yield start, inner, close + 1


def _joins(gap: str) -> bool:
    """Whether the text between two boxes joins them into one answer ("}, \\boxed{")."""
    return (len(gap) <= _BOX_GAP_MAX and _JOINER.search(gap) is not None
            and _NOT_A_JOINER.search(gap) is None)


def _boxed(text: str) -> tuple[str, ...]:
    """The contents of the last box and of the boxes joined to it (in text order)."""
    run: list[tuple[int, int, int]] = []
    for box in _boxes_from_end(text):
        if run and (box[2] > run[0][0] or not _joins(text[box[2] : run[0][0]])):
            break  # a box around the last one, or a separate statement
        run.insert(0, box)
    contents = (text[inner : end - 1].strip() for _, inner, end in run)
    return tuple(content for content in contents if content)


def _candidates(text: str) -> list[tuple[int, str, re.Match[str], bool]]:
    """``(position, method, match, needs math)`` of every answer marker in ``text``."""
    found = [(match.start(), method, match, needs_math)
             for method, pattern, needs_math in _MARKERS for match in pattern.finditer(text)]
    found += [(match.start(), "is_the_answer", match, False)
              for match in _IS_THE_ANSWER.finditer(text)]
    return sorted(found, key=lambda candidate: candidate[0])


def _last_marked(text: str, truncated: bool) -> Extraction:
    """The answer after the last "final answer" marker that states one, else after the last
    other marker that does."""
    if _MARKER_WORD.search(text) is None:
        return Extraction(None, None, truncated)
    for match in reversed(list(_FINAL_ANSWER.finditer(text))):
        answer = clean_phrase(text[match.end() :])
        if answer:
            return Extraction(answer, "final_answer", truncated)
    for _, method, match, needs_math in reversed(_candidates(text)):
        if method == "is_the_answer":
            return Extraction(match.group(1).strip(), method, truncated)
        rest = text[match.end() :]
        if needs_math and not opens_with_answer(rest):
            continue
        answer = clean_phrase(rest)
        if answer:
            return Extraction(answer, method, truncated)
    return Extraction(None, None, truncated)


def extract_answer(text: str, tail_chars: int = TAIL_CHARS) -> Extraction:
    """The final answer stated in ``text``: boxed, else ``####``, else answer markers.

    There is deliberately no last-number fallback: a response must state its answer.
    """
    truncated = len(text) > tail_chars
    if truncated:
        text = text[-tail_chars:]
    boxed = _boxed(text)
    if len(boxed) == 1:
        return Extraction(boxed[0], "boxed", truncated)
    if boxed:
        return Extraction(", ".join(boxed), "boxed_set", truncated, boxed)
    lines = GSM8K_ANSWER.findall(text)
    if lines and (answer := clean_phrase(lines[-1])):
        return Extraction(answer, "gsm8k", truncated)
    return _last_marked(text, truncated)


def reference_extraction(reference: str) -> Extraction:
    """The answer a reference states: extracted from a full solution (``method`` says how),
    else the text itself (``method`` None)."""
    found = extract_answer(reference, tail_chars=len(reference) + 1)
    if found.answer is not None:
        return found
    return Extraction(reference.strip(), None, False)


def reference_answer(reference: str) -> tuple[str, bool]:
    """The answer a reference states, and whether it was extracted from a longer solution."""
    found = reference_extraction(reference)
    return found.answer or "", found.method is not None
