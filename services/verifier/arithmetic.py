"""The calculations a response shows (``3 + 4 = 7``), read and checked exactly.

Only plain arithmetic on decimal numbers is read: ``+ - * /``, parentheses and ``=`` chains,
after LaTeX and Unicode operators are rewritten (``\\times``, ``\\cdot``, ``×``, ``÷``,
``\\frac{a}{b}``) and thousands separators dropped. A candidate is matched by a regular
expression that admits only digits, operators, parentheses and spaces, parsed by Python's
``ast`` parser and evaluated by walking the tree with exact ``Fraction`` arithmetic: no
``eval``, no names, no powers, and bounded length, so nothing in a response can run code or
take long. What does not parse is not a calculation (never counted against a response).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPRESSION_CHARS = 200
"""Longer candidate expressions are not read (no real step of working is this long)."""
MAX_NUMBER_DIGITS = 30

_OPERATORS = [
    (re.compile(r"\\times|\\cdot|[×·∗]"), "*"),
    (re.compile(r"\\div|÷"), "/"),
    (re.compile(r"[−–]"), "-"),
    (re.compile(r"(?<=\d)\s*[xX]\s*(?=\d)"), "*"),
]
_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*([\d.]+)\s*\}\s*\{\s*([\d.]+)\s*\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LATEX_NOISE = re.compile(r"\\[()\[\]]|\\[,;!]|\\left|\\right|\$|\\text\{[^}]*\}")
_NUMBER = r"\d+(?:\.\d+)?"
_SPACE = r"[ \t]*"  # a calculation stays on one line
_TERM = rf"\(?{_SPACE}-?{_NUMBER}{_SPACE}\)?"
_EXPRESSION = rf"{_TERM}(?:{_SPACE}[-+*/]{_SPACE}{_TERM})*"
_CHAIN = re.compile(rf"(?<![\w.]){_EXPRESSION}(?:{_SPACE}={_SPACE}{_EXPRESSION})+(?![\d.]*\d)")
_STATED_NUMBER = re.compile(rf"(?<![\w.])-?{_NUMBER}(?![\d])")


@dataclass(frozen=True)
class Calculation:
    """One ``=`` chain of a response: its parts as written and their exact values."""

    text: str
    values: tuple[Fraction, ...]
    end: int
    """Where the chain ends in the normalised text."""

    def first_error(self) -> str | None:
        """The first step whose two sides differ (``"3 + 4 = 8, not 7"``), else None."""
        parts = [p.strip() for p in self.text.split("=")]
        for i in range(1, len(parts)):
            left, right = self.values[i - 1], self.values[i]
            if stated_equal(left, parts[i], right) or _continues(parts[i], left):
                continue
            return f"{parts[i - 1]} = {parts[i]}, but {parts[i - 1]} is {_show(left)}"
        return None


def normalise(text: str) -> str:
    """``text`` with operators, fractions and numbers in the one form chains are read in."""
    text = _FRACTION.sub(r"(\1)/(\2)", text)
    for pattern, replacement in _OPERATORS:
        text = pattern.sub(replacement, text)
    text = _THOUSANDS.sub("", text)
    return _LATEX_NOISE.sub(" ", text)


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an arithmetic ``expression``; None when it is not one."""
    expression = expression.strip()
    if len(expression) > MAX_EXPRESSION_CHARS or not re.fullmatch(r"[\d.+\-*/() \t]+",
                                                                  expression):
        return None
    try:
        tree = ast.parse(expression, mode="eval")
        return _value(tree.body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None


def _value(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        literal = str(node.value)
        if len(literal.replace(".", "")) > MAX_NUMBER_DIGITS:
            raise ValueError("number too long")
        return Fraction(literal)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _value(node.operand)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left / right
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def stated_equal(value: Fraction, stated: str, stated_value: Fraction) -> bool:
    """Whether ``stated`` (written as ``stated_value``) states ``value`` at its precision.

    ``7.33`` states 22/3 (two decimals); a whole number states a fraction it truncates or
    rounds (``22 / 3 = 7`` bags, as word problems write), never another whole number.
    """
    if value == stated_value:
        return True
    if not re.fullmatch(rf"\(?\s*-?{_NUMBER}\s*\)?", stated):
        return False
    decimals = len(stated.split(".")[1].rstrip(") ")) if "." in stated else 0
    if decimals == 0:
        return value.denominator != 1 and abs(value - stated_value) < 1
    return abs(value - stated_value) <= Fraction(1, 2 * 10**decimals)


def _continues(part: str, previous: Fraction) -> bool:
    """``3 + 4 = 7 - 2 = 5``: a step that starts from the previous result carries on."""
    head = re.match(rf"\s*\(?\s*({_NUMBER})\s*[-+*/]", part)
    return bool(head) and Fraction(head.group(1)) == previous


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"


def calculations(text: str) -> list[Calculation]:
    """Every ``=`` chain in ``text`` whose parts all evaluate, in order."""
    normal = normalise(text)
    found = []
    for match in _CHAIN.finditer(normal):
        parts = match.group(0).split("=")
        values = [evaluate(part) for part in parts]
        if all(v is not None for v in values) and any(re.search(r"[\d)]\s*[-+*/]", p)
                                                      for p in parts):
            found.append(Calculation(match.group(0).strip(), tuple(values),  # type: ignore[arg-type]
                                     match.end()))
    return found


def stated_numbers(text: str) -> list[Fraction]:
    """The numbers written in ``text`` (after :func:`normalise`), in order."""
    return [Fraction(m.group(0)) for m in _STATED_NUMBER.finditer(normalise(text))]
