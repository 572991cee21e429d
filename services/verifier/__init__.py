"""The sandboxed math verifier: answer extraction, equivalence, a process pool, a client.

``verify(response, reference)`` is the convenient entry point; ``LocalVerifier`` (a pool)
and ``VerifierClient`` (HTTP) share one interface so callers switch by configuration.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING

from mindgap.schemas import VerifyResult

if TYPE_CHECKING:
    from mindgap.verifier.client import VerifierClient
    from mindgap.verifier.pool import LocalVerifier

__all__ = ["LocalVerifier", "VerifierClient", "default_verifier", "verify"]

_default: LocalVerifier | None = None
_lock = threading.Lock()


def default_verifier() -> LocalVerifier:
    """A process-wide ``LocalVerifier``, started on first use and closed at exit."""
    global _default
    with _lock:
        if _default is None:
            from mindgap.verifier.pool import LocalVerifier

            _default = LocalVerifier()
            atexit.register(_default.close)
        return _default


def verify(response: str, reference: str) -> VerifyResult:
    """Verify one response against a reference (bare answer or full solution), sandboxed."""
    return default_verifier().verify(response, reference)


def __getattr__(name: str) -> object:
    if name == "LocalVerifier":
        from mindgap.verifier.pool import LocalVerifier

        return LocalVerifier
    if name == "VerifierClient":
        from mindgap.verifier.client import VerifierClient

        return VerifierClient
    raise AttributeError(name)
