"""The sandboxed worker process: resource limits, no network, a deadline per item.

Run as ``python -m mindgap.verifier.sandbox READ_FD WRITE_FD MEMORY_MB`` by the pool.
Messages are JSON (never pickle, so a subverted worker cannot run code in the parent).
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from mindgap.schemas import VerifyReason, VerifyResult
from mindgap.verifier.channel import Channel
from mindgap.verifier.check import check
from mindgap.verifier.equivalence import warm_up

CUT = "cut"
"""The parent's message asking a worker to skip the rest of its chunk."""
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class SandboxLimits:
    """Limits applied to every worker process."""

    memory_mb: int = 2048
    max_open_files: int = 64


class Deadline(BaseException):
    """Raised in a worker when an item's time is up (a BaseException, so parsers can't swallow it).
    """


def _isolate_network() -> bool:
    """Move into an empty network namespace; False where the kernel does not permit it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True
    return False


def _apply_limits(limits: SandboxLimits) -> None:
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))


_armed = False
"""Whether an item is running (a deadline signal between items is ignored)."""


def _raise_deadline(signum: int, frame: Any) -> None:
    if _armed:
        raise Deadline


CPU_BACKSTOP_FACTOR = 4
CPU_BACKSTOP_S = 30
"""The CPU rlimit is set ``FACTOR * timeout + S`` seconds past the CPU used so far: a
backstop only, far behind the wall-clock deadline the parent enforces."""


def _arm(timeout_s: float) -> None:
    """Interrupt Python code after ``timeout_s``; a CPU limit far behind it as a backstop."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_now = math.ceil(used.ru_utime + used.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = cpu_now + CPU_BACKSTOP_FACTOR * math.ceil(timeout_s) + CPU_BACKSTOP_S
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    signal.setitimer(signal.ITIMER_REAL, timeout_s)


def _timed_out(reference: str, timeout_s: float, start: float) -> dict[str, Any]:
    return VerifyResult(
        correct=False, extracted=None, reference=reference[:200], reason=VerifyReason.timeout,
        elapsed_ms=(time.perf_counter() - start) * 1000, detail=f"over {timeout_s:g} s",
    ).model_dump(mode="json")


def _verify_one(response: str, reference: str, timeout_s: float) -> dict[str, Any]:
    """One item's result; the deadline signal (the timer, or the parent cancelling the item
    early) makes it ``timeout``."""
    global _armed
    start = time.perf_counter()
    try:
        _arm(timeout_s)
        _armed = True
        try:
            return check(response, reference).model_dump(mode="json")
        finally:
            _armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Deadline:  # also when the signal came between the check and its disarming
        return _timed_out(reference, timeout_s, start)


def _answer_chunk(channel: Channel, items: list[list[str]], timeout_s: float) -> None:
    """One result message per item as soon as it is ready; a ``CUT`` from the parent ends
    the chunk early, answered ``{"cut": index of the first item skipped}``."""
    for index, (response, reference) in enumerate(items):
        if index and channel.poll(0):
            channel.recv()  # the parent sends nothing but CUT while a chunk runs
            channel.send({"cut": index})
            return
        channel.send(_verify_one(response, reference, timeout_s))


def worker_main(channel: Channel, limits: SandboxLimits) -> None:
    """Set up the sandbox, then answer ``[[[response, reference], ...], timeout]`` messages
    (see ``_answer_chunk``) until the pipe closes."""
    isolated = _isolate_network()
    _apply_limits(limits)
    signal.signal(signal.SIGALRM, _raise_deadline)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up()
    try:
        channel.send({"ready": True, "pid": os.getpid(), "isolated": isolated})
        while True:
            message = channel.recv()
            if message == CUT:  # it arrived after its chunk had ended
                channel.send({"cut": None})
            else:
                _answer_chunk(channel, *message)
    except (EOFError, OSError):  # the parent closed the pipes: it no longer needs us
        return


if __name__ == "__main__":
    read_fd, write_fd, memory_mb = (int(arg) for arg in sys.argv[1:4])
    worker_main(Channel(read_fd, write_fd), SandboxLimits(memory_mb=memory_mb))
