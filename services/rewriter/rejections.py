"""Requests the rewriter refuses: the ``Rejected`` error and its JSON answer, and the checks
of submitted problems (repeated ids, a server-side data set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mindgap.datasets import DatasetError, ReadReport, dataset_format, read_problems
from mindgap.jobs import DatasetSpec, dataset_error_line
from mindgap.schemas import Problem

MAX_REPORTED_ERRORS = 100


class Rejected(Exception):
    """A request that is well-formed but cannot be accepted; answered as JSON errors."""

    def __init__(self, status_code: int, detail: str,
                 errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors
        self.extra = extra


def invalid(errors: list[dict[str, Any]], total: int | None = None) -> Rejected:
    """A 422 listing bad rows (at most ``MAX_REPORTED_ERRORS``), in install_common's shape."""
    total = len(errors) if total is None else total
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    if total > 10:
        summary += f" (and {total - 10} more)"
    return Rejected(422, summary, errors[:MAX_REPORTED_ERRORS], error_count=total)


def reject_duplicate_ids(problems: list[Problem], field: str = "items") -> None:
    """Reject problems whose ids repeat, naming each repeat's index."""
    first: dict[str, int] = {}
    errors = []
    for index, problem in enumerate(problems):
        if problem.id in first:
            errors.append({"field": f"{field}.{index}.id",
                           "message": f"duplicate id {problem.id!r} (first at "
                           f"{field}.{first[problem.id]})"})
        else:
            first[problem.id] = index
    if errors:
        raise invalid(errors)


def _check_dataset_path(path: str) -> None:
    """Accept a readable data file or a ``save_to_disk`` folder; nothing that would make the
    server fetch from the Hugging Face hub or scan a random folder."""
    source = dataset_format(path)
    if source == "hf-disk":
        return
    if source == "hf":
        raise invalid([{"field": "dataset.path", "message": f"{path}: not a .jsonl, .json or "
                        ".parquet file, nor a folder written by Hugging Face save_to_disk"}])
    local = Path(path)
    if not local.is_file():
        raise invalid([{"field": "dataset.path", "message": f"{path}: no such file on "
                        "the server"}])
    if not os.access(local, os.R_OK):
        raise invalid([{"field": "dataset.path", "message": f"{path}: not readable by "
                        "the server"}])


def read_dataset(spec: DatasetSpec) -> list[Problem]:
    """Read every row; any bad one rejects the job with each bad row's line and field."""
    _check_dataset_path(spec.path)
    report = ReadReport()
    try:
        problems = read_problems(spec.path, preset=spec.preset, split=spec.split,
                                 limit=spec.limit, skip_invalid=True, report=report)
    except DatasetError as exc:
        raise invalid([{"field": "dataset", "message": str(exc)}]) from None
    if report.errors:
        errors = [{"field": "dataset", "line": dataset_error_line(message, spec.path),
                   "message": message} for message in report.errors]
        raise invalid(errors, total=report.skipped)
    if not problems:
        raise invalid([{"field": "dataset", "message": f"{spec.path}: no problems"}])
    return problems


async def _rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Rejected)
    content: dict[str, Any] = {"detail": exc.detail, **exc.extra}
    if exc.errors is not None:
        content["errors"] = exc.errors
    return JSONResponse(content, status_code=exc.status_code)


async def _queue_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"queue unavailable: {exc}"}, status_code=503)


def install_rejections(app: FastAPI) -> None:
    """Answer ``Rejected`` with its status and errors, and a Redis failure with a 503."""
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(redis.RedisError, _queue_down)
