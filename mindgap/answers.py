"""Where a solution states its final answer: the one definition shared by every part.

The verifier builds its extraction on these; the datasets and the aligner use them to find
a problem's reference answer (DESIGN.md: the answer field, else the last ``\\boxed{}``,
else the GSM8K ``#### n`` line).
"""

from __future__ import annotations

import re

_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K_LINE = re.compile(r"####\s*([^\n]+)")


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
    lines = _GSM8K_LINE.findall(solution)
    return lines[-1].strip() or None if lines else None
