"""The ``mindgap`` command line. Heavy modules are imported inside each command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from mindgap import __version__

app = typer.Typer(
    name="mindgap",
    help="Close the gap between a model and its fine-tuning data, then train on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
serve_app = typer.Typer(help="Run a mindgap service (HTTP).", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
model_app = typer.Typer(help="Manage the default model.", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _read_verify_items(path: Path) -> list:  # list[VerifyRequest]
    from mindgap.schemas import VerifyRequest

    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                items.append(VerifyRequest.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "line"
                _fail(f"{path}:{number}: field '{field}': {first['msg']}")
    return items


@app.command()
def verify(
    response: Annotated[str | None, typer.Option(help="The model response to check.")] = None,
    reference: Annotated[str | None, typer.Option(
        help="Reference: a bare answer (`18`) or a full solution.")] = None,
    response_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="Read the response from this file.")] = None,
    batch: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="JSON lines of {response, reference}: prints one result per line.")] = None,
    workers: Annotated[int | None, typer.Option(help="Sandbox processes (default: cores).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per item.")] = 5.0,
) -> None:
    """Check a response's final answer against a reference, in the sandbox; prints JSON."""
    from mindgap.verifier.pool import LocalVerifier

    if batch is not None:
        if response or response_file or reference:
            _fail("--batch cannot be combined with --response/--response-file/--reference")
        _verify_batch(batch, workers, timeout)
        return
    if response_file is not None:
        response = response_file.read_text(encoding="utf-8")
    if response is None or reference is None:
        _fail("give --reference and one of --response or --response-file (or --batch FILE)")
    assert response is not None and reference is not None
    with LocalVerifier(workers=1, timeout_s=timeout) as pool:
        typer.echo(pool.verify(response, reference).model_dump_json())


def _verify_batch(path: Path, workers: int | None, timeout: float) -> None:
    from collections import Counter

    from tqdm import tqdm

    from mindgap.verifier.pool import LocalVerifier

    items = _read_verify_items(path)
    reasons: Counter[str] = Counter()
    with LocalVerifier(workers=workers, timeout_s=timeout) as pool:
        futures = [pool.submit(item) for item in items]
        for future in tqdm(futures, desc="verify", unit="item", file=sys.stderr):
            result = future.result()
            reasons[result.reason.value] += 1
            typer.echo(result.model_dump_json())
    correct = reasons["equal"]
    typer.echo(f"{correct}/{len(items)} correct; " +
               ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())), err=True)


@serve_app.command("verifier")
def serve_verifier(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
    workers: Annotated[int | None, typer.Option(help="Sandbox processes (default: cores).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds allowed per item.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the verifier API (POST /v1/verify, /v1/verify/batch; /healthz /readyz /metrics).

    Set MINDGAP_API_KEY to require a bearer key on /v1/ routes.
    """
    import uvicorn

    from mindgap.config import VerifierSettings
    from mindgap.verifier.app import create_app

    overrides = {k: v for k, v in {"workers": workers, "timeout_s": timeout}.items()
                 if v is not None}
    settings = VerifierSettings(**overrides)
    uvicorn.run(create_app(settings=settings), host=host, port=port, log_level=log_level)


@app.command()
def rewrite(
    data: Annotated[str, typer.Option(help="Problems: .jsonl, .parquet, or a Hugging Face "
                                            "dataset name or folder.")],
    out: Annotated[Path, typer.Option(help="Aligned examples are appended here (JSONL).")],
    preset: Annotated[str | None, typer.Option(
        help="Field mapping: mindgap (default), gsm8k, math, numina.")] = None,
    split: Annotated[str, typer.Option(help="Split of a Hugging Face dataset.")] = "train",
    engine: Annotated[str, typer.Option(help="transformers, vllm or openai.")] = "transformers",
    model: Annotated[str | None, typer.Option(
        help="Model name or folder (default: SmolLM2-135M-Instruct, packaged).")] = None,
    openai_url: Annotated[str | None, typer.Option(
        help="Base URL of an OpenAI-compatible server (engine openai).")] = None,
    k_self: Annotated[int, typer.Option(help="Most plain samples per problem.")] = 4,
    k_guided: Annotated[int, typer.Option(help="Most guided samples per problem.")] = 4,
    round_size: Annotated[int, typer.Option(
        help="Samples per problem per round (stops at the first correct round).")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per response.")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of sampling and choice.")] = 0,
    choose: Annotated[str, typer.Option(help="random (seeded) or likeliest.")] = "random",
    hide_answer: Annotated[bool, typer.Option(
        help="Guided prompt shows the reference without its final answer.")] = False,
    copy_min_chars: Annotated[int, typer.Option(
        help="Guided responses sharing this many characters with the reference are "
             "rejected as copies.")] = 60,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems.")] = None,
    batch_size: Annotated[int, typer.Option(help="Problems aligned together.")] = 32,
    resume: Annotated[bool, typer.Option(help="Skip problems already in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="Log and skip bad rows.")] = False,
    plain_template: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="File with the plain prompt ({question}).")] = None,
    guided_template: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="File with the guided prompt ({question}, {reference}).")] = None,
    verifier_url: Annotated[str | None, typer.Option(
        help="Verify through this verifier service instead of a local sandbox pool.")] = None,
) -> None:
    """Keep the model's own solution, else a guided one, else the expert's (embedded mode)."""
    from mindgap.datasets import DatasetError, read_problems
    from mindgap.rewriter.aligner import Aligner
    from mindgap.rewriter.engines import make_engine
    from mindgap.rewriter.prompts import PromptTemplates, TemplateError
    from mindgap.rewriter.rewrite import OutputExistsError
    from mindgap.rewriter.rewrite import rewrite as run_rewrite
    from mindgap.schemas import RewriteOptions

    if engine not in ("transformers", "vllm", "openai"):
        _fail(f"--engine must be transformers, vllm or openai, not {engine!r}")
    try:
        problems = read_problems(data, preset=preset, split=split, limit=limit,
                                 skip_invalid=skip_invalid)
        templates = PromptTemplates.from_files(plain_template, guided_template)
    except (DatasetError, TemplateError) as exc:
        _fail(str(exc))
    try:
        config = RewriteOptions(k_self=k_self, k_guided=k_guided, round_size=round_size,
                                temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                seed=seed, choose=choose,  # type: ignore[arg-type]
                                hide_answer=hide_answer, copy_min_chars=copy_min_chars)
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}")
    options = {"seed": seed} if engine == "vllm" else {}
    if engine == "openai":
        if not openai_url:
            _fail("--engine openai needs --openai-url")
        options = {"base_url": openai_url}
    verifier = _verifier(verifier_url)
    generator = make_engine(engine, model, **options)  # type: ignore[arg-type]
    try:
        summary = run_rewrite(
            problems, Aligner(generator, verifier, config, templates), out,
            batch_size=batch_size, resume=resume, overwrite=overwrite,
            config={"data": data, "engine": engine, "model": generator.model_name,
                    **config.model_dump()})
    except OutputExistsError as exc:
        _fail(str(exc))
    finally:
        generator.close()
        verifier.close()
    typer.echo(f"wrote {out}: {summary.sources_in_output} "
               f"({summary.generated_tokens_per_s:.0f} generated tokens/s); "
               f"summary in {out}.summary.json", err=True)


def _verifier(url: str | None):  # -> LocalVerifier | VerifierClient
    import os

    url = url or os.environ.get("MINDGAP_VERIFIER_URL")
    if url:
        from mindgap.verifier.client import VerifierClient

        return VerifierClient(url, api_key=os.environ.get("MINDGAP_API_KEY"))
    from mindgap.verifier.pool import LocalVerifier

    return LocalVerifier()


@app.command()
def gap(
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False,
                                       help="Aligned examples (JSONL) from `mindgap rewrite`.")],
    model: Annotated[str | None, typer.Option(
        help="Model to measure under (default: the packaged SmolLM2).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a histogram PNG here.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the report as JSON here.")] = None,
) -> None:
    """Show the policy gap: kept responses vs expert solutions under the model, per source."""
    from mindgap.rewriter.gap import gap_command

    try:
        gap_command(model, data, plot=plot, out_json=out, echo=typer.echo)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def worker(
    redis_url: Annotated[str, typer.Option(envvar="MINDGAP_REDIS_URL",
                                           help="Redis with the job queue.")]
    = "redis://127.0.0.1:6379/0",
    prefix: Annotated[str, typer.Option(help="Key prefix of the queue.")] = "mindgap",
    engine: Annotated[str, typer.Option(help="transformers, vllm or openai.")] = "transformers",
    model: Annotated[str | None, typer.Option(help="Model name or folder.")] = None,
    openai_url: Annotated[str | None, typer.Option(help="Server URL (engine openai).")] = None,
    consumer: Annotated[str | None, typer.Option(
        help="Consumer name in the group (default: host-pid).")] = None,
    batch_size: Annotated[int, typer.Option(help="Tasks claimed at once.")] = 32,
    verifier_url: Annotated[str | None, typer.Option(
        help="Verifier service URL (default: a local sandbox pool).")] = None,
    high_water: Annotated[int, typer.Option(
        help="Pause while the trainers' lag exceeds this (0: never).")] = 0,
    low_water: Annotated[int, typer.Option(help="Resume once the lag is at most this.")] = 0,
    visibility_timeout_s: Annotated[float, typer.Option(
        help="Unacknowledged tasks are reclaimed by others after this.")] = 600.0,
    seed: Annotated[int, typer.Option(help="Engine seed (vllm).")] = 0,
) -> None:
    """Take rewrite tasks from the Redis queue until SIGTERM (finishing the batch in hand)."""
    import os
    import socket

    from mindgap.queue import Backpressure, Queue
    from mindgap.rewriter.engines import make_engine
    from mindgap.rewriter.worker import Worker

    if engine not in ("transformers", "vllm", "openai"):
        _fail(f"--engine must be transformers, vllm or openai, not {engine!r}")
    queue = Queue.from_url(redis_url, prefix,
                           visibility_timeout_ms=int(visibility_timeout_s * 1000))
    options: dict[str, object] = {"seed": seed} if engine == "vllm" else {}
    if engine == "openai":
        options = {"base_url": openai_url or "http://127.0.0.1:8000"}
    generator = make_engine(engine, model, **options)  # type: ignore[arg-type]
    verifier = _verifier(verifier_url)
    backpressure = (Backpressure(queue, high_water, low_water) if high_water > 0 else None)
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    runner = Worker(queue, generator, verifier, name, batch_size=batch_size,
                    backpressure=backpressure)
    runner.install_signal_handlers()
    typer.echo(f"worker {name}: waiting for tasks on {redis_url} ({prefix})", err=True)
    try:
        stats = runner.run()
    finally:
        generator.close()
        verifier.close()
    typer.echo(f"worker {name}: {stats.completed} completed, {stats.dead_lettered} "
               f"dead-lettered", err=True)


def _api(server: str, api_key: str | None):  # -> httpx.Client
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=600)


def _check(reply) -> dict:  # reply: httpx.Response
    if reply.status_code >= 400:
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text
        _fail(f"HTTP {reply.status_code}: {detail}")
    return reply.json()


@app.command()
def submit(
    data: Annotated[str, typer.Option(help="Problems (.jsonl, .parquet, HF dataset).")],
    server: Annotated[str, typer.Option(envvar="MINDGAP_SERVER",
                                        help="Rewriter service URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="MINDGAP_API_KEY",
                                                help="Bearer key.")] = None,
    preset: Annotated[str | None, typer.Option(help="Field mapping preset.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems.")] = None,
    job_id: Annotated[str | None, typer.Option(help="Choose the job id (idempotent).")] = None,
    k_self: Annotated[int, typer.Option(help="Most plain samples per problem.")] = 4,
    k_guided: Annotated[int, typer.Option(help="Most guided samples per problem.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per response.")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of sampling and choice.")] = 0,
    follow: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
) -> None:
    """Send a rewrite job to the rewriter service; prints the job id."""
    from mindgap.datasets import DatasetError, read_problems
    from mindgap.schemas import RewriteOptions

    try:
        problems = read_problems(data, preset=preset, limit=limit)
    except DatasetError as exc:
        _fail(str(exc))
    options = RewriteOptions(k_self=k_self, k_guided=k_guided, max_tokens=max_tokens,
                             temperature=temperature, seed=seed)
    body: dict[str, object] = {"items": [p.model_dump() for p in problems],
                               "options": options.model_dump()}
    if job_id:
        body["job_id"] = job_id
    with _api(server, api_key) as client:
        job = _check(client.post("/v1/jobs", json=body))
        typer.echo(job["job_id"])
        if follow:
            _follow(client, job["job_id"], len(problems))


def _follow(client, job_id: str, total: int) -> None:  # client: httpx.Client
    import time

    from tqdm import tqdm

    with tqdm(total=total, unit="problem", desc=f"job {job_id}", file=sys.stderr) as bar:
        while True:
            status = _check(client.get(f"/v1/jobs/{job_id}"))
            settled = status["done"] + status["failed"] + status.get("skipped", 0)
            bar.update(settled - bar.n)
            bar.set_postfix(ordered_dict={k: status["counts"].get(k, 0)
                                          for k in ("self", "guided", "expert")})
            if status["status"] in ("completed", "completed_with_failures", "cancelled"):
                break
            time.sleep(1.0)
    typer.echo(f"job {job_id}: {status['status']}", err=True)


@app.command()
def results(
    job_id: Annotated[str, typer.Argument(help="The job id from `mindgap submit`.")],
    out: Annotated[Path, typer.Option(help="Write the aligned examples here (JSONL).")],
    server: Annotated[str, typer.Option(envvar="MINDGAP_SERVER",
                                        help="Rewriter service URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="MINDGAP_API_KEY",
                                                help="Bearer key.")] = None,
) -> None:
    """Download a job's aligned examples (JSON lines)."""
    count = 0
    with _api(server, api_key) as client, client.stream(
            "GET", f"/v1/jobs/{job_id}/results") as reply:
        if reply.status_code >= 400:
            reply.read()
            _check(reply)
        with out.open("w", encoding="utf-8") as handle:
            for line in reply.iter_lines():
                if line.strip():
                    handle.write(line + "\n")
                    count += 1
    typer.echo(f"{count} examples -> {out}", err=True)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Metrics, checkpoints and the final model.")],
    data: Annotated[list[Path] | None, typer.Option(
        exists=True, dir_okay=False, help="Aligned examples (JSONL or Parquet).")] = None,
    redis: Annotated[str | None, typer.Option(
        help="Train on the live stream of this Redis queue instead of files.")] = None,
    job: Annotated[str | None, typer.Option(
        help="With --redis: stop when this job is finished and all its examples trained.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="With --redis: the queue's key prefix.")
                      ] = "mindgap",
    model: Annotated[str | None, typer.Option(
        help="Model to train (default: the packaged SmolLM2).")] = None,
    loss: Annotated[str, typer.Option(help="sft, dft or is.")] = "is",
    max_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-5,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per micro-batch.")] = 8192,
    global_batch: Annotated[int, typer.Option(help="Examples per optimizer step.")] = 32,
    resume: Annotated[str | None, typer.Option(
        help="'latest' or a checkpoint folder to continue from.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of data order and RNGs.")] = 0,
) -> None:
    """Fine-tune on aligned examples (files, or the live Redis stream) with the sft, dft or
    importance-sampled (is) loss.

    For every option (warm-up, clipping, checkpoints, FSDP) use `python -m mindgap.trainer --help`;
    for many processes: `torchrun --nproc_per_node N -m mindgap.trainer ...`.
    """
    from mindgap.rewriter.model_store import resolve_model
    from mindgap.trainer import train_command

    if loss not in ("sft", "dft", "is"):
        _fail(f"--loss must be sft, dft or is, not {loss!r}")
    if bool(data) == bool(redis):
        _fail("give --data FILE (repeatable) or --redis URL (the live stream), one of them")
    if job and not redis:
        _fail("--job needs --redis")
    summary = train_command(data=[str(p) for p in data or []], redis=redis, job=job,
                            redis_prefix=prefix, out=str(out),
                            model=resolve_model(model), loss=loss, max_steps=max_steps, lr=lr,
                            batch_tokens=batch_tokens, global_batch=global_batch,
                            resume=resume, seed=seed)
    typer.echo(json.dumps(summary, default=str))


@model_app.command("prepare")
def model_prepare(force: Annotated[bool, typer.Option(help="Convert again.")] = False) -> None:
    """Convert the packaged SmolLM2 GGUF to a safetensors folder in the cache (once)."""
    from mindgap.rewriter.model_store import prepare_default_model

    typer.echo(str(prepare_default_model(force=force)))


@serve_app.command("rewriter")
def serve_rewriter(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the rewriter API (jobs over the Redis queue; workers do the work).

    Settings: MINDGAP_REWRITER_REDIS_URL, MINDGAP_REWRITER_PREFIX, MINDGAP_API_KEY,
    MINDGAP_VERIFIER_URL (checked by /readyz).
    """
    import uvicorn

    from mindgap.rewriter.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)


@app.command()
def version() -> None:
    """Print the mindgap version."""
    typer.echo(json.dumps({"mindgap": __version__}))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
