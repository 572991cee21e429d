"""Verifier throughput and latency benchmark on real MATH-500 and GSM8K pairs.

Four ways of checking the same (response, reference) pairs are timed on this machine:

1. ``math-verify direct``: Math-Verify called in this process, sequentially, the way a user
   would without mindgap (``verify(parse("$" + reference + "$"), parse(response))`` with the
   library's default extraction configs and timeouts).
2. ``LocalVerifier``: mindgap's sandboxed worker pool (default workers = cores),
   ``verify_batch`` on every pair, ``--copies`` times over (default 40: about 73,000
   items, a few seconds, so the rate is the steady state and not a 0.2 s burst); pool
   start-up and a small warm-up batch are excluded.
3. ``HTTP batch``: a real ``mindgap serve verifier`` subprocess, ``POST /v1/verify/batch``
   with chunks of 256 items, 2 requests in flight, on the same ``--copies`` workload.
4. Single-call latency: sequential ``POST /v1/verify`` calls (GSM8K integer answers, and
   MATH-500 answers), reported as p50 and p99.

Pairs: MATH-500 ``solution`` (response) vs ``answer`` (reference); GSM8K ``answer`` (the full
worked solution ending in ``#### n``) vs the number after ``####``.

Run: ``.venv/bin/python benchmarks/verifier_throughput.py [--limit N] [--data-dir DIR]``.
Results go to ``benchmarks/results/verifier_throughput.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _machine
import httpx
from tqdm import tqdm

from mindgap.jsonl import json_lines
from mindgap.schemas import VerifyBatchResponse, VerifyRequest, VerifyResult
from mindgap.verifier.pool import LocalVerifier

DEFAULT_OUTPUT = _machine.RESULTS / "verifier_throughput.json"
HTTP_CHUNK = 256
IN_FLIGHT = 2
LATENCY_CALLS = 300
WARMUP_ITEMS = 8
READY_WAIT_S = 180.0
HTTP_TIMEOUT_S = 600.0

TARGET_POOL_OVER_DIRECT = 1.5
TARGET_HTTP_OVER_POOL = 0.8
TARGET_P99_INT_MS = 50.0


@dataclass(frozen=True)
class Pair:
    """One verification item taken from a benchmark file."""

    dataset: str
    index: int
    response: str
    reference: str

    def request(self) -> VerifyRequest:
        """The pair as a mindgap verification request."""
        return VerifyRequest(response=self.response, reference=self.reference)


@dataclass
class MethodRun:
    """Timing and verdicts of one method over a list of pairs.

    ``seconds`` is the best (shortest) of ``rounds`` timed passes over the same pairs, as with
    ``timeit``: on a shared machine the best pass is the one least disturbed by other load.
    """

    name: str
    items: int
    seconds: float
    verdicts: list[bool]
    reasons: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float | None = None
    """CPU time of the best pass (all the method's processes), when known."""
    rounds: list[float] = field(default_factory=list)
    """Wall seconds of every timed pass."""

    @classmethod
    def best(cls, name: str, items: int, timings: Sequence[tuple[float, float | None]],
             verdicts: list[bool], reasons: Counter[str]) -> MethodRun:
        """A run from ``(wall, cpu)`` per pass, keeping the fastest pass's numbers."""
        wall, cpu = min(timings, key=lambda t: t[0])
        return cls(name, items, wall, verdicts, reasons, cpu, [t[0] for t in timings])

    @property
    def rate(self) -> float:
        """Verifications per second."""
        return self.items / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------- data


def _rows(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` (None: all) rows of a JSON-lines file."""
    return [row for _, row in json_lines(path)][:limit]


def load_math500(path: Path, limit: int | None) -> list[Pair]:
    """MATH-500 pairs: the worked ``solution`` against the bare ``answer``."""
    rows = _rows(path, limit)
    return [Pair("math500", i, row["solution"], row["answer"]) for i, row in enumerate(rows)]


def load_gsm8k(path: Path, limit: int | None) -> list[Pair]:
    """GSM8K pairs: the full ``answer`` text against the number after ``####``."""
    rows = _rows(path, limit)
    pairs = []
    for i, row in enumerate(rows):
        text: str = row["answer"]
        if "####" not in text:
            raise ValueError(f"{path.name} row {i} has no '####' final answer")
        reference = text.rsplit("####", 1)[1].strip()
        pairs.append(Pair("gsm8k", i, text, reference))
    return pairs


def mismatched(pairs: Sequence[Pair]) -> list[Pair]:
    """Each response against the next pair's reference (same dataset), identical ones dropped.

    Real responses are then almost all wrong, so the equivalence checker (not only the
    exact-match shortcut) does the work: the slow path of a verifier.
    """
    out = []
    for dataset in sorted({p.dataset for p in pairs}):
        group = [p for p in pairs if p.dataset == dataset]
        for pair, other in zip(group, group[1:] + group[:1], strict=True):
            if other.reference.strip() != pair.reference.strip():
                out.append(Pair(dataset, pair.index, pair.response, other.reference))
    return out


# --------------------------------------------------------------------------- helpers


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def warmup_items(pairs: Sequence[Pair], count: int = WARMUP_ITEMS) -> list[Pair]:
    """``count`` pairs spread over the list (so every dataset's code paths get warmed)."""
    step = max(1, len(pairs) // count)
    return list(pairs[::step][:count])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``); 0.0 when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- 1. direct


def _direct_wrap(reference: str) -> str:
    """A bare reference in math delimiters, as Math-Verify expects LaTeX to be anchored."""
    return reference if "$" in reference or "\\boxed" in reference else f"${reference}$"


def run_direct(pairs: Sequence[Pair], progress: bool, repeat: int = 1,
               suffix: str = "") -> MethodRun:
    """Math-Verify in this process, one pair after another, default configs and timeouts."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # timeouts are logged as errors

    def one(pair: Pair) -> tuple[bool, str]:
        try:
            gold = parse(_direct_wrap(pair.reference))
            target = parse(pair.response)
            ok = bool(verify(gold, target))
        except Exception as exc:  # Math-Verify normally swallows errors; count any that escape
            return False, f"exception:{type(exc).__name__}"
        if not gold:
            return ok, "reference_unparsed"
        if not target:
            return ok, "no_answer"
        return ok, "equal" if ok else "not_equal"

    for pair in warmup_items(pairs):  # import sympy/ANTLR and fill caches outside the clock
        one(pair)
    name = "math-verify direct" + suffix
    timings: list[tuple[float, float | None]] = []
    for round_no in range(repeat):
        verdicts: list[bool] = []
        reasons: Counter[str] = Counter()
        cpu_start = time.process_time()
        start = time.perf_counter()
        for pair in tqdm(pairs, desc=f"{name} {round_no + 1}/{repeat}", unit="pair",
                         disable=not progress, file=sys.stderr):
            ok, reason = one(pair)
            verdicts.append(ok)
            reasons[reason] += 1
        timings.append((time.perf_counter() - start, time.process_time() - cpu_start))
    return MethodRun.best(name, len(pairs), timings, verdicts, reasons)


# --------------------------------------------------------------------------- 2. pool


@contextlib.contextmanager
def _pool_progress(pool: LocalVerifier, total: int, progress: bool,
                   desc: str) -> Iterator[None]:
    """A tqdm bar fed from the pool's item counter while ``verify_batch`` blocks."""
    bar = tqdm(total=total, desc=desc, unit="pair", disable=not progress, file=sys.stderr)
    base = pool.stats.items
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.2):
            bar.n = min(pool.stats.items - base, total)
            bar.refresh()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.n = min(pool.stats.items - base, total)
        bar.close()


def run_pool(pairs: Sequence[Pair], progress: bool, repeat: int = 1,
             suffix: str = "") -> tuple[MethodRun, list[VerifyResult]]:
    """``LocalVerifier().verify_batch`` over every pair, start-up and warm-up excluded.

    CPU time is this process's (dispatch threads, progress bar) plus the workers' own; it is
    undercounted only if a worker is replaced during the run.
    """
    requests = [pair.request() for pair in pairs]
    with LocalVerifier() as pool:
        pool.verify_batch([p.request() for p in warmup_items(pairs, max(WARMUP_ITEMS,
                                                                         pool.workers))])
        name = f"LocalVerifier ({pool.workers} workers)" + suffix
        timings: list[tuple[float, float | None]] = []
        results: list[VerifyResult] = []
        for round_no in range(repeat):
            pids = pool.worker_pids()
            with _pool_progress(pool, len(requests), progress,
                                f"{name} {round_no + 1}/{repeat}"):
                cpu_start = time.process_time() + sum(map(process_cpu_seconds, pids))
                start = time.perf_counter()
                results = pool.verify_batch(requests)
                wall = time.perf_counter() - start
                cpu = time.process_time() + sum(map(process_cpu_seconds, pids)) - cpu_start
            timings.append((wall, cpu))
    run = MethodRun.best(name, len(pairs), timings, [r.correct for r in results],
                         Counter(r.reason.value for r in results))
    return run, results


# --------------------------------------------------------------------------- 3/4. HTTP


class VerifierServer:
    """A ``mindgap serve verifier`` subprocess; always stopped on exit from ``with``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> VerifierServer:
        start = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mindgap.cli", "serve", "verifier", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=_machine.PROJECT_ROOT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_WAIT_S
        with httpx.Client(base_url=self.url, timeout=15.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"verifier server exited with code "
                                       f"{self.process.returncode} before becoming ready")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.25)
        raise RuntimeError(f"verifier server not ready on {self.url} after {READY_WAIT_S:g} s")

    def stop(self) -> None:
        """Terminate the server (it closes its pool), killing it if it does not exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _results(reply: httpx.Response) -> list[VerifyResult]:
    reply.raise_for_status()
    return VerifyBatchResponse.model_validate_json(reply.content).results


def run_http_batch(client: httpx.Client, pairs: Sequence[Pair], chunk: int,
                   progress: bool, repeat: int = 1) -> tuple[MethodRun, list[VerifyResult]]:
    """``POST /v1/verify/batch`` with ``chunk`` items per request, ``IN_FLIGHT`` requests at
    a time (as ``VerifierClient.averify_batch`` sends its chunks concurrently), so the
    pool is not idle while one request is parsed and answered."""
    bodies = [{"items": [p.request().model_dump() for p in pairs[i : i + chunk]]}
              for i in range(0, len(pairs), chunk)]
    warm = [p.request().model_dump() for p in warmup_items(pairs)]
    _results(client.post("/v1/verify/batch", json={"items": warm}))
    name = f"HTTP batch ({chunk}/request, {IN_FLIGHT} in flight)"
    timings: list[tuple[float, float | None]] = []
    results: list[VerifyResult] = []
    for round_no in range(repeat):
        results = []
        start = time.perf_counter()
        with tqdm(total=len(pairs), desc=f"{name} {round_no + 1}/{repeat}", unit="pair",
                  disable=not progress, file=sys.stderr) as bar, \
                ThreadPoolExecutor(max_workers=IN_FLIGHT) as senders:
            for got in senders.map(
                    lambda body: _results(client.post("/v1/verify/batch", json=body)), bodies):
                results += got
                bar.update(len(got))
        timings.append((time.perf_counter() - start, None))
        if len(results) != len(pairs):
            raise RuntimeError(f"HTTP batch returned {len(results)} results for "
                               f"{len(pairs)} items")
    run = MethodRun.best(name, len(pairs), timings, [r.correct for r in results],
                         Counter(r.reason.value for r in results))
    return run, results


def run_latency(client: httpx.Client, pairs: Sequence[Pair], calls: int, label: str,
                progress: bool) -> dict[str, Any]:
    """``calls`` sequential ``POST /v1/verify`` round trips (cycling through ``pairs``)."""
    chosen = [pairs[i % len(pairs)] for i in range(calls)]
    for pair in chosen[:5]:  # warm connections and code paths
        client.post("/v1/verify", json=pair.request().model_dump()).raise_for_status()
    latencies: list[float] = []
    server_ms: list[float] = []
    correct = 0
    for pair in tqdm(chosen, desc=f"latency {label}", unit="call", disable=not progress,
                     file=sys.stderr):
        body = pair.request().model_dump()
        start = time.perf_counter()
        reply = client.post("/v1/verify", json=body)
        latencies.append((time.perf_counter() - start) * 1000)
        reply.raise_for_status()
        result = VerifyResult.model_validate(reply.json())
        server_ms.append(result.elapsed_ms)
        correct += result.correct
    return {
        "label": label, "calls": calls, "distinct_pairs": min(calls, len(pairs)),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies), "mean_ms": sum(latencies) / len(latencies),
        "check_p50_ms": percentile(server_ms, 50), "check_p99_ms": percentile(server_ms, 99),
        "fraction_correct": correct / calls,
    }


# --------------------------------------------------------------------------- report


def first_copy(run: MethodRun, results: list[VerifyResult],
               n: int) -> tuple[MethodRun, list[VerifyResult]]:
    """The verdicts and results of the first ``n`` items (one copy of the pairs): what the
    agreement tables compare; the timing still covers every copy."""
    return dataclasses.replace(run, verdicts=run.verdicts[:n]), results[:n]


def agreement(pairs: Sequence[Pair], run: MethodRun) -> dict[str, float]:
    """Fraction of pairs judged correct, per dataset and overall."""
    out: dict[str, float] = {}
    for dataset in sorted({p.dataset for p in pairs}):
        picked = [v for p, v in zip(pairs, run.verdicts, strict=True) if p.dataset == dataset]
        out[dataset] = sum(picked) / len(picked)
    out["all"] = sum(run.verdicts) / len(run.verdicts)
    return out


def disagreements(pairs: Sequence[Pair], a: MethodRun, b: MethodRun,
                  b_results: Sequence[VerifyResult] | None, examples: int
                  ) -> dict[str, Any]:
    """Pairs on which two methods disagree: counts per direction and a few examples."""
    rows = []
    for k, (pair, va, vb) in enumerate(zip(pairs, a.verdicts, b.verdicts, strict=True)):
        if va == vb:
            continue
        row: dict[str, Any] = {"dataset": pair.dataset, "index": pair.index,
                               "reference": pair.reference[:120], a.name: va, b.name: vb}
        if b_results is not None:
            row["extracted"] = (b_results[k].extracted or "")[:120]
            row["reason"] = b_results[k].reason.value
        rows.append(row)
    by_dataset = Counter(r["dataset"] for r in rows)
    only_a = sum(1 for r in rows if r[a.name])
    picked: list[dict[str, Any]] = []
    for dataset in sorted(by_dataset):
        picked += [r for r in rows if r["dataset"] == dataset][:examples]
    return {"between": [a.name, b.name], "count": len(rows), "by_dataset": dict(by_dataset),
            f"only {a.name} correct": only_a, f"only {b.name} correct": len(rows) - only_a,
            "examples": picked}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=_machine.DEFAULT_DATA_DIR,
                        help="folder holding math500.jsonl and gsm8k_test.jsonl")
    parser.add_argument("--limit", type=int, default=None,
                        help="pairs per dataset (default: all, 500 + 1319)")
    for flag, default, text in (
        ("--copies", 40, "pool and HTTP throughput: the pairs this many times over"),
        ("--chunk", HTTP_CHUNK, "items per /v1/verify/batch request"),
        ("--latency-calls", LATENCY_CALLS, "sequential /v1/verify calls per latency measurement"),
        ("--repeat", 3, "timed passes per throughput measurement; the best is reported"),
        ("--examples", 5, "disagreement examples kept per dataset"),
    ):
        parser.add_argument(flag, type=int, default=default, help=text)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--no-mismatched", action="store_true",
                        help="skip the informational run on mismatched (wrong) pairs")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if min(args.chunk, args.latency_calls, args.repeat, args.copies) < 1:
        parser.error("--chunk, --latency-calls, --repeat and --copies must be at least 1")
    return args


def load_pairs(data_dir: Path, limit: int | None) -> tuple[list[Pair], list[Pair]]:
    """The MATH-500 and the GSM8K pairs (exits when a data file is missing)."""
    math500, gsm8k = data_dir / "math500.jsonl", data_dir / "gsm8k_test.jsonl"
    _machine.require_data(math500, gsm8k)
    return load_math500(math500, limit), load_gsm8k(gsm8k, limit)


@dataclass
class Measurements:
    """What one run measured: each method on the pairs, latencies, the mismatched runs."""

    pairs: list[Pair]
    direct: MethodRun
    pool: MethodRun
    pool_results: list[VerifyResult]
    http: MethodRun
    http_results: list[VerifyResult]
    latency_int: dict[str, Any]
    latency_math: dict[str, Any]
    server_startup_s: float | None
    wrong: list[Pair]
    wrong_runs: list[MethodRun]
    """The direct and the pool run on the mismatched pairs (none with ``--no-mismatched``)."""
    wrong_pool_results: list[VerifyResult]

    def ratios(self) -> dict[str, float]:
        """Pool over direct and HTTP over pool, in items per second."""
        return {"pool_over_direct": self.pool.rate / self.direct.rate,
                "http_over_pool": self.http.rate / self.pool.rate}

    def checks(self) -> dict[str, bool]:
        """Whether each target is met."""
        ratios = self.ratios()
        return {"pool_over_direct": ratios["pool_over_direct"] >= TARGET_POOL_OVER_DIRECT,
                "http_over_pool": ratios["http_over_pool"] >= TARGET_HTTP_OVER_POOL,
                "p99_single_call_int": self.latency_int["p99_ms"] < TARGET_P99_INT_MS}


def measure(args: argparse.Namespace, math_pairs: list[Pair],
            gsm_pairs: list[Pair]) -> Measurements:
    """Time direct, pool and HTTP on the pairs, the single-call latency, then the mismatched."""
    progress = not args.no_progress
    pairs = math_pairs + gsm_pairs
    direct = run_direct(pairs, progress, args.repeat)
    bulk = list(pairs) * args.copies
    pool, pool_results = first_copy(*run_pool(bulk, progress, args.repeat), len(pairs))
    with VerifierServer(free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        http, http_results = first_copy(
            *run_http_batch(client, bulk, args.chunk, progress, args.repeat), len(pairs))
        latency_int = run_latency(client, gsm_pairs, args.latency_calls, "GSM8K int", progress)
        latency_math = run_latency(client, math_pairs, args.latency_calls, "MATH-500", progress)
        server_startup_s = server.startup_s
    wrong: list[Pair] = [] if args.no_mismatched else mismatched(pairs)
    wrong_runs: list[MethodRun] = []
    wrong_pool_results: list[VerifyResult] = []
    if wrong:
        wrong_direct = run_direct(wrong, progress, args.repeat, " [mismatched]")
        wrong_pool, wrong_pool_results = run_pool(wrong, progress, args.repeat, " [mismatched]")
        wrong_runs = [wrong_direct, wrong_pool]
    return Measurements(pairs, direct, pool, pool_results, http, http_results, latency_int,
                        latency_math, server_startup_s, wrong, wrong_runs, wrong_pool_results)


def method_table(m: Measurements, checks: dict[str, bool]) -> str:
    """Items per second of every method, with the ratio targets."""
    ratios = m.ratios()
    wrong_rows = [[run.name, str(run.items), f"{run.seconds:.2f}", f"{run.rate:.1f}",
                   f"{m.wrong_runs[1].rate / m.wrong_runs[0].rate:.2f}x pool/direct"
                   if run is m.wrong_runs[1] else "-", "-", "info"] for run in m.wrong_runs]
    return _machine.format_table(
        ["method", "items", "seconds", "items/s", "ratio", "target", "result"],
        [
            [m.direct.name, str(m.direct.items), f"{m.direct.seconds:.2f}",
             f"{m.direct.rate:.1f}", "-", "-", "-"],
            [m.pool.name, str(m.pool.items), f"{m.pool.seconds:.2f}", f"{m.pool.rate:.1f}",
             f"{ratios['pool_over_direct']:.2f}x pool/direct", f">= {TARGET_POOL_OVER_DIRECT}",
             _machine.verdict(checks["pool_over_direct"])],
            [m.http.name, str(m.http.items), f"{m.http.seconds:.2f}", f"{m.http.rate:.1f}",
             f"{ratios['http_over_pool']:.2f}x http/pool", f">= {TARGET_HTTP_OVER_POOL}",
             _machine.verdict(checks["http_over_pool"])],
            *wrong_rows,
        ],
    )


def latency_table(m: Measurements, checks: dict[str, bool]) -> str:
    """p50/p99/max of the single calls, with the integer-answer target."""
    targets = [(m.latency_int, f"p99 < {TARGET_P99_INT_MS:g} ms",
                _machine.verdict(checks["p99_single_call_int"])), (m.latency_math, "-", "info")]
    return _machine.format_table(
        ["latency (POST /v1/verify)", "calls", "p50 ms", "p99 ms", "max ms", "target", "result"],
        [[lat["label"], str(lat["calls"]), f"{lat['p50_ms']:.1f}", f"{lat['p99_ms']:.1f}",
          f"{lat['max_ms']:.1f}", target, result] for lat, target, result in targets],
    )


def all_disagreements(m: Measurements, examples: int) -> dict[str, dict[str, Any] | None]:
    """Direct vs pool and pool vs HTTP on the pairs; direct vs pool on the mismatched."""
    return {
        "direct_vs_pool": disagreements(m.pairs, m.direct, m.pool, m.pool_results, examples),
        "pool_vs_http": disagreements(m.pairs, m.pool, m.http, m.http_results, examples),
        "mismatched_direct_vs_pool": disagreements(
            m.wrong, m.wrong_runs[0], m.wrong_runs[1], m.wrong_pool_results, examples)
        if m.wrong_runs else None,
    }


def print_results(m: Measurements, tables: dict[str, str], correct: dict[str, dict[str, float]],
                  diffs: dict[str, dict[str, Any] | None]) -> None:
    """The tables, the disagreements with examples, the reasons and CPU seconds."""
    agree_table = _machine.format_table(
        ["fraction judged correct", "math500", "gsm8k", "all"],
        [[name, *(f"{a.get(k, float('nan')):.3f}" for k in ("math500", "gsm8k", "all"))]
         for name, a in correct.items()],
    )
    print("\n\n".join([tables["table"], tables["latency_table"], agree_table]))
    print()
    for diff in diffs.values():
        if diff is None:
            continue
        a_name, b_name = diff["between"]
        print(f"disagreements {a_name} vs {b_name}: {diff['count']} {diff['by_dataset']}")
        for ex in diff["examples"]:
            print(f"  {ex['dataset']}[{ex['index']}] ref={ex['reference']!r} "
                  f"{a_name}={ex[a_name]} {b_name}={ex[b_name]} "
                  f"extracted={ex.get('extracted')!r} reason={ex.get('reason')}")
    print(f"\nreasons: {m.pool.name}: {dict(m.pool.reasons)}; direct: {dict(m.direct.reasons)}")
    print("cpu seconds (all processes of the method): " + "; ".join(
        f"{r.name}: {r.cpu_seconds:.2f}" for r in [m.direct, m.pool, *m.wrong_runs]
        if r.cpu_seconds is not None))


def run_json(run: MethodRun, fraction_correct: dict[str, float]) -> dict[str, Any]:
    """One method's numbers for the results JSON."""
    return {"name": run.name, "items": run.items, "seconds": run.seconds,
            "items_per_s": run.rate, "cpu_seconds": run.cpu_seconds,
            "rounds_seconds": run.rounds, "reasons": dict(run.reasons),
            "fraction_correct": fraction_correct}


def results_json(m: Measurements, correct: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The ``results`` part of the JSON: each method, the ratios, latency, mismatched runs."""
    return {
        "direct": run_json(m.direct, correct[m.direct.name]),
        "pool": run_json(m.pool, correct[m.pool.name]),
        "http_batch": run_json(m.http, correct[m.http.name]),
        "ratios": m.ratios(),
        "latency": {"gsm8k_int": m.latency_int, "math500": m.latency_math},
        "server_startup_s": m.server_startup_s,
        "mismatched": {
            "note": "informational: each response against the next pair's reference, so "
                    "answers are wrong and the equivalence checker's slow path runs",
            "pairs": len(m.wrong),
            "runs": [run_json(r, correct[r.name]) for r in m.wrong_runs],
            "pool_over_direct": (m.wrong_runs[1].rate / m.wrong_runs[0].rate
                                 if m.wrong_runs else None),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table, write the JSON; the exit status.

    The status is 1 only with ``--strict`` and a missed target.
    """
    args = parse_args(argv)
    math_pairs, gsm_pairs = load_pairs(args.data_dir, args.limit)
    info = _machine.machine_info()
    wall_start = time.perf_counter()
    print(f"verifier throughput: {len(math_pairs)} MATH-500 + {len(gsm_pairs)} GSM8K pairs, "
          f"{info['cores']} cores, Python {info['python']}", file=sys.stderr)
    m = measure(args, math_pairs, gsm_pairs)
    checks = m.checks()
    tables = {"table": method_table(m, checks), "latency_table": latency_table(m, checks)}
    correct = {**{run.name: agreement(m.pairs, run) for run in (m.direct, m.pool, m.http)},
               **{run.name: agreement(m.wrong, run) for run in m.wrong_runs}}
    diffs = all_disagreements(m, args.examples)
    total_s = time.perf_counter() - wall_start

    print_results(m, tables, correct, diffs)
    print(_machine.end_load(info))
    print(f"total benchmark wall time: {total_s:.1f} s "
          f"(server start-up {m.server_startup_s:.1f} s)")
    _machine.save_json(args.output, {
        "benchmark": "verifier_throughput",
        "machine": info,
        "data": {"dir": str(args.data_dir), "math500_pairs": len(math_pairs),
                 "gsm8k_pairs": len(gsm_pairs), "limit": args.limit},
        "settings": {"copies": args.copies, "http_chunk": args.chunk,
                     "latency_calls": args.latency_calls,
                     "repeat": args.repeat, "timing": "best of `repeat` passes",
                     "warmup_items": WARMUP_ITEMS, "pool_workers": m.pool.name,
                     "direct_reference_wrapping": "$...$",
                     "direct_call": "verify(parse(ref), parse(response)), library defaults"},
        "targets": {"pool_over_direct_min": TARGET_POOL_OVER_DIRECT,
                    "http_over_pool_min": TARGET_HTTP_OVER_POOL,
                    "p99_single_call_int_max_ms": TARGET_P99_INT_MS},
        "results": results_json(m, correct),
        "checks": {name: _machine.verdict(ok) for name, ok in checks.items()},
        "disagreements": diffs,
        "total_wall_s": total_s,
        **tables,
    })
    print(f"results written to {args.output}", file=sys.stderr)
    return 1 if args.strict and not all(checks.values()) else 0

if __name__ == "__main__":
    sys.exit(main())
