"""Cheap, safe canonical forms of answers: string normalisation and exact numbers.

Nothing here evaluates text: numbers are read with regular expressions into
``fractions.Fraction``. The verifier uses these forms as a fast path before
Math-Verify, and they decide integer answers (GSM8K, AIME, AMC) on their own.
"""

from __future__ import annotations

import re
from fractions import Fraction

_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.DOTALL)
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|~")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree")
_PERCENT = re.compile(r"\\?%$")
_CURRENCY = re.compile(r"^\\?\$|^\\\$")
_TRAILING_UNIT = re.compile(r"\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .]*\}$")
_EQ_LHS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!.*=)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUM = r"(?:\d+\.?\d*|\.\d+)"
"""An unsigned integer or decimal: ``3``, ``3.``, ``3.25``, ``.25``."""
_DECIMAL = re.compile(rf"^[+-]?{_NUM}$")
_FRAC = re.compile(rf"^([+-]?)\\[dt]?frac\{{([+-]?{_NUM})\}}\{{([+-]?{_NUM})\}}$")
_SHORT_FRAC = re.compile(r"^([+-]?)\\[dt]?frac(\d)(\d)$")
_SLASH = re.compile(rf"^([+-]?{_NUM})\s*/\s*({_NUM})$")
_SCI = re.compile(
    rf"^([+-]?)(?:({_NUM})\s*(?:\\times|\\cdot|\*)\s*)?10\^\{{?([+-]?\d{{1,3}})\}}?$"
)
"""``a \\times 10^{k}`` and a bare power of ten ``10^{k}`` (with an optional sign)."""
_E_NOTATION = re.compile(rf"^([+-]?{_NUM})[eE]([+-]?\d{{1,3}})$")
"""Scientific notation as programs print it (``7.5e7``, ``2.88e-19``): common in physics data."""

MAX_DIGITS = 400
"""Numbers with more digits than this are not read (they go to Math-Verify's slow path)."""


def strip_decorations(answer: str) -> str:
    """Drop formatting that never changes an answer's value: spacing, ``\\left``, ``$``, dots."""
    s = answer.strip()
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub(" ", s)
    s = s.strip().strip("$").strip()
    while True:
        inner = _WRAPPERS.match(s)
        if not inner:
            break
        s = inner.group(1).strip()
    s = s.rstrip(".").strip()
    return re.sub(r"\s+", " ", s)


def canonical_string(answer: str) -> str:
    """A string form for exact comparison: decorations, units, %, degrees, ``x =`` dropped."""
    s = strip_decorations(answer)
    s = _TRAILING_UNIT.sub("", s)
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = _CURRENCY.sub("", s)
    s = _EQ_LHS.sub("", s)
    return s.replace(" ", "").replace("{,}", ",")


def as_number(answer: str) -> Fraction | None:
    """The exact value of an integer, decimal, simple fraction or ``a \\times 10^k``, else None."""
    s = canonical_string(answer)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if len(s) > MAX_DIGITS:
        return None
    if _DECIMAL.match(s):
        return Fraction(s)
    frac = _FRAC.match(s) or _SHORT_FRAC.match(s)
    if frac:
        sign, num, den = frac.groups()
        if Fraction(den) == 0:
            return None
        value = Fraction(num) / Fraction(den)
        return -value if sign == "-" else value
    slash = _SLASH.match(s)
    if slash and Fraction(slash.group(2)) != 0:
        return Fraction(slash.group(1)) / Fraction(slash.group(2))
    sci = _SCI.match(s)
    if sci:
        sign, mantissa, exponent = sci.groups()
        value = Fraction(mantissa or 1) * Fraction(10) ** int(exponent)
        return -value if sign == "-" else value
    sci = _E_NOTATION.match(s)
    if sci:
        return Fraction(sci.group(1)) * Fraction(10) ** int(sci.group(2))
    return None


def numbers_equal(a: Fraction, b: Fraction, rel_tol: float = 1e-6) -> bool:
    """Exact equality, or agreement to ``rel_tol`` (a decimal rounding of the same value).

    Two integers must be equal exactly (a count is never approximately right). Otherwise the
    tolerance is relative to the larger magnitude: an absolute floor would make every pair
    of small values (``2.88e-19`` and ``1.3e-27``) equal.
    """
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False
    return abs(a - b) <= Fraction(str(rel_tol)) * max(abs(a), abs(b))


def brace_depth(text: str) -> int:
    """Deepest nesting of ``{``/``(``/``[`` in ``text``."""
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth = max(0, depth - 1)
    return deepest
