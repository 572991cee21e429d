"""The sandboxed pool: pathological inputs, killed workers, no network, no code execution."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mindgap.schemas import VerifyReason, VerifyRequest
from mindgap.verifier.pool import LocalVerifier

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=2, timeout_s=TIMEOUT_S) as verifier:
        verifier.verify_batch([VerifyRequest(response="\\boxed{1}", reference="1")] * 4)
        yield verifier


def _timed(pool: LocalVerifier, response: str, reference: str) -> tuple[float, object]:
    start = time.monotonic()
    result = pool.verify(response, reference)
    return time.monotonic() - start, result


NESTED_FRAC = "\\frac{1}{" * 500 + "2" + "}" * 500

PATHOLOGICAL = [
    pytest.param("\\boxed{9^{9^{9^{9}}}}", "5", VerifyReason.timeout, id="power-tower-response"),
    pytest.param("\\boxed{5}", "9^{9^{9^{9}}}", VerifyReason.timeout, id="power-tower-reference"),
    pytest.param("\\boxed{(10^{10})!}", "5", VerifyReason.timeout, id="huge-factorial"),
    pytest.param("x" * (1 << 20), "5", VerifyReason.no_answer, id="1MiB-no-answer"),
    pytest.param("\\boxed{" + "1" * 5000 + "}", "5", VerifyReason.no_answer,
                 id="boxed-longer-than-tail"),
    pytest.param("\\boxed{" + "1+" * 900 + "1}", "5", VerifyReason.too_long, id="long-answer"),
    pytest.param("\\boxed{" + NESTED_FRAC + "}", "5", VerifyReason.no_answer,
                 id="500-nested-frac-response"),
    pytest.param("\\boxed{5}", "\\boxed{" + NESTED_FRAC + "}", VerifyReason.too_long,
                 id="500-nested-frac-reference"),
    pytest.param("\\boxed{5}", "\\frac{1}{" * 80 + "2" + "}" * 80, VerifyReason.parse_error,
                 id="80-nested-frac-reference"),
    pytest.param("\\boxed{" + "\\frac{1}{" * 80 + "2" + "}" * 80 + "}", "5",
                 VerifyReason.parse_error, id="80-nested-frac-response"),
    pytest.param("\\boxed{5}", "y" * (70 * 1024), VerifyReason.too_long, id="huge-reference"),
]


@pytest.mark.parametrize(("response", "reference", "reason"), PATHOLOGICAL)
def test_pathological_inputs_finish_in_time(pool: LocalVerifier, response: str, reference: str,
                                            reason: VerifyReason) -> None:
    elapsed, result = _timed(pool, response, reference)
    assert result.reason is reason, result
    assert result.correct is False
    assert elapsed < TIMEOUT_S + 1.0, f"took {elapsed:.2f} s"
    # The pool keeps serving afterwards.
    assert pool.verify("\\boxed{12}", "12").correct


def test_one_mebibyte_with_answer_at_the_end(pool: LocalVerifier) -> None:
    result = pool.verify("z" * (1 << 20) + " so the answer is \\boxed{7}", "7")
    assert result.correct and result.truncated


@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {marker}')",
    "\\boxed{__import__('os').system('touch {marker}')}",
    "The answer is __import__('os').system('touch {marker}')",
    "\\boxed{eval(\"__import__('os').system('touch {marker}')\")}",
    "#### exec(\"import os; os.system('touch {marker}')\")",
])
def test_injection_strings_run_nothing(pool: LocalVerifier, tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    text = payload.replace("{marker}", str(marker))
    for response, reference in ((text, "5"), ("\\boxed{5}", text), (text, text)):
        result = pool.verify(response, reference)
        assert result.reason is not VerifyReason.error
    assert not marker.exists()
    assert not Path("/tmp/x").exists()


def test_killed_worker_is_replaced_and_item_retried() -> None:
    with LocalVerifier(workers=1, timeout_s=4.0) as pool:
        assert pool.verify("\\boxed{1}", "1").correct
        slow = pool.submit(VerifyRequest(response="\\boxed{9^{9^{9^{9}}}}", reference="2"))
        time.sleep(0.5)  # the worker is busy on the power tower now (the spares are idle)
        (pid,) = pool.busy_pids()
        os.kill(pid, signal.SIGKILL)
        result = slow.result(timeout=20)
        # The item was retried once on a fresh worker (and timed out there, as it should).
        assert result.reason is VerifyReason.timeout
        assert pool.stats.restarts >= 1
        assert pool.worker_pids() and pid not in pool.worker_pids()
        assert pool.verify("\\boxed{\\frac{1}{2}}", "0.5").correct


def test_item_errors_when_worker_dies_twice() -> None:
    with LocalVerifier(workers=1, timeout_s=8.0) as pool:
        assert pool.verify("\\boxed{1}", "1").correct
        slow = pool.submit(VerifyRequest(response="\\boxed{9^{9^{9^{9}}}}", reference="2"))
        killed: set[int] = set()
        deadline = time.monotonic() + 15
        while len(killed) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            for pid in pool.busy_pids():
                if pid not in killed:
                    time.sleep(1.0)  # let the retry reach the new worker
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
        result = slow.result(timeout=30)
        assert result.reason is VerifyReason.error, result
        assert "died twice" in (result.detail or "")
        assert pool.verify("\\boxed{3}", "3").correct


def test_workers_have_no_network_and_limits() -> None:
    from mindgap.verifier.sandbox import SandboxLimits, _apply_limits, _isolate_network

    # Checked in a throwaway child: the same set-up the workers run.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        import resource
        import socket

        code = 0
        if _isolate_network():
            try:
                socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
                code = 3
            except OSError:
                pass
        _apply_limits(SandboxLimits(memory_mb=512))
        if resource.getrlimit(resource.RLIMIT_AS)[0] != 512 * 1024 * 1024:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_batch_keeps_order(pool: LocalVerifier) -> None:
    items = [VerifyRequest(response=f"\\boxed{{{i}}}", reference=str(i if i % 3 else i + 1))
             for i in range(60)]
    results = pool.verify_batch(items)
    assert [r.correct for r in results] == [bool(i % 3) for i in range(60)]
    assert [r.extracted for r in results] == [str(i) for i in range(60)]
