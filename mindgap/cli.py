"""The ``mindgap`` command line. Heavy modules are imported inside each command.

The flags of ``rewrite``, ``submit``, ``worker`` and ``train`` are generated from their option
groups (:mod:`mindgap.options`): an option is declared once, in its group, with its help.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mindgap import __version__, redact
from mindgap.config import QueueSettings, RewriterSettings, ServiceSettings, VerifierSettings
from mindgap.options import Flags, command_options, fail
from mindgap.queue_cli import queue_app
from mindgap.rewriter.eval_options import BenchmarkOptions, EvalOptions
from mindgap.rewriter.options import DataOptions, EngineOptions, WorkerOptions
from mindgap.schemas import SOURCES, RewriteOptions
from mindgap.trainer.config import TrainConfig

if TYPE_CHECKING:
    import httpx

    from mindgap.rewriter.aligner import Verifier
    from mindgap.rewriter.engines import Engine
    from mindgap.rewriter.rewrite import RewriteSummary

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
app.add_typer(queue_app, name="queue")

VERIFIER_URL = Flags(VerifierSettings, only=("url",), prefix="verifier_")
VERIFIER_POOL = Flags(VerifierSettings, only=("workers", "timeout_s"))
REWRITER_URL = Flags(RewriterSettings, only=("url",), prefix="rewriter_")
Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)]
LogLevel = Annotated[str, typer.Option(help="uvicorn log level.")]


# --- Verifying ------------------------------------------------------------------------------


@app.command()
@command_options(pool=VERIFIER_POOL)
def verify(
    pool: VerifierSettings,
    response: Annotated[str | None, typer.Option(help="The model response to check.")] = None,
    reference: Annotated[str | None, typer.Option(
        help="Reference: a bare answer (`18`) or a full solution.")] = None,
    response_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="Read the response from this file.")] = None,
    batch: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="JSON lines of {response, reference}: prints one result per line.")] = None,
) -> None:
    """Check a response's final answer against a reference, in the sandbox; prints JSON."""
    from mindgap.verifier.pool import LocalVerifier

    if batch is not None:
        if response or response_file or reference:
            fail("--batch cannot be combined with --response/--response-file/--reference")
        _verify_batch(batch, pool)
        return
    if response_file is not None:
        response = response_file.read_text(encoding="utf-8")
    if response is None or reference is None:
        fail("give --reference and one of --response or --response-file (or --batch FILE)")
    with LocalVerifier(workers=1, timeout_s=pool.timeout_s) as local:
        typer.echo(local.verify(response, reference).model_dump_json())


def _verify_batch(path: Path, pool: VerifierSettings) -> None:
    from collections import Counter

    from tqdm import tqdm

    from mindgap.jsonl import JsonlError, read_models
    from mindgap.schemas import VerifyRequest
    from mindgap.verifier.pool import LocalVerifier

    try:
        items = read_models(path, VerifyRequest)
    except JsonlError as exc:
        fail(str(exc))
    reasons: Counter[str] = Counter()
    with LocalVerifier(workers=pool.workers, timeout_s=pool.timeout_s) as local:
        futures = [local.submit(item) for item in items]
        for future in tqdm(futures, desc="verify", unit="item", file=sys.stderr):
            result = future.result()
            reasons[result.reason.value] += 1
            typer.echo(result.model_dump_json())
    typer.echo(f"{reasons['equal']}/{len(items)} correct; " +
               ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())), err=True)


def _log_to_stderr() -> None:
    """Log INFO and above to stderr with times, every record redacted (long-running commands)."""
    import logging

    redact.install()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _verifier(settings: VerifierSettings) -> Verifier:
    """The verifier service at ``settings.url``, else a local sandbox pool."""
    if settings.url:
        from mindgap.verifier.client import VerifierClient

        return VerifierClient(settings.url, api_key=ServiceSettings().api_key)
    from mindgap.verifier.pool import LocalVerifier

    return LocalVerifier(settings.workers, settings.timeout_s, settings.memory_mb)


# --- Services -------------------------------------------------------------------------------


@serve_app.command("verifier")
@command_options(settings=Flags(VerifierSettings, only=("workers", "timeout_s", "memory_mb")))
def serve_verifier(settings: VerifierSettings, host: Host = "127.0.0.1", port: Port = 8001,
                   log_level: LogLevel = "info") -> None:
    """Serve the verifier API (POST /v1/verify, /v1/verify/batch; /healthz /readyz /metrics).

    Set MINDGAP_API_KEY to require a bearer key on /v1/ routes.
    """
    import uvicorn

    from mindgap.verifier.app import create_app

    redact.install()
    uvicorn.run(create_app(settings=settings), host=host, port=port, log_level=log_level)


@serve_app.command("rewriter")
def serve_rewriter(host: Host = "127.0.0.1", port: Port = 8000,
                   log_level: LogLevel = "info") -> None:
    """Serve the rewriter API (jobs over the Redis queue; workers do the work).

    Settings: MINDGAP_QUEUE_REDIS_URL, MINDGAP_QUEUE_PREFIX, MINDGAP_API_KEY,
    MINDGAP_REWRITER_*, MINDGAP_VERIFIER_URL (checked by /readyz).
    """
    import uvicorn

    from mindgap.rewriter.app import create_app

    redact.install()
    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)


# --- Rewriting ------------------------------------------------------------------------------


def _engine(options: EngineOptions, seed: int, max_model_len: int = 2048) -> Engine:
    """Load the engine (torch's threads set first); a model that cannot load ends the command."""
    from mindgap.rewriter.engines import make_engine

    model = options.model
    if model and model.startswith(("/", ".", "~")) and not Path(model).expanduser().exists():
        fail(f"--model {model}: no such folder")
    if options.engine != "openai":
        import torch

        torch.set_num_threads(options.torch_threads())
    try:
        if options.engine == "openai":
            return make_engine("openai", model, base_url=options.openai_url,
                               seeds=options.openai_seeds)
        if options.engine == "vllm":
            return make_engine("vllm", model, seed=seed, max_model_len=max_model_len)
        return make_engine(options.engine, model)
    except (OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"--model {model or '(default)'}: {reason}")


@app.command()
@command_options(source=DataOptions, options=RewriteOptions, engine=EngineOptions,
                 verifier=VERIFIER_URL)
def rewrite(
    source: DataOptions, options: RewriteOptions, engine: EngineOptions,
    verifier: VerifierSettings,
    out: Annotated[Path, typer.Option(help="Aligned examples are appended here (JSONL).")],
    batch_size: Annotated[int, typer.Option(help="Problems aligned together.", min=1)] = 32,
    resume: Annotated[bool, typer.Option(help="Skip problems already in --out.")] = False,
    force: Annotated[bool, typer.Option(
        help="With --resume: continue even with other settings than --out was written "
             "with.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    samples_out: Annotated[Path | None, typer.Option(
        help="Every sample with its verdict, reason, finish reason and token count (JSONL, "
             "written after each round): the audit trail of what was kept and why.")] = None,
    plain_template: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="File with the plain prompt ({question}).")] = None,
    guided_template: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="File with the guided prompt ({question}, {reference}).")] = None,
) -> None:
    """Keep the model's own solution, else a guided one, else the expert's (embedded mode).

    Each example is written once decided; Ctrl-C or SIGTERM stops cleanly (then --resume).
    The last line on stdout is the summary as JSON.
    """
    from mindgap.rewriter.aligner import Aligner
    from mindgap.rewriter.model_store import DEFAULT_MODEL
    from mindgap.rewriter.prompts import PromptTemplates, TemplateError
    from mindgap.rewriter.rewrite import rewrite as run_rewrite

    config = {"data": source.data, "engine": engine.engine,
              "model": engine.model or DEFAULT_MODEL, "threads": engine.torch_threads(),
              **options.model_dump()}
    problems = _rewrite_checks(source, out, config, resume=resume, overwrite=overwrite,
                               force=force, samples_out=samples_out)
    try:
        templates = PromptTemplates.from_files(plain_template, guided_template)
    except TemplateError as exc:
        fail(str(exc))
    checker = _verifier(verifier)
    try:
        generator = _engine(engine, options.seed, options.max_tokens + 2048)
    except typer.Exit:
        checker.close()
        raise
    try:
        summary = run_rewrite(
            problems, Aligner(generator, checker, options, templates), out,
            batch_size=batch_size, resume=resume, overwrite=overwrite, force=force,
            config={**config, "model_name": generator.model_name}, samples_out=samples_out)
    finally:
        generator.close()
        checker.close()
    _report(summary)


def _rewrite_checks(source: DataOptions, out: Path, config: dict, *, resume: bool,
                    overwrite: bool, force: bool,
                    samples_out: Path | None) -> list:  # list[Problem]
    """What can fail before the model loads: the output, the resume settings, the data."""
    from mindgap.rewriter.rewrite import (
        OutputExistsError,
        ResumeMismatchError,
        check_output,
        check_references,
        check_resume,
    )

    try:
        check_output(out, resume, overwrite, samples_out)
        if resume:
            check_resume(out, config, force)
    except (OutputExistsError, ResumeMismatchError) as exc:
        fail(str(exc))
    problems = _read_problems(source)
    try:
        check_references(problems)
    except ValueError as exc:
        fail(str(exc))
    return problems


def _report(summary: RewriteSummary) -> None:
    """The human line on stderr, the summary as JSON on stdout; an interrupted run exits 128+N."""
    import dataclasses
    import signal

    data = dataclasses.asdict(summary)
    out = data["output"]
    if data["interrupted"]:
        typer.echo(f"interrupted by {data['interrupted']}: {data['problems_this_run']} "
                   f"examples written this run, {data['problems_in_output']} in {out}; "
                   "run the same command with --resume to finish", err=True)
    else:
        typer.echo(f"wrote {out}: {data['sources_in_output']} "
                   f"({data['generated_tokens_per_s']:.0f} generated tokens/s); "
                   f"summary in {out}.summary.json", err=True)
    typer.echo(json.dumps(data))
    if data["interrupted"]:
        raise typer.Exit(128 + signal.Signals[data["interrupted"]].value)


def _read_problems(source: DataOptions) -> list:  # list[Problem]
    from mindgap.datasets import DatasetError, read_problems

    try:
        return read_problems(source.data, fields=source.field_map(), split=source.split,
                             limit=source.limit, skip_invalid=source.skip_invalid)
    except DatasetError as exc:
        fail(str(exc))


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
        fail(str(exc))


@app.command()
@command_options(engine=EngineOptions, worker=WorkerOptions, queue=QueueSettings,
                 verifier=VERIFIER_URL)
def worker(engine: EngineOptions, worker: WorkerOptions, queue: QueueSettings,
           verifier: VerifierSettings) -> None:
    """Take rewrite tasks from the Redis queue until SIGTERM (finishing the batch in hand)."""
    import socket

    from mindgap.queue import Backpressure, Queue
    from mindgap.rewriter.worker import Worker

    _log_to_stderr()
    jobs = Queue.from_url(queue.redis_url, queue.prefix, socket_timeout=queue.socket_timeout_s,
                          visibility_timeout_ms=int(worker.visibility_timeout_s * 1000))
    generator = _engine(engine, worker.engine_seed)
    checker = _verifier(verifier)
    backpressure = (Backpressure(jobs.aligned, worker.high_water, worker.low_water)
                    if worker.high_water > 0 else None)
    name = worker.consumer or f"{socket.gethostname()}-{os.getpid()}"
    runner = Worker(jobs, generator, checker, name, batch_size=worker.batch_size,
                    backpressure=backpressure, follow_policy=worker.follow_policy)
    runner.install_signal_handlers()
    typer.echo(f"worker {name}: waiting for tasks on {redact.redact(queue.redis_url)} "
               f"({queue.prefix})",
               err=True)
    try:
        stats = runner.run()
    finally:
        generator.close()
        checker.close()
    typer.echo(f"worker {name}: {stats.completed} completed, {stats.dead_lettered} "
               f"dead-lettered", err=True)


# --- Evaluating -----------------------------------------------------------------------------


@app.command("eval")
@command_options(suite=BenchmarkOptions, options=EvalOptions, engine=EngineOptions,
                 verifier=VERIFIER_URL)
def eval_command(
    suite: BenchmarkOptions, options: EvalOptions, engine: EngineOptions,
    verifier: VerifierSettings,
    out: Annotated[Path, typer.Option(
        help="Results JSON; the verdict log (OUT.jsonl, resumable) and the table (OUT.md) go "
             "next to it.")] = Path("eval.json"),
    resume: Annotated[bool, typer.Option(help="Skip problems already in the log.")] = False,
    force: Annotated[bool, typer.Option(
        help="With --resume: continue even with other settings than the log's.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing log.")] = False,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(
        exists=True, dir_okay=False, metavar="A.json B.json",
        help="Compare two results files instead: B - A per benchmark with a paired "
             "bootstrap 95% interval.")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (--compare).",
                                           min=100)] = 10_000,
) -> None:
    """Evaluate a model: avg@n and pass@k per benchmark and on average (the paper's protocol).

    Zero-shot, the boxed-answer prompt in the chat template; prints the table, writes OUT.
    """
    from mindgap.rewriter.eval_report import compare_files, markdown_table
    from mindgap.rewriter.evaluate import evaluate, log_path, prepare
    from mindgap.rewriter.model_store import DEFAULT_MODEL

    try:
        if compare is not None:
            typer.echo(compare_files(*compare, resamples=resamples, seed=options.seed))
            return
        config = {"model": engine.model or DEFAULT_MODEL, "engine": engine.engine}
        problems = prepare(suite, options, out, config, resume=resume, overwrite=overwrite,
                           force=force)
    except ValueError as exc:
        fail(str(exc))
    checker = _verifier(verifier)
    try:
        generator = _engine(engine, options.seed, options.max_tokens + 2048)
    except typer.Exit:
        checker.close()
        raise
    try:
        results = evaluate(problems, generator, checker, options, out, config=config,
                           resume=resume, overwrite=overwrite, force=force)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the verdicts so far are in {log_path(out)}; run the same "
                   "command with --resume to finish", err=True)
        raise typer.Exit(130) from None
    finally:
        generator.close()
        checker.close()
    typer.echo(markdown_table(results))
    typer.echo(f"results in {out}, table in {out.with_suffix('.md')}", err=True)


@app.command()
def experiment(
    config_file: Annotated[Path, typer.Argument(
        metavar="CONFIG.yaml", exists=True, dir_okay=False,
        help="The experiment (configs/experiment-cpu.yaml and the README list the fields).")],
    force: Annotated[bool, typer.Option(
        help="Reuse the work folder's finished stages although it was written with other "
             "settings.")] = False,
    report_only: Annotated[bool, typer.Option(
        help="Only write the report again from the finished stages.")] = False,
) -> None:
    """Rewrite once, train every arm from the same start, measure each; write report.md.

    Every stage is cached in the config's work_dir: run the same command again to continue
    a killed run.
    """
    from pydantic import ValidationError

    from mindgap.jsonl import first_error
    from mindgap.rewriter.experiment import Runner, check_work_dir
    from mindgap.rewriter.experiment_config import read_experiment_config
    from mindgap.rewriter.experiment_report import write_report

    try:
        config = read_experiment_config(config_file)
        TrainConfig.model_validate({**config.training, "data": ["-"]})
        if not report_only:
            check_work_dir(config, force)
    except ValidationError as exc:
        field, message = first_error(exc)
        fail(f"{config_file}: training: {field}: {message.removeprefix('Value error, ')}")
    except ValueError as exc:
        fail(str(exc))
    try:
        if report_only:
            typer.echo(f"report: {write_report(config)}", err=True)
        else:
            Runner(config, echo=lambda line: typer.echo(line, err=True)).run()
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to continue", err=True)
        raise typer.Exit(130) from None


# --- Jobs over HTTP -------------------------------------------------------------------------


def _api(rewriter: RewriterSettings, service: ServiceSettings) -> httpx.Client:
    import httpx

    headers = {"Authorization": f"Bearer {service.api_key}"} if service.api_key else {}
    return httpx.Client(base_url=rewriter.url.rstrip("/"), headers=headers, timeout=600)


def _check(reply: httpx.Response) -> dict:
    if reply.status_code >= 400:
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text
        fail(f"HTTP {reply.status_code}: {detail}")
    return reply.json()


@app.command()
@command_options(source=DataOptions, options=RewriteOptions, rewriter=REWRITER_URL,
                 service=ServiceSettings)
def submit(
    source: DataOptions, options: RewriteOptions, rewriter: RewriterSettings,
    service: ServiceSettings,
    job_id: Annotated[str | None, typer.Option(help="Choose the job id (idempotent).")] = None,
    follow: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
) -> None:
    """Send a rewrite job to the rewriter service; prints the job id."""
    problems = _read_problems(source)
    body: dict[str, object] = {"items": [p.model_dump() for p in problems],
                               "options": options.model_dump()}
    if job_id:
        body["job_id"] = job_id
    with _api(rewriter, service) as client:
        job = _check(client.post("/v1/jobs", json=body))
        typer.echo(job["job_id"])
        if follow:
            _follow(client, job["job_id"], len(problems))


def _follow(client: httpx.Client, job_id: str, total: int) -> None:
    import time

    from tqdm import tqdm

    from mindgap.jobs import FINISHED

    with tqdm(
total=total, unit="problem", desc=f"job {job_id}", file=sys.stderr) as bar:
        while True:
            status = _check(client.get(f"/v1/jobs/{job_id}"))
            settled = round(status["progress"] * status["total"], 2)  # in-batch work too
            bar.update(settled - bar.n)
            bar.set_postfix(ordered_dict={k: status["counts"].get(k, 0) for k in SOURCES})
            if status["status"] in FINISHED:
                break
            time.sleep(1.0)
    typer.echo(f"job {job_id}: {status['status']}", err=True)


@app.command()
@command_options(rewriter=REWRITER_URL, service=ServiceSettings)
def results(
    rewriter: RewriterSettings, service: ServiceSettings,
    job_id: Annotated[str, typer.Argument(help="The job id from `mindgap submit`.")],
    out: Annotated[Path, typer.Option(help="Write the aligned examples here (JSONL).")],
) -> None:
    """Download a job's aligned examples (JSON lines)."""
    count = 0
    with _api(rewriter, service) as client, client.stream(
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


# --- Training -------------------------------------------------------------------------------


@app.command()
@command_options(config=TrainConfig)
def train(
    ctx: typer.Context,
    config: TrainConfig,
    paths: Annotated[list[str] | None, typer.Argument(
        help="More data files, like --data (so `--data a.jsonl b.jsonl` takes both).",
        show_default=False)] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="A YAML file of options under their field names (max_steps: 200); "
        "flags given too override it. A run saves its resolved config as OUT/config.yaml, "
        "which this reads back.", show_default=False)] = None,
) -> None:
    """Fine-tune on aligned examples (files or the live Redis stream): sft, dft or is loss.

    Prints the summary as JSON (rank 0). For many processes:
    `torchrun --nproc_per_node N -m mindgap.trainer ...` (the same flags).
    """
    from pydantic import ValidationError

    from mindgap.jsonl import first_error
    from mindgap.trainer.config import merge_config, read_config_file

    given = {name for name in TrainConfig.model_fields
             if (source := ctx.get_parameter_source(name)) and source.name == "COMMANDLINE"}
    try:
        file_values = read_config_file(config_file) if config_file else {}
        config = merge_config(file_values, config, given, list(paths or []))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            field, message = first_error(exc)
            fail(f"{config_file or 'options'}: {field}: {message.removeprefix('Value error, ')}")
        fail(str(exc))
    if bool(config.data) == bool(config.redis):
        fail("give --data FILE... or --redis URL (the live stream), one of them")
    _train(config)


def _train(config: TrainConfig) -> None:
    """Run ``mindgap train``'s resolved config; print the summary (rank 0)."""
    from mindgap.rewriter.model_store import resolve_model
    from mindgap.trainer.loop import train as run_training
    from mindgap.trainer.reporting import ReporterMissing
    from mindgap.trainer.schedule import ScheduleChanged

    _log_to_stderr()
    if not config.model:
        config = config.model_copy(update={"model": resolve_model(None)})
    try:
        summary = run_training(config)
    except (ReporterMissing, ScheduleChanged) as exc:
        fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps(summary, default=str))


# --- Housekeeping ---------------------------------------------------------------------------


@model_app.command("prepare")
def model_prepare(force: Annotated[bool, typer.Option(help="Convert again.")] = False) -> None:
    """Convert the packaged SmolLM2 GGUF to a safetensors folder in the cache (once)."""
    from mindgap.rewriter.model_store import prepare_default_model

    typer.echo(str(prepare_default_model(force=force)))


@app.command()
def version() -> None:
    """Print the mindgap version."""
    typer.echo(json.dumps({"mindgap": __version__}))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
