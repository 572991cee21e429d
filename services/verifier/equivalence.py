"""Is an extracted answer equal to the reference? Fast exact rules, then Math-Verify.

Only LaTeX parsing (ANTLR, via latex2sympy2_extended) is used: Math-Verify's plain
expression parser calls sympy's ``parse_expr`` (``eval``) and is never enabled.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from mindgap.verifier.normalize import as_number, canonical_string, numbers_equal

logging.getLogger("math_verify").setLevel(logging.ERROR)


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Any, Any, list[Any]]:
    from math_verify import LatexExtractionConfig, parse, verify

    return parse, verify, [LatexExtractionConfig(boxed_match_priority=0)]


def _parse(answer: str) -> list[Any]:
    parse, _, config = _math_verify()
    # Timeouts are enforced by the sandbox (deadline signal + parent kill), not here.
    return parse("\\boxed{" + answer + "}", extraction_config=config, parsing_timeout=None)


def _has_percent(answer: str) -> bool:
    return answer.rstrip().endswith("%")


def answers_equal(extracted: str, reference: str) -> bool:
    """True when ``extracted`` states the same answer as ``reference``."""
    if canonical_string(extracted) == canonical_string(reference):
        return True
    if not (_has_percent(extracted) or _has_percent(reference)):
        a, b = as_number(extracted), as_number(reference)
        if a is not None and b is not None:
            return numbers_equal(a, b)
    _, verify, _ = _math_verify()
    gold, target = _parse(reference), _parse(extracted)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))


def warm_up() -> None:
    """Import and exercise the parsers once so the first real item is fast."""
    answers_equal("\\frac{1}{2}", "0.5")
    answers_equal("x^2+1", "1+x^2")
