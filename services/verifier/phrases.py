"""The answer in the text that follows an answer marker ("the answer is", "Answer:", ...).

What follows a marker is math (``$12$``, ``$$12$$``, ``\\[12\\]``, ``\\(12\\)``), a number,
or a short sentence ("The smallest $k$ is 7."), in which the answer is what follows the
last "is"/"are"/"equals"/"=", else the math that ends the sentence.
"""

from __future__ import annotations

import re

from mindgap.answers import last_boxed

_ANSWER_PREFIX = re.compile(
    r"(?:the\s+)?(?:final\s+)?answers?\s+(?:is|are|=)\s*[:：]?\s*", re.IGNORECASE
)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("$", "$"), ("\\(", "\\)"))
_OPENS_WITH_ANSWER = re.compile(r"\s*(?:\*\*)?\s*(?:\$|\\\(|\\\[|\\boxed|\\fbox|[-+]?\.?\d)")
_COPULA = re.compile(r"\s(?:is|are|equals|=)\s+(?=\$|\\\(|[-+]?\.?\d)", re.IGNORECASE)
INLINE_MATH = r"(?<!\\)\$((?:\\\$|[^$])+?)(?<!\\)\$"
"""``$...$`` (group 1: the math), an escaped ``\\$`` inside it included."""
_INLINE_MATH = re.compile(INLINE_MATH + r"|\\\((.+?)\\\)")
_AFTER_LAST_MATH = re.compile(r"^[\s.,;:!*]*$")
MAX_PHRASE_CHARS = 800
"""What follows a marker is examined up to this many characters."""


def opens_with_answer(text: str) -> bool:
    """Whether ``text`` begins with math or a number (what a bare "Answer" label needs)."""
    return bool(_OPENS_WITH_ANSWER.match(text))


def find_unescaped(text: str, token: str, start: int) -> int:
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
    """Drop answer phrases that open the text ("The final answer is $x$" is ``$x$``)."""
    while inner := _ANSWER_PREFIX.match(answer.strip()):
        answer = answer.strip()[inner.end() :]
    return answer


def _leading_math(text: str) -> str | None:
    """The content of the math that opens ``text`` (it may span lines), or None."""
    for left, right in _DELIMITERS:
        if text.startswith(left):
            close = find_unescaped(text, right, len(left))
            if close != -1:
                return text[len(left) : close].strip() or None
            return None
    return None


def _mask_math(sentence: str) -> str:
    """``sentence`` with the inside of its inline math blanked (same length), so words
    found in it are words of the prose."""
    return _INLINE_MATH.sub(lambda m: "$" + " " * (len(m.group(0)) - 2) + "$", sentence)


def _from_sentence(sentence: str) -> str:
    """The answer a sentence states: after its last copula, else its closing math."""
    copulas = list(_COPULA.finditer(_mask_math(sentence)))
    if copulas:
        rest = sentence[copulas[-1].end() :]
        return _leading_math(rest) or rest
    spans = list(_INLINE_MATH.finditer(sentence))
    if spans and _AFTER_LAST_MATH.match(sentence[spans[-1].end() :]):
        last = spans[-1]
        return last.group(1) if last.group(1) is not None else last.group(2)
    return sentence


def clean_phrase(text: str) -> str | None:
    """The answer stated at the start of ``text`` (what follows a marker), or None."""
    text = _strip_answer_prefix(text[:MAX_PHRASE_CHARS]).lstrip()
    line = text.split("\n", 1)[0]
    bold = _BOLD.search(line)
    if bold:
        text = line = _strip_answer_prefix(bold.group(1)).strip()
    inner = last_boxed(line)
    if inner is not None:
        return inner
    math = _leading_math(text)
    if math is not None:
        return math
    end = _SENTENCE_END.search(line)
    sentence = (line[: end.start()] if end else line).strip()
    if not opens_with_answer(sentence):
        sentence = _from_sentence(sentence)
    answer = sentence.strip().strip("*").strip().rstrip(".").strip()
    return answer or None
