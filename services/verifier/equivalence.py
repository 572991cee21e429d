"""Is an extracted answer equal to the reference? Fast exact rules, then Math-Verify.

Rules in order: a list against one number (never equal: ``45, 120`` is not ``45120``), the
same normal form, the same number, a decimal comma (``3,25`` is 3.25), lists and sets item
by item in any order, then Math-Verify (symbolic forms, expressions to evaluate). A solution
set stated in several boxes is compared with the reference's items in any order, or in
order when the reference is a tuple.

Only LaTeX parsing (ANTLR, via latex2sympy2_extended) is used: Math-Verify's plain
expression parser calls sympy's ``parse_expr`` (``eval``) and is never enabled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mindgap.verifier.answer_set import distinct, same_items, split_items, tuple_items
from mindgap.verifier.normalize import (
    as_number,
    canonical_relations,
    canonical_string,
    decimal_comma_value,
    number_of_form,
    numbers_equal,
)

logging.getLogger("math_verify").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Verdict:
    """Whether two answers are equal, and the rule that decided it."""

    equal: bool
    rule: str


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Any, Any, list[Any]]:
    from math_verify import LatexExtractionConfig, parse, verify

    return parse, verify, [LatexExtractionConfig(boxed_match_priority=0)]


def _parse(answer: str) -> list[Any]:
    parse, _, config = _math_verify()
    # Timeouts are enforced by the sandbox (deadline signal + parent kill), not here.
    return parse("\\boxed{" + canonical_relations(answer) + "}", extraction_config=config,
                 parsing_timeout=None)


def _symbolic(extracted: str, reference: str) -> Verdict:
    """Math-Verify's verdict on the two answers as LaTeX."""
    _, verify, _ = _math_verify()
    gold, target = _parse(reference), _parse(extracted)
    if not gold or not target:
        return Verdict(False, "math-verify: unparsed " + ("reference" if not gold else "answer"))
    equal = bool(verify(gold, target, timeout_seconds=None))
    return Verdict(equal, "math-verify: " + ("equal" if equal else "not equal"))


def _has_percent(answer: str) -> bool:
    return answer.rstrip().endswith("%")


def _numeric(extracted: str, reference: str, forms: tuple[str, str]) -> Verdict | None:
    """The verdict of the number rules (exact value, then decimal comma), or None;
    ``forms`` are the answers' canonical strings."""
    if _has_percent(extracted) or _has_percent(reference):
        return None
    a, b = number_of_form(forms[0]), number_of_form(forms[1])
    if a is not None and b is not None:
        return Verdict(numbers_equal(a, b), "numbers")
    if a is None and b is None:
        return None  # a decimal comma is read only against a number
    a = a if a is not None else decimal_comma_value(extracted)
    b = b if b is not None else decimal_comma_value(reference)
    if a is not None and b is not None:
        return Verdict(numbers_equal(a, b), "numbers (decimal comma)")
    return None


def _list_against_number(ours: list[str], theirs: list[str], extracted: str,
                         reference: str) -> Verdict | None:
    """Not equal when one side lists several items and the other is one number."""
    if len(ours) == len(theirs) or 1 not in (len(ours), len(theirs)):
        return None
    single, listed = (extracted, reference) if len(ours) == 1 else (reference, extracted)
    if as_number(single) is None or decimal_comma_value(listed) is not None:
        return None
    return Verdict(False, f"a list of {max(len(ours), len(theirs))} items is not one number")


def _one(extracted: str, reference: str) -> Verdict:
    """Compare two answers, each a single answer or a list written in one piece."""
    if extracted.strip() == reference.strip():
        return Verdict(True, "identical")
    forms = canonical_string(extracted), canonical_string(reference)
    if "," in forms[0] or "," in forms[1]:
        return _listed(extracted, reference, forms)
    if forms[0] == forms[1]:
        return Verdict(True, "same normal form")
    return _numeric(extracted, reference, forms) or _symbolic(extracted, reference)


def _listed(extracted: str, reference: str, forms: tuple[str, str]) -> Verdict:
    """Compare answers of which one at least has a comma (a list, a thousands separator or
    a decimal comma); ``forms`` are their canonical strings."""
    ours, theirs = split_items(extracted), split_items(reference)
    verdict = _list_against_number(ours, theirs, extracted, reference)
    if verdict is not None:
        return verdict
    if forms[0] == forms[1]:
        return Verdict(True, "same normal form")
    verdict = _numeric(extracted, reference, forms)
    if verdict is not None:
        return verdict
    if len(ours) == len(theirs) > 1 and same_items(ours, theirs, _equal, ordered=False):
        return Verdict(True, f"sets of {len(ours)} items")
    return _symbolic(extracted, reference)


def _equal(extracted: str, reference: str) -> bool:
    return _one(extracted, reference).equal


def _items(parts: Sequence[str], text: str, ordered: bool) -> list[str]:
    """One side's items: its boxes, else its tuple's components (when order matters) or
    its list's items."""
    if parts:
        return list(parts)
    components = tuple_items(text) if ordered else None
    return components if components is not None else split_items(text)


def _as_tuple(text: str, boxes: Sequence[str]) -> bool:
    """Whether ``text`` is a tuple with one component per box."""
    components = tuple_items(text)
    return components is not None and len(components) == len(boxes)


def _sets(extracted: str, parts: Sequence[str], reference: str,
          reference_parts: Sequence[str]) -> Verdict:
    """A solution set stated in several boxes (on either side) against the other side's
    items: in order when that side is a tuple, else one to one in any order, and then,
    with repeats dropped, as sets (two boxes stating one answer are that answer)."""
    ordered = ((not reference_parts and _as_tuple(reference, parts))
               or (not parts and _as_tuple(extracted, reference_parts)))
    ours = _items(parts, extracted, ordered)
    theirs = _items(reference_parts, reference, ordered)
    how = "in order, as a tuple" if ordered else "in any order"
    if len(ours) == len(theirs) and same_items(ours, theirs, _equal, ordered):
        return Verdict(True, f"{len(ours)} against {len(theirs)} items, {how}")
    if ordered:
        return Verdict(False, f"{len(ours)} against {len(theirs)} items, {how}")
    ours, theirs = distinct(ours, _equal), distinct(theirs, _equal)
    if len(ours) == len(theirs) == 1:
        verdict = _one(ours[0], theirs[0])
        return Verdict(verdict.equal, f"boxes stating one answer; {verdict.rule}")
    equal = same_items(ours, theirs, _equal, ordered=False)
    return Verdict(equal, f"sets of {len(ours)} against {len(theirs)} distinct items")


def compare(extracted: str, reference: str, parts: Sequence[str] = (),
            reference_parts: Sequence[str] = ()) -> Verdict:
    """Whether ``extracted`` states ``reference``; ``parts`` and ``reference_parts`` are the
    boxes of a solution set stated in several."""
    if len(parts) > 1 or len(reference_parts) > 1:
        return _sets(extracted, parts if len(parts) > 1 else (), reference,
                     reference_parts if len(reference_parts) > 1 else ())
    return _one(extracted, reference)


def answers_equal(extracted: str, reference: str) -> bool:
    """True when ``extracted`` states the same answer as ``reference``."""
    return compare(extracted, reference).equal


def warm_up() -> None:
    """Import and exercise the parsers once so the first real item is fast."""
    answers_equal("\\frac{1}{2}", "0.5")
    answers_equal("x^2+1", "1+x^2")
