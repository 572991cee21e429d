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
    from services.verifier.pool import LocalVerifier

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

    from services.verifier.pool import LocalVerifier

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
    from services.verifier.app import create_app

    overrides = {k: v for k, v in {"workers": workers, "timeout_s": timeout}.items()
                 if v is not None}
    settings = VerifierSettings(**overrides)
    uvicorn.run(create_app(settings=settings), host=host, port=port, log_level=log_level)


@app.command()
def version() -> None:
    """Print the mindgap version."""
    typer.echo(json.dumps({"mindgap": __version__}))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
