"""Find the final answer a text states explicitly (boxed, ``####``, "the answer is ...")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mindgap.answers import GSM8K_ANSWER, last_boxed

TAIL_CHARS = 4096
"""Only the last 4 KiB of a response are examined."""

# "Final answer: x", also with markdown bold around the label ("**Final Answer**: x").
_FINAL_ANSWER = re.compile(
    r"final\s+answer\s*(?:\*\*)?\s*(?:is)?\s*[:：]\s*([^\n]+)", re.IGNORECASE
)
_ANSWER_IS = re.compile(
    r"(?:the\s+)?(?:final\s+)?answer\s+(?:is|=)\s*[:：]?\s*([^\n]+)", re.IGNORECASE
)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


@dataclass(frozen=True)
class Extraction:
    """An extracted answer (None when the text states none) and how it was found."""

    answer: str | None
    method: str | None
    truncated: bool


def _find_unescaped(text: str, token: str, start: int) -> int:
    """Index of the first ``token`` at or after ``start`` not escaped by a backslash, or -1.

    A ``\\$`` inside ``$...$`` is a literal dollar sign, not the closing delimiter.
    """
    i = text.find(token, start)
    while i != -1:
        backslashes = 0
        while i - backslashes - 1 >= 0 and text[i - backslashes - 1] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            return i
        i = text.find(token, i + 1)
    return -1


def _strip_answer_prefix(answer: str) -> str:
    """Drop an answer phrase that opens the captured text ("Final Answer: The answer is x")."""
    while True:
        inner = _ANSWER_IS.match(answer.strip())
        if not inner:
            return answer
        answer = inner.group(1)


def _clean_phrase(answer: str) -> str | None:
    """Trim an answer taken from running text: bold, math delimiters, trailing sentence."""
    answer = _strip_answer_prefix(answer)
    bold = _BOLD.search(answer)
    if bold:
        answer = _strip_answer_prefix(bold.group(1))
    inner = last_boxed(answer)
    if inner is not None:
        return inner
    answer = answer.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left):
            close = _find_unescaped(answer, right, len(left))
            if close != -1:
                answer = answer[len(left) : close]
                break
    end = _SENTENCE_END.search(answer)
    if end:
        answer = answer[: end.start()]
    answer = answer.strip().strip("*").strip().rstrip(".").strip()
    return answer or None


def extract_answer(text: str, tail_chars: int = TAIL_CHARS) -> Extraction:
    """The final answer stated in ``text``: last boxed, else ``####``, else answer phrases.

    There is deliberately no last-number fallback: a response must state its answer.
    """
    truncated = len(text) > tail_chars
    if truncated:
        text = text[-tail_chars:]
    boxed = last_boxed(text)
    if boxed:
        return Extraction(boxed, "boxed", truncated)
    for method, pattern in (("gsm8k", GSM8K_ANSWER), ("final_answer", _FINAL_ANSWER),
                            ("answer_is", _ANSWER_IS)):
        matches = list(pattern.finditer(text))
        if matches:
            answer = _clean_phrase(matches[-1].group(1))
            if answer:
                return Extraction(answer, method, truncated)
    return Extraction(None, None, truncated)


def reference_answer(reference: str) -> tuple[str, bool]:
    """The answer a reference states: extracted from a full solution, else the text itself.

    Returns the answer and whether it was extracted from a longer solution.
    """
    found = extract_answer(reference, tail_chars=len(reference) + 1)
    if found.answer is not None:
        return found.answer, True
    return reference.strip(), False
