"""Secrets kept out of logs and messages: passwords in URLs, bearer tokens and API keys.

``redact(text)`` masks them in any string; ``RedactFilter`` does it to a log record (its
message, arguments and exception text); ``install()`` makes every record of the process go
through it, whichever handler emits it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]+(?=@)")
_BEARER = re.compile(r"(?P<head>\bbearer\s+)[^\s'\",;]+", re.IGNORECASE)
_KEY_VALUE = re.compile(
    r"(?P<head>[\w-]*(?:api[_-]?key|token|secret|password|passwd)['\"]?\s*[:=]\s*['\"]?)"
    r"(?!\*\*\*)[^\s'\",;&}]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL passwords, bearer tokens and ``*api_key=``/``token:``-style values
    replaced by ``***``."""
    for pattern in (_URL_PASSWORD, _BEARER, _KEY_VALUE):
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    return text


def _redact_arg(arg: Any) -> Any:
    """A string argument redacted; any other kept unless its text holds a secret."""
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, int | float | bool) or arg is None:
        return arg
    text = str(arg)
    clean = redact(text)
    return arg if clean == text else clean


class RedactFilter(logging.Filter):
    """Redact a record in place (message, arguments, exception text); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> None:
    """Redact every log record created from now on, in this process (idempotent)."""
    factory = logging.getLogRecordFactory()
    if isinstance(factory, _RedactingFactory):
        return
    logging.setLogRecordFactory(_RedactingFactory(factory))


class _RedactingFactory:
    """A log record factory that passes each new record through ``RedactFilter``."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner
        self.filter = RedactFilter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        self.filter.filter(record)
        return record
