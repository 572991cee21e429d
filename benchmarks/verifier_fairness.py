"""Verifier fairness and deadlines under a burst with pathological inputs (issue 10).

A real ``mindgap serve verifier`` (default settings unless flags say otherwise) gets a burst
of ``--requests`` ``POST /v1/verify`` calls, ``--concurrency`` at a time, in a fixed shuffled
order. A ``--pathological`` fraction of them carry inputs that run into the timeout (huge
powers and factorials that make sympy spin, slow symbolic expansions); half of those clients
disconnect after ``--disconnect-after`` seconds. Measured: the latency of normal items
(p50/p99/max), of the pathological ones that waited, the latest answer against timeout + 1 s,
status codes (no 5xx), and the server's own counts of cancelled items and worker restarts.

Targets: normal p99 < 2 s, no answer later than timeout + 1 s, no 5xx.

Run: ``.venv/bin/python benchmarks/verifier_fairness.py [--requests N] [--workers W]``.
Results go to ``benchmarks/results/verifier_fairness.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _machine
import httpx
from verifier_throughput import VerifierServer, free_port, percentile

from mindgap.config import VerifierSettings

DEFAULT_OUTPUT = _machine.RESULTS / "verifier_fairness.json"
TARGET_NORMAL_P99_S = 2.0
DEADLINE_SLACK_S = 1.0
CLIENT_TIMEOUT_S = 120.0
SEED = 10

PATHOLOGICAL = [
    ("\\boxed{9^{9^{9^{9}}}}", "5"),
    ("\\boxed{5}", "9^{9^{9^{9}}}"),
    ("\\boxed{(10^{10})!}", "5"),
    ("\\boxed{(x+1)^{40}(y+2)^{40}}", "(x+2)^{40}(y+1)^{40}"),
    ("\\boxed{(a+b+c+d)^{30}}", "(a+b+c+d+1)^{30}"),
]
"""Inputs that hit the timeout (from tests/integration/test_verifier_pool.py and
tests/adversarial/test_verifier_fairness.py)."""

NORMAL = [
    ("Adding them up gives 42 apples.\n#### 42", "42"),
    ("So the answer is \\boxed{\\frac{1}{2}}.", "0.5"),
    ("The final answer is $\\boxed{x^2+2x+1}$", "(x+1)^2"),
    ("Therefore \\boxed{\\{1, 2, 3\\}}", "\\{3, 2, 1\\}"),
    ("We get \\boxed{17}", "18"),
    ("The answer is \\boxed{\\sqrt{2}}", "\\frac{2}{\\sqrt{2}}"),
]


@dataclass
class Call:
    """One request of the burst and what became of it."""

    index: int
    kind: str
    """``normal``, ``pathological`` (waits for its answer) or ``disconnect``."""
    status: int | None = None
    """HTTP status, None when the client left (or the connection failed)."""
    seconds: float = 0.0
    reason: str | None = None
    error: str | None = None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests in the burst")
    parser.add_argument("--concurrency", type=int, default=20, help="requests in flight")
    parser.add_argument("--pathological", type=float, default=0.1,
                        help="fraction of requests with inputs that hit the timeout")
    parser.add_argument("--disconnect-after", type=float, default=0.5,
                        help="seconds after which half the pathological clients leave")
    parser.add_argument("--workers", type=int, default=None,
                        help="server sandbox workers (default: the server's, = cores)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="server per-item timeout, seconds (default: the server's)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target is missed")
    return parser.parse_args(argv)


def plan(requests: int, fraction: float) -> list[Call]:
    """The burst: every ``1/fraction``-th request pathological, every other one of those
    disconnecting, in a fixed shuffled order."""
    step = max(1, round(1 / fraction)) if fraction > 0 else requests + 1
    calls = []
    for i in range(requests):
        bad = i % step == step // 2
        kind = ("disconnect" if (i // step) % 2 else "pathological") if bad else "normal"
        calls.append(Call(i, kind))
    random.Random(SEED).shuffle(calls)
    return calls


_local = threading.local()


def _client(url: str) -> httpx.Client:
    """This sender thread's client (kept-alive connection), as a real client would keep."""
    if getattr(_local, "client", None) is None:
        _local.client = httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S, trust_env=False)
    return _local.client


def send(url: str, call: Call, disconnect_after: float) -> Call:
    """Make one call; a ``disconnect`` call gives up in time, closing its own connection."""
    pool = PATHOLOGICAL if call.kind != "normal" else NORMAL
    response, reference = pool[call.index % len(pool)]
    body = {"response": response, "reference": reference}
    start = time.perf_counter()
    try:
        if call.kind == "disconnect":
            with httpx.Client(base_url=url, timeout=disconnect_after, trust_env=False) as own:
                reply = own.post("/v1/verify", json=body)
        else:
            reply = _client(url).post("/v1/verify", json=body)
        call.status = reply.status_code
        if reply.status_code == 200:
            call.reason = reply.json()["reason"]
    except httpx.TimeoutException:
        call.error = "client left"
    except httpx.HTTPError as exc:
        call.error = f"{type(exc).__name__}: {exc}"
    call.seconds = time.perf_counter() - start
    return call


def server_counts(url: str) -> dict[str, float]:
    """The server's cancelled / timeout / restart / retry counters and its workers gauge."""
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    counts = {}
    for name in ("cancelled_total", "timeouts_total", "worker_restarts_total",
                 "retries_total", "workers"):
        match = re.search(rf"^mindgap_verifier_{name} (\S+)$", text, re.MULTILINE)
        counts[name] = float(match.group(1)) if match else float("nan")
    return counts


def latency(calls: list[Call]) -> dict[str, Any]:
    """p50/p99/max seconds of the calls that got an answer."""
    seconds = [c.seconds for c in calls if c.status is not None]
    return {"calls": len(calls), "answered": len(seconds),
            "p50_s": percentile(seconds, 50), "p99_s": percentile(seconds, 99),
            "max_s": max(seconds, default=float("nan"))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, send the burst, collect the numbers."""
    if args.workers is not None:
        os.environ["MINDGAP_VERIFIER_WORKERS"] = str(args.workers)
    if args.timeout is not None:
        os.environ["MINDGAP_VERIFIER_TIMEOUT_S"] = str(args.timeout)
    settings = VerifierSettings()
    calls = plan(args.requests, args.pathological)
    with VerifierServer(free_port()) as server:
        before = server_counts(server.url)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as senders:
            done = list(senders.map(lambda c: send(server.url, c, args.disconnect_after),
                                    calls))
        wall = time.perf_counter() - start
        time.sleep(1.0)  # let the server finish cancelling what the leavers left
        after = server_counts(server.url)
    counts = {name: after[name] - before[name] if name != "workers" else after[name]
              for name in after}
    return {"settings": settings, "calls": done, "wall_s": wall, "server": counts,
            "startup_s": server.startup_s}


def summarise(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Latency by kind, statuses, the latest answer; the checks against the targets."""
    calls: list[Call] = result["calls"]
    timeout_s = result["settings"].timeout_s
    by_kind = {kind: latency([c for c in calls if c.kind == kind])
               for kind in ("normal", "pathological", "disconnect")}
    answered = [c.seconds for c in calls if c.status is not None]
    statuses = Counter(str(c.status) if c.status is not None else c.error or "none"
                       for c in calls)
    server_errors = sum(1 for c in calls if c.status is not None and c.status >= 500)
    latest = max(answered, default=float("nan"))
    checks = {"normal_p99": by_kind["normal"]["p99_s"] < TARGET_NORMAL_P99_S,
              "latest_answer": latest <= timeout_s + DEADLINE_SLACK_S,
              "no_5xx": server_errors == 0}
    return {"by_kind": by_kind, "statuses": dict(statuses), "server_errors": server_errors,
            "latest_answer_s": latest, "timeout_s": timeout_s,
            "reasons": dict(Counter(c.reason for c in calls if c.reason)), "checks": checks}


def table(summary: dict[str, Any], server: dict[str, float]) -> str:
    """Latency by kind with the targets, then the counts."""
    rows = []
    for kind, lat in summary["by_kind"].items():
        target = f"p99 < {TARGET_NORMAL_P99_S:g} s" if kind == "normal" else "-"
        result = _machine.verdict(summary["checks"]["normal_p99"]) if kind == "normal" \
            else "info"
        rows.append([kind, str(lat["calls"]), str(lat["answered"]), f"{lat['p50_s']:.3f}",
                     f"{lat['p99_s']:.3f}", f"{lat['max_s']:.3f}", target, result])
    limit = summary["timeout_s"] + DEADLINE_SLACK_S
    rows.append(["latest answer", "-", "-", "-", "-", f"{summary['latest_answer_s']:.3f}",
                 f"<= {limit:g} s", _machine.verdict(summary["checks"]["latest_answer"])])
    rows.append(["5xx", "-", str(summary["server_errors"]), "-", "-", "-", "0",
                 _machine.verdict(summary["checks"]["no_5xx"])])
    lat_table = _machine.format_table(
        ["requests", "calls", "answered", "p50 s", "p99 s", "max s", "target", "result"], rows)
    counts = _machine.format_table(
        ["server counter (during the burst)", "value"],
        [[name, f"{value:g}"] for name, value in server.items()])
    return f"{lat_table}\n\n{counts}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the burst, print the tables, write the JSON; the exit status (1 only with
    ``--strict`` and a missed target)."""
    args = parse_args(argv)
    info = _machine.machine_info()
    result = run(args)
    summary = summarise(result, args)
    text = table(summary, result["server"])
    settings: VerifierSettings = result["settings"]
    print(f"verifier fairness: {args.requests} requests, {args.concurrency} concurrent, "
          f"{args.pathological:.0%} pathological (half leave after {args.disconnect_after:g} "
          f"s); server: {settings.workers} workers, timeout {settings.timeout_s:g} s; "
          f"burst wall time {result['wall_s']:.1f} s")
    print(text)
    print(f"statuses: {summary['statuses']}; reasons: {summary['reasons']}")
    print(_machine.end_load(info))
    _machine.save_json(args.output, {
        "benchmark": "verifier_fairness",
        "machine": info,
        "settings": {"requests": args.requests, "concurrency": args.concurrency,
                     "pathological_fraction": args.pathological,
                     "disconnect_after_s": args.disconnect_after,
                     "server_workers": settings.workers, "server_timeout_s": settings.timeout_s,
                     "max_queued_per_client": settings.max_queued_per_client, "seed": SEED},
        "targets": {"normal_p99_max_s": TARGET_NORMAL_P99_S,
                    "latest_answer_max_s": settings.timeout_s + DEADLINE_SLACK_S,
                    "server_errors": 0},
        "results": {**{k: v for k, v in summary.items() if k != "checks"},
                    "wall_s": result["wall_s"], "server_startup_s": result["startup_s"],
                    "server_counters": result["server"]},
        "checks": {name: _machine.verdict(ok) for name, ok in summary["checks"].items()},
        "calls": [asdict(c) for c in sorted(result["calls"], key=lambda c: c.index)],
        "table": text,
    })
    print(f"results written to {args.output}", file=sys.stderr)
    return 1 if args.strict and not all(summary["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
