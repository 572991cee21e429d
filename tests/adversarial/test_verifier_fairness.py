"""The verifier under clients that leave, flood it, or send inputs that hit the deadline
(issue 10, defects 4, 5 and the verifier parts of 13)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mindgap.schemas import VerifyReason, VerifyRequest
from mindgap.verifier.client import VerifierClient, VerifierError
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import ROOT, Service, serving_verifier

TIMEOUT_S = 2.0
MAX_QUEUED = 8
POWER_TOWER = VerifyRequest(response="\\boxed{9^{9^{9^{9}}}}", reference="2")
"""Hits the timeout (a C-level big-integer power: only the parent's kill stops it)."""
SLOW_ALGEBRA = VerifyRequest(response="\\boxed{(x+1)^{40}(y+2)^{40}}",
                             reference="(x+2)^{40}(y+1)^{40}")
"""Hits the timeout in Python code (the worker's own deadline answers it)."""
NORMAL = VerifyRequest(response="\\boxed{12}", reference="12")


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """A real verifier service: 1 worker, 2 s timeout, 8 items queued per client, no key."""
    env = {**os.environ, "MINDGAP_VERIFIER_TIMEOUT_S": str(TIMEOUT_S),
           "MINDGAP_VERIFIER_MAX_QUEUED_PER_CLIENT": str(MAX_QUEUED)}
    env.pop("MINDGAP_API_KEY", None)
    with serving_verifier(env, workers=1) as svc:
        yield svc


def _batch(items: list[VerifyRequest]) -> dict[str, object]:
    return {"items": [item.model_dump() for item in items]}


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def _timed_verify(url: str) -> float:
    start = time.monotonic()
    reply = httpx.post(f"{url}/v1/verify", json=NORMAL.model_dump(), timeout=30)
    assert reply.status_code == 200 and reply.json()["correct"]
    return time.monotonic() - start


def test_a_client_that_leaves_has_its_work_cancelled(service: Service) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{service.url}/v1/verify/batch", json=_batch([POWER_TOWER] * 4),
                   timeout=0.5)
    # Before: the single worker went on through 4 abandoned timeouts (about 9 s) first.
    assert _timed_verify(service.url) < 1.5
    metrics = httpx.get(f"{service.url}/metrics").text
    assert _metric(metrics, "mindgap_verifier_cancelled_total") >= 2


def test_a_slow_submission_does_not_hold_up_the_next() -> None:
    with LocalVerifier(workers=1, timeout_s=TIMEOUT_S) as pool:
        pool.verify_batch([NORMAL])
        slow = threading.Thread(target=pool.verify_batch, args=([POWER_TOWER] * 4,))
        slow.start()
        time.sleep(0.1)
        start = time.monotonic()
        assert pool.verify(NORMAL.response, NORMAL.reference).correct
        assert time.monotonic() - start < 1.0  # before: behind the 4 timeouts, over 8 s
        slow.join()


def test_each_client_has_a_bounded_queue(service: Service) -> None:
    too_many = httpx.post(f"{service.url}/v1/verify/batch", json=_batch([NORMAL] * 9))
    assert too_many.status_code == 429
    assert int(too_many.headers["retry-after"]) >= 1
    assert "queued" in too_many.json()["detail"]
    assert httpx.post(f"{service.url}/v1/verify/batch",
                      json=_batch([NORMAL] * MAX_QUEUED)).status_code == 200

    def hold() -> None:
        httpx.post(f"{service.url}/v1/verify/batch", json=_batch([POWER_TOWER] * 6),
                   timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    crowded = httpx.post(f"{service.url}/v1/verify/batch", json=_batch([NORMAL] * 3))
    fits = httpx.post(f"{service.url}/v1/verify/batch", json=_batch([NORMAL] * 2))
    holder.join()
    assert (crowded.status_code, fits.status_code) == (429, 200)


def test_client_retries_resend_only_unanswered_items() -> None:
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        sent.append([item["response"] for item in items])
        if len(sent) == 1 or ("bad" in sent[-1] and len(sent) < 5):
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"results": [
            {"correct": True, "extracted": r, "reference": r, "reason": "equal",
             "elapsed_ms": 1.0} for r in sent[-1]]})

    client = VerifierClient("http://verifier", retries=4, backoff_s=0.001)
    client._client = httpx.Client(base_url="http://verifier",
                                  transport=httpx.MockTransport(handler))
    items = [VerifyRequest(response=r, reference=r) for r in ("good", "bad")]
    results = client.verify_batch(items)
    assert [r.extracted for r in results] == ["good", "bad"]
    # The answered item is not sent again (before: with every retry of the whole batch).
    assert sum(batch.count("good") for batch in sent) == 2, sent

    sent.clear()
    client._client = httpx.Client(base_url="http://verifier", transport=httpx.MockTransport(
        lambda request: httpx.Response(429, headers={"Retry-After": "0"})))
    with pytest.raises(VerifierError, match="after 5 tries"):
        client.verify_batch(items)


def test_an_answer_never_takes_more_than_timeout_plus_one_second() -> None:
    """The CPU backstop (or anything else) killing a worker mid-item must not restart the
    item's clock: its retry only gets what is left of its deadline."""
    with LocalVerifier(workers=1, timeout_s=1.0) as pool:
        pool.verify_batch([NORMAL])
        start = time.monotonic()
        slow = pool.submit(POWER_TOWER)
        time.sleep(0.6)
        for pid in pool.busy_pids():
            os.kill(pid, signal.SIGXCPU)
        result = slow.result(timeout=30)
        assert result.reason is VerifyReason.timeout
        assert time.monotonic() - start < 1.0 + 1.0


def test_cpu_backstop_is_far_behind_the_deadline() -> None:
    from mindgap.verifier.sandbox import _arm

    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        import resource

        _arm(5.0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
        os._exit(0 if soft - (used.ru_utime + used.ru_stime) >= 3 * 5.0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_metrics_count_retried_timeouts_live_workers_and_kills_are_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    from mindgap.verifier.app import create_app

    caplog.set_level(logging.WARNING, logger="mindgap.verifier.pool")
    with LocalVerifier(workers=1, timeout_s=TIMEOUT_S) as pool, \
            TestClient(create_app(pool=pool)) as http:
        pool.verify_batch([NORMAL])
        slow = pool.submit(SLOW_ALGEBRA)
        time.sleep(0.5)
        killed = pool.busy_pids()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        # Retried once on a fresh worker, which answers ``timeout`` itself: still counted.
        assert slow.result(timeout=30).reason is VerifyReason.timeout
        assert pool.stats.timeouts == 1 and pool.stats.retries == 1
        assert any("killed and replaced" in r.getMessage() and "died" in r.getMessage()
                   for r in caplog.records)
        for pid in pool.worker_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        metrics = http.get("/metrics").text
        live = sum(Path(f"/proc/{pid}").exists() and _running(pid)
                   for pid in {*killed, *pool.worker_pids()})
        assert _metric(metrics, "mindgap_verifier_workers") == live
        assert _metric(metrics, "mindgap_verifier_timeouts_total") == 1
        assert _metric(metrics, "mindgap_verifier_retries_total") == 1


def _running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _number_tokens() -> list[str]:
    """The strings ``sympy.Number`` receives while adversarial answers are parsed (run in a
    child process: the patched parse leaves parser caches that later parses would reuse)."""
    import sympy
    from latex2sympy2_extended import latex2sympy2

    from mindgap.verifier.equivalence import _parse

    seen: list[str] = []
    number = sympy.Number

    def spy(*args: object) -> object:
        seen.extend(a for a in args if isinstance(a, str))
        return number(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sympy, "Number", spy)
        patch.setattr(latex2sympy2, "Number", spy)
        for text in ("1,000.5", "0x1F", "1e5", "__import__('os')", "1_0", "１２", "3\\%"):
            _parse(text)
    return seen


def test_readme_says_what_reaches_sympify() -> None:
    """``latex2sympy2_extended`` hands number tokens to ``sympy.Number`` (which sympifies
    them): they are plain ASCII decimals, and the README says so."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        seen = child.submit(_number_tokens).result()
    assert seen and all(re.fullmatch(r"[0-9]*\.?[0-9]*", s) for s in seen), seen
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "never reaches `eval`, `sympify` or `parse_expr`" not in readme
    assert "sympy.Number" in readme
