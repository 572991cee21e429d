"""Scripted stand-ins for unit tests: a verifier that always times out.

The scripted engine itself lives in ``mindgap.rewriter.engines.scripted`` (benchmarks use it).
"""

from __future__ import annotations

from collections.abc import Sequence

from mindgap.schemas import VerifyReason, VerifyRequest, VerifyResult


class TimeoutVerifier:
    """A verifier whose every answer is a timeout."""

    def verify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        return [VerifyResult(correct=False, extracted=None, reference=i.reference,
                             reason=VerifyReason.timeout, elapsed_ms=5000.0) for i in items]
