"""Cheap, safe canonical forms of answers: string normalisation and exact numbers.

Nothing here evaluates text: numbers are read with regular expressions into
``fractions.Fraction``. The verifier uses these forms as a fast path before
Math-Verify, and they decide integer answers (GSM8K, AIME, AMC) on their own.
"""

from __future__ import annotations

import re
from fractions import Fraction

_RELATIONS = {">=": "\\geq ", "≥": "\\geq ", "\\ge": "\\geq ", "\\geq": "\\geq ",
              "\\geqslant": "\\geq ", "<=": "\\leq ", "≤": "\\leq ", "\\le": "\\leq ",
              "\\leq": "\\leq ", "\\leqslant": "\\leq ", "!=": "\\neq ", "≠": "\\neq ",
              "\\ne": "\\neq ", "\\neq": "\\neq ", "\\gt": ">", "\\lt": "<"}
"""Every spelling of a relation, to one LaTeX form: ``>=``/``\\ge``/``≥`` are ``\\geq``."""
_RELATION = re.compile(r">=|<=|!=|[≥≤≠]|\\(?:geqslant|leqslant|geq?|leq?|neq?|gt|lt)(?![a-zA-Z])")
_LATEX_COMMA = re.compile(r"\{,\}\s*|,\\!\s*")
"""``1{,}000`` and ``10,\\!080``: a comma as LaTeX writes it between digits."""
_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.DOTALL)
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|~")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree")
_PERCENT = re.compile(r"\\?%$")
_CURRENCY = re.compile(r"^\\?\$|^\\\$")
_TRAILING_UNIT = re.compile(r"\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .]*\}$")
_EQ_LHS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!.*=)")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
"""A number with thousands separators: a leading group (no leading zero), then groups of
exactly three digits, no spaces."""
_DECIMAL_COMMA = re.compile(r"^([+-]?\d+),(\d+)$")
"""``3,25``: one comma between digits (read as a decimal point only where it is not a
thousands separator, see ``decimal_comma_value``)."""
_NUMBER_LABEL = re.compile(
    r"^([+-]?(?:\d[\d,]*\.?\d*|\.\d+))\s*"
    r"(?:\(\s*([A-Za-z][A-Za-z ]*)\)|([A-Za-z]{2,}(?: [A-Za-z]+)*))$"
)
"""A number followed by a plain-word unit or label: ``16 oranges``, ``9 (apples)``."""
_MATH_WORDS = frozenset({"pi", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln",
                         "exp", "arcsin", "arccos", "arctan", "mod", "or", "and", "times", "cdot"})
"""Words after a number that are mathematics, not a unit (``2 pi`` is not ``2``)."""
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


def canonical_relations(answer: str) -> str:
    """``answer`` with every relation in one spelling (``y >= -1`` is ``y \\geq -1``)."""
    return _RELATION.sub(lambda match: _RELATIONS[match.group(0)], answer)


def strip_decorations(answer: str) -> str:
    """Drop formatting that never changes an answer's value: spacing, ``\\left``, ``$``, dots."""
    s = _LATEX_COMMA.sub(",", answer.strip())
    s = canonical_relations(s)
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
    s = drop_label(_TRAILING_UNIT.sub("", strip_decorations(answer)))
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = _CURRENCY.sub("", s)
    s = _EQ_LHS.sub("", s)
    return s.replace(" ", "")


def drop_label(answer: str) -> str:
    """A number without the plain words after it (``16 oranges``, ``9 (apples)``)."""
    match = _NUMBER_LABEL.match(answer)
    if not match:
        return answer
    words = (match.group(2) or match.group(3)).lower().split()
    return answer if any(word in _MATH_WORDS for word in words) else match.group(1)


def is_thousands(answer: str) -> bool:
    """Whether ``answer`` is one number written with thousands separators (``45,120``)."""
    return bool(_THOUSANDS.match(strip_decorations(answer)))


def decimal_comma_value(answer: str) -> Fraction | None:
    """The value of a number written with a decimal comma (``3,25``, ``0,5``, ``2500,75``).

    A comma is a decimal comma only where it cannot be a thousands separator: the digits
    after it are not a group of three, or those before it are not a leading group (``0``,
    four digits or more). ``1,000`` is a thousand, ``45, 120`` (a space) two numbers.
    """
    s = drop_label(strip_decorations(answer))
    match = _DECIMAL_COMMA.match(s)
    if not match or _THOUSANDS.match(s) or len(s) > MAX_DIGITS:
        return None
    whole, fraction = match.groups()
    return Fraction(f"{whole}.{fraction}")


def as_number(answer: str) -> Fraction | None:
    """The exact value of an integer, decimal, simple fraction or ``a \\times 10^k``, else None."""
    return number_of_form(canonical_string(answer))


def number_of_form(s: str) -> Fraction | None:
    """``as_number`` of an answer already in its ``canonical_string`` form."""
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
