"""The job console at ``/ui``: server-rendered pages (Jinja2 templates shipped in the
package, no JavaScript build) over the queue: the jobs with status and progress, the
queue's lag and live workers, and one job's page. Signing in takes the API key once
(:mod:`~mindgap.rewriter.ui_auth`); pages refresh themselves while there is work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from mindgap.jobs import JOB_ID_PATTERN
from mindgap.rewriter import ui_auth, ui_data
from mindgap.rewriter.deps import Context

REFRESH_S = 2
"""How often a page with work in progress reloads itself."""

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


def _duration(seconds: float | None) -> str:
    """``95.2`` as ``1m 35s``; ``None`` as an em dash."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else (
        f"{rest // 60}m {rest % 60:02d}s" if rest >= 60 else f"{seconds:.1f}s")


def _clock(unix: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix)) if unix else "—"


templates.env.filters["duration"] = _duration
templates.env.filters["clock"] = _clock


class SignIn(BaseModel):
    """The console's sign-in form."""

    api_key: str = Field(min_length=1, max_length=4096)


def _login(request: Request, status_code: int = 401) -> HTMLResponse:
    return templates.TemplateResponse(request, "ui_login.html", {}, status_code=status_code)


@router.get("/ui", response_class=HTMLResponse)
def jobs_page(request: Request, context: Context) -> HTMLResponse:
    """The jobs, newest first, with the queue's lag and the live workers."""
    if not ui_auth.signed_in(request, context.api_key):
        return _login(request)
    page = ui_data.overview(context.queue)
    busy = any(job.finished is None for job in page["jobs"])
    return templates.TemplateResponse(request, "ui_jobs.html",
                                      {**page, "refresh": REFRESH_S if busy else None})


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, context: Context, job_id: Annotated[str, PathParam(
        pattern=JOB_ID_PATTERN, max_length=128)]) -> HTMLResponse:
    """One job: counts per source, throughput, ETA, dead letters, kept responses beside
    their expert solutions, and the histogram of their log-probs."""
    if not ui_auth.signed_in(request, context.api_key):
        return _login(request)
    page = ui_data.job_page(context.queue, job_id)
    if page is None:
        return templates.TemplateResponse(request, "ui_missing.html", {"job_id": job_id},
                                          status_code=404)
    refresh = REFRESH_S if page["job"].finished is None else None
    return templates.TemplateResponse(request, "ui_job.html", {**page, "refresh": refresh})


@router.post("/ui/login", status_code=204, response_class=Response)
def login(body: SignIn, request: Request, context: Context) -> Response:
    """Exchange the API key for the console's session cookie (401 for a wrong key)."""
    if context.api_key and not ui_auth.key_matches(body.api_key, context.api_key):
        return Response('{"detail":"wrong API key"}', status_code=401,
                        media_type="application/json")
    response = Response(status_code=204)
    if context.api_key:
        ui_auth.set_session(response, request, context.api_key)
    return response


@router.post("/ui/logout", status_code=204, response_class=Response)
def logout() -> Response:
    """End the console session."""
    response = Response(status_code=204)
    ui_auth.end_session(response)
    return response
