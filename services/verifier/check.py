"""One verification, start to finish, as a pure function (it runs inside a sandbox worker)."""

from __future__ import annotations

import time

from mindgap.schemas import VerifyReason, VerifyResult
from mindgap.verifier.equivalence import compare
from mindgap.verifier.extract import extract_answer, reference_extraction
from mindgap.verifier.normalize import brace_depth

MAX_ANSWER_CHARS = 1000
"""Longer extracted answers are rejected as ``too_long`` (no real final answer is this long)."""
MAX_REFERENCE_CHARS = 64 * 1024
"""Longer references are rejected as ``too_long``."""
MAX_NESTING = 60
"""Deeper bracket nesting is rejected as ``parse_error`` before any parser sees it."""


def check(response: str, reference: str) -> VerifyResult:
    """Extract the response's final answer and compare it with the reference's."""
    start = time.perf_counter()

    def result(reason: VerifyReason, extracted: str | None, ref: str,
               truncated: bool = False, detail: str | None = None) -> VerifyResult:
        return VerifyResult(
            correct=reason is VerifyReason.equal, extracted=extracted, reference=ref,
            reason=reason, truncated=truncated, detail=detail,
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )

    if len(reference) > MAX_REFERENCE_CHARS:
        return result(VerifyReason.too_long, None, reference[:200] + "...",
                      detail=f"reference longer than {MAX_REFERENCE_CHARS} characters")
    stated = reference_extraction(reference)
    ref = stated.answer or ""
    found = extract_answer(response)
    if found.answer is None:
        return result(VerifyReason.no_answer, None, ref, found.truncated)
    if len(found.answer) > MAX_ANSWER_CHARS or len(ref) > MAX_ANSWER_CHARS:
        return result(VerifyReason.too_long, found.answer[:200], ref[:200], found.truncated,
                      detail=f"answer longer than {MAX_ANSWER_CHARS} characters")
    if max(brace_depth(found.answer), brace_depth(ref)) > MAX_NESTING:
        return result(VerifyReason.parse_error, found.answer[:200], ref[:200], found.truncated,
                      detail=f"brackets nested deeper than {MAX_NESTING}")
    try:
        verdict = compare(found.answer, ref, found.parts, stated.parts)
    except (RecursionError, MemoryError, ValueError, TypeError, ArithmeticError) as exc:
        return result(VerifyReason.parse_error, found.answer, ref, found.truncated,
                      detail=f"{type(exc).__name__}: {exc}"[:300])
    reason = VerifyReason.equal if verdict.equal else VerifyReason.not_equal
    return result(reason, found.answer, ref, found.truncated,
                  detail=f"{found.method}; {verdict.rule}")
