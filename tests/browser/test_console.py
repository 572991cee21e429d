"""The job console and the API docs in a real headless Chromium (Debian's ``chromium``,
driven by Playwright), against a real rewriter app, Redis and scripted workers: a running
job's progress moves, a finished job's counts show, nothing shows without the key, and
``/docs`` and ``/redoc`` render with the network cut off.

``MINDGAP_UPDATE_SCREENSHOTS=1`` also writes docs/console-jobs.png and docs/console-job.png.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mindgap.rewriter.engines.base import Sample
from tests.conftest import ROOT, Service
from tests.integration.test_service_ops import AUTH, RoundEngine, running_worker
from tests.integration.test_service_ops import queue as queue  # the fixtures
from tests.integration.test_service_ops import service as service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it)")]

KEY = "test-key"


class ConsoleEngine(RoundEngine):
    """``RoundEngine``, plus: a ``POISON`` question raises, a ``GUIDED`` one is solved only
    with the reference shown, a ``NEVER`` one never; log-probs vary per problem."""

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        if any("POISON" in p for p in prompts):
            raise RuntimeError("the scripted engine refuses a POISON prompt")
        out = super().generate(prompts, n, temperature, top_p, max_tokens, seed)
        return [[self._shaped(prompt, s) for s in samples]
                for prompt, samples in zip(prompts, out, strict=True)]

    @staticmethod
    def _shaped(prompt: str, sample: Sample) -> Sample:
        answer = prompt.split("ANSWER=")[1].split()[0]
        text = sample.text
        if "NEVER" in prompt or ("GUIDED" in prompt and "It is" not in prompt):
            text = "so \\boxed{wrong}"
        elif "GUIDED" in prompt:
            half = int(answer) // 2
            text = f"Twice {half}: {half} + {half} = {answer}, so \\boxed{{{answer}}}"
        level = -(0.05 + (zlib.crc32(prompt.encode()) % 97) / 120)
        return Sample(text, [ord(c) for c in text], [level] * len(text), "stop")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium whose DNS resolves nothing but 127.0.0.1 (no network)."""
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that may reach 127.0.0.1 only; other requests fail and are listed in
    ``page.outside``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.outside = []

    def gate(route: Any) -> None:
        if re.match(r"^https?://127\.0\.0\.1[:/]", route.request.url):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    yield page
    context.close()


def sign_in(page: Any, url: str) -> None:
    page.goto(f"{url}/ui")
    page.fill("#api-key", KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("#queue")


def post_job(service: Service, items: list[dict[str, Any]], **options: Any) -> str:
    reply = httpx.post(f"{service.url}/v1/jobs", headers=AUTH, timeout=30,
                       json={"items": items, "options": options})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["job_id"])


def mixed_problems() -> list[dict[str, Any]]:
    """Solved alone at once or after a round, solved with the reference, never, poisoned."""
    rows = [("s0", "AT=0"), ("s1", "AT=1"), ("s2", "AT=0"), ("g0", "AT=9 GUIDED"),
            ("g1", "AT=9 GUIDED"), ("e0", "NEVER"), ("x0", "POISON")]
    return [{"id": pid, "question": f"How much is {i} + {i}? ANSWER={2 * i} {tags}",
             "solution": f"It is {i} + {i} = {2 * i}.\n#### {2 * i}"}
            for i, (pid, tags) in enumerate(rows)]


def shot(page: Any, name: str, tmp_path: Path) -> None:
    """A full-page screenshot (into docs/ with MINDGAP_UPDATE_SCREENSHOTS=1)."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("MINDGAP_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, ROOT / "docs" / name)


def test_console_refuses_without_the_key(page: Any, service: Service, prefix: str) -> None:
    job_id = post_job(service, [{"id": "p0", "question": "1+1? ANSWER=2",
                                 "solution": "#### 2"}])
    for path in ("/ui", f"/ui/jobs/{job_id}"):
        answer = page.goto(f"{service.url}{path}")
        assert answer.status == 401
        assert page.is_visible("#api-key") and job_id not in page.content()
    page.fill("#api-key", "wrong-key")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error", state="visible")
    assert page.context.cookies() == []
    sign_in(page, service.url)
    assert KEY not in page.url and page.is_visible(f"tr[data-job='{job_id}']")
    cookie, = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and KEY not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # out of reach of scripts
    page.click("#logout")
    page.wait_for_selector("#api-key")
    assert page.goto(f"{service.url}/ui").status == 401


def progress_of(page: Any) -> tuple[str, float] | None:
    """The job page's (status, progress %), or None while it reloads."""
    try:
        status = page.text_content("#status", timeout=1000)
        text = page.text_content("#progress", timeout=1000)
    except playwright_api.Error:
        return None
    return (status or "").strip(), float((text or "0").strip().rstrip("%"))


def test_running_job_progress_moves(page: Any, service: Service, prefix: str,
                                    tmp_path: Path) -> None:
    items = [{"id": f"r{i}", "question": f"Sum {i}? ANSWER={i} AT={i}",
              "solution": f"It is {i}.\n#### {i}"} for i in range(4)]
    with running_worker(prefix, delay_s=2.5):
        sign_in(page, service.url)
        job_id = post_job(service, items, k_self=4, k_guided=0)
        page.goto(f"{service.url}/ui/jobs/{job_id}")
        seen: list[tuple[str, float]] = []
        deadline = time.monotonic() + 60
        while not seen or seen[-1][0] != "completed":
            assert time.monotonic() < deadline, seen
            if (now := progress_of(page)) is not None and now not in seen[-1:]:
                seen.append(now)
            time.sleep(0.3)
        page.goto(f"{service.url}/ui")
        assert page.text_content(f"tr[data-job='{job_id}'] .progress") == "100.0%"
    moving = {value for status, value in seen if status == "running" and 0 < value < 100}
    assert len(moving) >= 2, seen  # it moved while the one batch ran
    assert [v for _, v in seen] == sorted(v for _, v in seen)
    assert page.outside == []


def test_finished_job_page_shows_its_counts(page: Any, service: Service, prefix: str,
                                            tmp_path: Path) -> None:
    with running_worker(prefix, 0.0, batch_size=4, engine=ConsoleEngine(0.05)):
        job_id = post_job(service, mixed_problems(), k_self=2, k_guided=2)
        deadline = time.monotonic() + 60
        while httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=AUTH).json()[
                "finished"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    with running_worker(prefix, delay_s=3.0, name="w1"):  # another job, mid-batch
        later = post_job(service, [{"id": f"later{i}", "question": f"ANSWER={i} AT={i}",
                                    "solution": f"#### {i}"} for i in range(4)], k_self=4)
        while httpx.get(f"{service.url}/v1/jobs/{later}", headers=AUTH).json()["done"] < 1:
            assert time.monotonic() < deadline + 30
            time.sleep(0.2)
        sign_in(page, service.url)
        assert page.text_content(f"tr[data-job='{later}'] .status") == "running"
        assert page.text_content("#live-workers") == "1"
        shot(page, "console-jobs.png", tmp_path)
        httpx.delete(f"{service.url}/v1/jobs/{later}", headers=AUTH)
    page.goto(f"{service.url}/ui/jobs/{job_id}")
    counts = {name: page.text_content(f"#count-{name}")
              for name in ("self", "guided", "expert", "failed")}
    assert counts == {"self": "3", "guided": "2", "expert": "1", "failed": "1"}
    assert page.text_content("#status") == "completed_with_failures"
    assert "POISON" in page.text_content("#dead") and "RuntimeError" in (
        page.text_content("#dead") or "")
    assert page.locator("#gap-histogram rect").count() >= 2
    assert page.locator("#sample tr").count() == 5  # header + 4 kept responses
    assert "It is 0 + 0 = 0." in (page.text_content("#sample") or "")
    shot(page, "console-job.png", tmp_path)
    assert page.outside == []


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".swagger-ui .opblock"),
                                             ("/redoc", "[data-section-id]")])
def test_api_docs_render_offline(page: Any, service: Service, path: str, ready: str) -> None:
    answer = page.goto(f"{service.url}{path}")
    assert answer.status == 200
    page.wait_for_selector(ready, timeout=30_000)
    text = page.text_content("body") or ""
    assert "/v1/rewrite" in text and "/rewrite" in text
    # Nothing else was asked of the outside: ReDoc's "API docs by Redocly" footer logo is
    # an <img> hard-wired to its CDN that hides itself when it fails to load.
    assert set(page.outside) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
