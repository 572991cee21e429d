"""The rewriter service: FastAPI in front of the Redis queue (workers hold the model).

Routes: ``POST /v1/jobs`` (batch job, 202), ``GET /v1/jobs[/{id}[/results]]``,
``DELETE /v1/jobs/{id}`` (cancel), ``POST /v1/rewrite`` (synchronous, up to 64 items; needs
running workers), ``/healthz``, ``/readyz`` (Redis, verifier, a live worker), ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mindgap import __version__
from mindgap.config import QueueSettings, RewriterSettings, ServiceSettings, VerifierSettings
from mindgap.datasets import (
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    DatasetError,
    ReadReport,
    read_problems,
)
from mindgap.http import bearer_auth, install_common, observe_requests
from mindgap.jobs import (
    ENTRY_ID_PATTERN,
    DatasetSpec,
    JobCreated,
    JobList,
    JobRequest,
    JobView,
    RewriteRequest,
    RewriteResponse,
    dataset_error_line,
    job_view,
    live_workers,
)
from mindgap.queue import FINISHED, Queue
from mindgap.schemas import Problem

READY_PROBE_TIMEOUT_S = 5.0
MAX_REPORTED_ERRORS = 100
METRICS_MAX_JOBS = 10_000
SOURCES = ("self", "guided", "expert")
_HF_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_MAX_STREAM_PART = 2**64 - 1


class Rejected(Exception):
    """A request that is well-formed but cannot be accepted; answered as JSON errors."""

    def __init__(self, status_code: int, detail: str,
                 errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors
        self.extra = extra


def _invalid(errors: list[dict[str, Any]], total: int | None = None) -> Rejected:
    """A 422 listing bad rows (at most ``MAX_REPORTED_ERRORS``), in install_common's shape."""
    total = len(errors) if total is None else total
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    if total > 10:
        summary += f" (and {total - 10} more)"
    return Rejected(422, summary, errors[:MAX_REPORTED_ERRORS], error_count=total)


def _duplicate_ids(problems: list[Problem], field: str = "items") -> None:
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
        raise _invalid(errors)


def _check_dataset_path(path: str) -> None:
    """Accept a readable data file or a ``save_to_disk`` folder; nothing that would make the
    server fetch from the Hugging Face hub or scan a random folder."""
    local = Path(path)
    suffix = local.suffix.lower()
    if suffix in JSONL_SUFFIXES or suffix in PARQUET_SUFFIXES:
        if not local.is_file():
            raise _invalid([{"field": "dataset.path", "message": f"{path}: no such file on "
                             "the server"}])
        if not os.access(local, os.R_OK):
            raise _invalid([{"field": "dataset.path", "message": f"{path}: not readable by "
                             "the server"}])
        return
    if local.is_dir() and any((local / marker).is_file() for marker in _HF_DISK_MARKERS):
        return
    raise _invalid([{"field": "dataset.path", "message": f"{path}: not a .jsonl, .json or "
                     ".parquet file, nor a folder written by Hugging Face save_to_disk"}])


def _read_dataset(spec: DatasetSpec) -> list[Problem]:
    """Read every row; any bad one rejects the job with each bad row's line and field."""
    _check_dataset_path(spec.path)
    report = ReadReport()
    try:
        problems = read_problems(spec.path, preset=spec.preset, split=spec.split,
                                 limit=spec.limit, skip_invalid=True, report=report)
    except DatasetError as exc:
        raise _invalid([{"field": "dataset", "message": str(exc)}]) from None
    if report.errors:
        errors = [{"field": "dataset", "line": dataset_error_line(message, spec.path),
                   "message": message} for message in report.errors]
        raise _invalid(errors, total=report.skipped)
    if not problems:
        raise _invalid([{"field": "dataset", "message": f"{spec.path}: no problems"}])
    return problems


def _check_entry_id(after: str | None) -> tuple[int, int] | None:
    if after is None:
        return None
    ms, seq = (int(part) for part in after.split("-"))
    if ms > _MAX_STREAM_PART or seq > _MAX_STREAM_PART:
        raise _invalid([{"field": "after", "message": "not a stream entry id"}])
    return ms, seq


def _entry(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# --- Metrics ------------------------------------------------------------------------------


class _QueueCollector(Collector):
    """Reads the queue's depths and the jobs' counters from Redis at scrape time."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def _job_totals(self) -> tuple[dict[str, int], dict[str, int]]:
        ids = self.queue.redis.zrevrange(self.queue.jobs_key, 0, METRICS_MAX_JOBS - 1)
        pipe = self.queue.redis.pipeline(transaction=False)
        fields = ("status", "done", "failed", "skipped", *SOURCES)
        for job_id in ids:
            pipe.hmget(self.queue.job_key(job_id), fields)
        totals = dict.fromkeys(("done", "failed", "skipped", *SOURCES), 0)
        statuses: dict[str, int] = {}
        for row in pipe.execute() if ids else []:
            if row[0] is None:
                continue
            statuses[row[0]] = statuses.get(row[0], 0) + 1
            for name, value in zip(fields[1:], row[1:], strict=True):
                totals[name] += int(value or 0)
        return totals, statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("mindgap_rewriter_redis_up", "Whether Redis answered the scrape")
        try:
            stats = self.queue.stats()
            lag = self.queue.trainer_lag()
            workers = len(live_workers(self.queue))
            totals, statuses = self._job_totals()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"mindgap_rewriter_{name}", doc, value=value)

        yield gauge("tasks_backlog", "Tasks in the stream: queued plus in flight",
                    stats["tasks_backlog"])
        yield gauge("tasks_queued", "Tasks not yet delivered to a worker",
                    stats["tasks_undelivered"])
        yield gauge("tasks_in_flight", "Tasks delivered but not acknowledged",
                    stats["tasks_pending"])
        yield gauge("tasks_done", "Problems done, summed over known jobs", totals["done"])
        yield gauge("tasks_failed", "Problems failed, summed over known jobs", totals["failed"])
        yield gauge("tasks_skipped", "Tasks skipped (cancelled jobs), summed over known jobs",
                    totals["skipped"])
        yield gauge("dead_letters", "Entries in the dead-letter stream", stats["dead_length"])
        yield gauge("aligned_length", "Entries in the trainer's stream", stats["aligned_length"])
        yield gauge("trainer_lag", "Aligned examples the trainers have not acknowledged", lag)
        yield gauge("live_workers", "Workers with a fresh heartbeat", workers)
        examples = GaugeMetricFamily("mindgap_rewriter_examples",
                                     "Examples done per source, summed over known jobs",
                                     labels=["source"])
        for source in SOURCES:
            examples.add_metric([source], totals[source])
        yield examples
        jobs = GaugeMetricFamily("mindgap_rewriter_jobs", "Known jobs per status",
                                 labels=["status"])
        for status in ("queued", "running", "completed", "completed_with_failures",
                       "cancelled"):
            jobs.add_metric([status], statuses.get(status, 0))
        yield jobs


class RewriterMetrics:
    """Request and latency metrics, plus the queue read at scrape time (own registry)."""

    def __init__(self, queue: Queue) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mindgap_rewriter_requests", "HTTP requests",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("mindgap_rewriter_request_seconds", "HTTP request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1, 2.5, 5, 10, 30, 60, 300, 600))
        self.registry.register(_QueueCollector(queue))


# --- The app ------------------------------------------------------------------------------


def create_app(queue: Queue | None = None, settings: RewriterSettings | None = None,
               service: ServiceSettings | None = None) -> FastAPI:
    """Build the app; it owns (and closes) the queue unless one is passed in.

    Without arguments everything comes from the environment: ``QueueSettings`` (the queue),
    ``RewriterSettings``, ``ServiceSettings`` and ``VerifierSettings.url`` (gates /readyz).
    """
    settings = settings or RewriterSettings()
    service = service or ServiceSettings()
    verifier_url = VerifierSettings().url
    owned = queue is None
    if queue is None:
        where = QueueSettings()
        queue = Queue.from_url(where.redis_url, where.prefix, create_groups=False)
    jobs = queue
    metrics = RewriterMetrics(jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            jobs.close()

    app = FastAPI(title="mindgap rewriter", version=__version__, lifespan=lifespan,
                  description="Rewrite math problems into on-policy training examples: jobs "
                  "on a Redis queue, done by rewriter workers.")
    install_common(app, settings.max_body_bytes)
    auth = [Depends(bearer_auth(service.api_key))]
    not_found = {404: {"description": "No such job."}}

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Rejected)
        content: dict[str, Any] = {"detail": exc.detail, **exc.extra}
        if exc.errors is not None:
            content["errors"] = exc.errors
        return JSONResponse(content, status_code=exc.status_code)

    @app.exception_handler(redis.RedisError)
    async def queue_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"queue unavailable: {exc}"}, status_code=503)

    observe_requests(app, metrics.requests, metrics.latency)

    def redis_now() -> float:
        seconds, micros = jobs.redis.time()
        return seconds + micros / 1e6

    def view(job_id: str) -> JobView:
        raw = jobs.job_status(job_id)
        if raw is None:
            raise Rejected(404, f"no job {job_id!r}")
        return job_view(raw, redis_now())

    @app.post("/v1/jobs", dependencies=auth, status_code=202, response_model=JobCreated,
              responses={200: {"model": JobCreated, "description": "The job already existed "
                               "with these problems (idempotent resend)."},
                         409: {"description": "The job id is taken by other problems."},
                         422: {"description": "Invalid rows, listed by index or line."}})
    def create_job(body: JobRequest) -> JSONResponse:
        """Queue a batch job from inline items or a server-side data set."""
        if body.items is not None:
            problems = body.items
            _duplicate_ids(problems)
        else:
            assert body.dataset is not None
            problems = _read_dataset(body.dataset)
        job_id = body.job_id or uuid.uuid4().hex
        try:
            created = jobs.create_job(job_id, problems, body.options.model_dump(mode="json"),
                                      feed_trainer=body.feed_trainer)
        except ValueError as exc:
            raise Rejected(409, str(exc), job_id=job_id) from None
        state = view(job_id)
        answer = JobCreated(job_id=job_id, status=state.status, total=state.total,
                            created=created)
        return JSONResponse(answer.model_dump(), status_code=202 if created else 200,
                            headers={"Location": f"/v1/jobs/{job_id}"})

    @app.get("/v1/jobs", dependencies=auth, response_model=JobList)
    def list_jobs(limit: int = Query(100, ge=1, le=1000),
                  offset: int = Query(0, ge=0, le=10**12)) -> JobList:
        """Jobs, newest first."""
        now = redis_now()
        return JobList(jobs=[job_view(raw, now) for raw in jobs.list_jobs(limit, offset)],
                       limit=limit, offset=offset)

    @app.get("/v1/jobs/{job_id}", dependencies=auth, response_model=JobView, responses=not_found)
    def job_status(job_id: str) -> JobView:
        """A job's progress: counts, rate and ETA."""
        return view(job_id)

    @app.get("/v1/jobs/{job_id}/results", dependencies=auth, response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}},
                              "description": "Aligned examples, one JSON object a line, in "
                              "completion order. Headers: X-Job-Status, and X-Last-Entry-Id "
                              "to pass as `after` next time."}, **not_found})
    def job_results(job_id: str, after: str | None = Query(
            None, pattern=ENTRY_ID_PATTERN, max_length=41,
            description="Only results after this entry id (an X-Last-Entry-Id).")
    ) -> StreamingResponse:
        """The job's results so far as JSON lines (works while the job runs)."""
        start = _check_entry_id(after)
        state = view(job_id)
        newest = jobs.redis.xrevrange(jobs.results_key(job_id), "+", "-", count=1)
        last = newest[0][0] if newest else None
        fresh = last is not None and (start is None or _entry(last) > start)

        def lines() -> Iterator[str]:
            if not fresh or last is None:
                return
            bound = _entry(last)
            for entry_id, raw in jobs.iter_results_raw(job_id, after):
                if _entry(entry_id) > bound:
                    return
                yield raw + "\n"

        headers = {"X-Job-Status": state.status, "X-Last-Entry-Id": (last if fresh else after)
                   or ""}
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    @app.delete("/v1/jobs/{job_id}", dependencies=auth, response_model=JobView,
                responses={**not_found, 409: {"description": "The job already finished."}})
    def cancel_job(job_id: str) -> JobView:
        """Cancel a queued or running job; workers skip its remaining tasks."""
        try:
            cancelled = jobs.cancel_job(job_id)
        except KeyError:
            raise Rejected(404, f"no job {job_id!r}") from None
        state = view(job_id)
        if not cancelled:
            raise Rejected(409, f"job {job_id!r} already finished ({state.status})",
                           status=state.status)
        return state

    @app.post("/v1/rewrite", dependencies=auth, response_model=RewriteResponse,
              responses={409: {"description": "The job was cancelled or deleted meanwhile."},
                         422: {"description": "Invalid items."},
                         504: {"description": "Not done within timeout_s; the job goes on "
                               "(poll /v1/jobs/{job_id})."}})
    async def rewrite(body: RewriteRequest) -> Response:
        """Rewrite up to 64 problems and wait for them (needs running workers)."""
        _duplicate_ids(body.items)
        job_id = f"sync-{uuid.uuid4().hex}"
        await asyncio.to_thread(jobs.create_job, job_id, body.items,
                                body.options.model_dump(mode="json"), feed_trainer=False)
        deadline = time.monotonic() + body.timeout_s
        pause = 0.01
        while True:
            state = await asyncio.to_thread(jobs.job_status, job_id)
            if state is None:
                raise Rejected(409, f"job {job_id} was deleted while waiting", job_id=job_id)
            if state["status"] in FINISHED:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise Rejected(504, f"job {job_id} not done after {body.timeout_s:g} s "
                               f"({state['done']}/{state['total']} done); it goes on: "
                               f"poll /v1/jobs/{job_id}", job_id=job_id)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, settings.poll_interval_s)
        if state["status"] == "cancelled":
            raise Rejected(409, f"job {job_id} was cancelled", job_id=job_id)
        raw = await asyncio.to_thread(lambda: [r for _, r in jobs.iter_results_raw(job_id)])
        by_problem = {json.loads(line)["problem_id"]: line for line in raw}
        examples = ",".join(by_problem.get(p.id, "null") for p in body.items)
        failed = [p.id for p in body.items if p.id not in by_problem]
        text = (f'{{"job_id":{json.dumps(job_id)},"status":{json.dumps(state["status"])},'
                f'"examples":[{examples}],"failed":{json.dumps(failed)},'
                f'"last_error":{json.dumps(state["last_error"])}}}')
        return Response(text, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Redis, the verifier or every worker "
                                         "is missing."}})
    async def readyz() -> JSONResponse:
        """Readiness: Redis answers, the verifier is ready (or local), a worker is alive."""
        checks: dict[str, Any] = {}
        ready = True
        workers: list[str] = []
        try:
            await asyncio.wait_for(asyncio.to_thread(jobs.redis.ping), READY_PROBE_TIMEOUT_S)
            checks["redis"] = "ok"
            workers = await asyncio.wait_for(asyncio.to_thread(live_workers, jobs),
                                             READY_PROBE_TIMEOUT_S)
        except (redis.RedisError, TimeoutError) as exc:
            checks["redis"] = f"unreachable: {exc or type(exc).__name__}"
            ready = False
        if verifier_url:
            url = verifier_url.rstrip("/") + "/readyz"
            try:
                async with httpx.AsyncClient(timeout=READY_PROBE_TIMEOUT_S) as client:
                    code = (await client.get(url)).status_code
                checks["verifier"] = "ok" if code == 200 else f"not ready (HTTP {code})"
            except httpx.HTTPError as exc:
                checks["verifier"] = f"unreachable: {exc or type(exc).__name__}"
            ready = ready and checks["verifier"] == "ok"
        else:
            checks["verifier"] = "local"
        checks["workers"] = len(workers) if workers else "no worker heartbeat"
        ready = ready and bool(workers)
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks,
                             "workers": workers}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus metrics (queue depths are read from Redis at scrape time)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
