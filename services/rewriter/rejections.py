"""Requests the rewriter refuses: the ``Rejected`` error and its JSON answer, and the checks
of inline problems (a server-side data set's are in :mod:`~mindgap.rewriter.data_root`)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mindgap.datasets import problem_errors
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


def check_items(problems: list[Problem], field: str = "items") -> None:
    """Reject problems that arrive whole (inline items) as a data set's bad rows would be:
    a repeated id, a blank id, question or solution, no reference answer; each error names
    ``items.N.field``."""
    first: dict[str, int] = {}
    errors = []
    for index, problem in enumerate(problems):
        if problem.id in first:
            errors.append({"field": f"{field}.{index}.id",
                           "message": f"duplicate id {problem.id!r} (first at "
                           f"{field}.{first[problem.id]})"})
        else:
            first[problem.id] = index
        errors += [{"field": f"{field}.{index}.{name}", "message": reason}
                   for name, reason in problem_errors(problem)]
    if errors:
        raise invalid(errors)


async def _rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Rejected)
    content: dict[str, Any] = {"detail": exc.detail, **exc.extra}
    if exc.errors is not None:
        content["errors"] = exc.errors
    return JSONResponse(content, status_code=exc.status_code)


async def _queue_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"queue unavailable ({type(exc).__name__})"}, status_code=503)


def install_rejections(app: FastAPI) -> None:
    """Answer ``Rejected`` with its status and errors, and a Redis failure with a 503."""
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(redis.RedisError, _queue_down)
