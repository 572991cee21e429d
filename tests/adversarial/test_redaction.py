"""Defect 7: secrets (URL passwords, bearer and API keys) never reach a log line or the
worker's start-up line."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from mindgap import redact
from mindgap.cli import app
from mindgap.rewriter.worker import Worker, WorkerStats

SECRET = "hunter2-s3cret"


@pytest.mark.parametrize("text", [
    f"redis://:{SECRET}@10.0.0.5:6379/0",
    f"rediss://default:{SECRET}@cache.internal:6380/1",
    f"connecting to http://user:{SECRET}@example.com/v1 failed",
    f"Authorization: Bearer {SECRET}",
    f"headers={{'authorization': 'bearer {SECRET}'}}",
    f"MINDGAP_API_KEY={SECRET}",
    f"api_key='{SECRET}' model=x",
    f'{{"api-key": "{SECRET}"}}',
    f"OPENAI_API_KEY: {SECRET}",
    f"password={SECRET}",
])
def test_secrets_are_redacted(text: str) -> None:
    out = redact.redact(text)
    assert SECRET not in out
    assert "***" in out


def test_what_is_not_secret_is_kept() -> None:
    text = "redis://10.0.0.5:6379/0 and redis://user@host:1/0, 3 tasks, key prefix mindgap"
    assert redact.redact(text) == text
    assert redact.redact(f"redis://:{SECRET}@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"


def test_every_log_record_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """After ``install``: the message, its arguments and an exception's text."""
    redact.install()
    redact.install()  # idempotent
    log = logging.getLogger("mindgap.test_redaction")
    url = f"redis://:{SECRET}@10.0.0.5:6379/0"
    with caplog.at_level(logging.INFO):
        log.info("queue at %s, %d tasks", url, 3)
        log.warning(f"api_key={SECRET!r} sent as Bearer {SECRET}")
        log.info("settings %s", {"redis_url": url})
        try:
            raise ConnectionError(f"cannot reach {url}")
        except ConnectionError:
            log.exception("failed")
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text
    assert "3 tasks" in text and "redis://:***@10.0.0.5:6379/0" in text


def test_worker_start_line_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mindgap worker`` prints where it waits for tasks, without the Redis password."""
    monkeypatch.setattr("mindgap.cli._engine", lambda options, seed: _Closing())
    monkeypatch.setattr("mindgap.cli._verifier", lambda settings: _Closing())
    monkeypatch.setattr(Worker, "run", lambda self, until=None: WorkerStats())
    monkeypatch.setattr(Worker, "install_signal_handlers", lambda self: None)
    monkeypatch.setattr("mindgap.queue.Queue.from_url", lambda *args, **kwargs: None)
    monkeypatch.setenv("MINDGAP_QUEUE_REDIS_URL", f"redis://:{SECRET}@10.0.0.5:6379/0")
    result = CliRunner().invoke(app, ["worker", "--engine", "transformers"])
    assert result.exit_code == 0, result.output
    assert "waiting for tasks on redis://:***@10.0.0.5:6379/0" in result.output
    assert SECRET not in result.output


class _Closing:
    """An engine and verifier stand-in that only closes."""

    def close(self) -> None:
        """Nothing to release."""
