"""Where a solution states its final answer: the one definition shared by every part.

The verifier builds its extraction on these; the datasets and the aligner use them to find
a problem's reference answer (DESIGN.md: the answer field, else the last ``\\boxed{}``,
else the GSM8K ``#### n`` line); the guided prompt uses them to hide the expert's answer.
"""

from __future__ import annotations

import re

_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K_MARK = "####"
GSM8K_ANSWER = re.compile(_GSM8K_MARK + r"\s*([^\n]+)")
"""The GSM8K ``#### n`` answer anywhere in a text; group 1 is what follows the mark."""
_GSM8K_WHOLE_LINE = re.compile(r"^[ \t]*" + _GSM8K_MARK + r".*$\n?", re.MULTILINE)
"""A whole line that opens with the mark (removed to hide the answer)."""


def closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one opened just before ``start``, or None."""
    depth = 1
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept)."""
    for match in reversed(list(_BOXED_START.finditer(text))):
        end = closing_brace(text, match.end())
        if end is not None:
            return text[match.end() : end].strip()
    return None


def derive_answer(solution: str) -> str | None:
    """The answer a solution states: its last ``\\boxed{...}``, else its last ``#### n`` line."""
    boxed = last_boxed(solution)
    if boxed:
        return boxed
    lines = GSM8K_ANSWER.findall(solution)
    return lines[-1].strip() or None if lines else None


def _strip_boxed(text: str, keep_content: bool = False) -> str:
    """``text`` without its ``\\boxed{...}``/``\\fbox{...}`` (content too, unless
    ``keep_content``), up to the first one left unclosed."""
    while (match := _BOXED_START.search(text)) is not None:
        end = closing_brace(text, match.end())
        if end is None:
            break
        inner = text[match.end() : end] if keep_content else ""
        text = text[: match.start()] + inner + text[end + 1 :]
    return text


def unbox(text: str) -> str:
    """``text`` with every ``\\boxed{X}`` replaced by ``X`` (the working kept)."""
    return _strip_boxed(text, keep_content=True)


def hide_final_answer(solution: str) -> str:
    """The solution without its final-answer lines (``#### n``) or ``\\boxed{}``."""
    return _strip_boxed(_GSM8K_WHOLE_LINE.sub("", solution)).rstrip()
