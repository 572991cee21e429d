"""scripts/compose_native.py passes: the compose cpu + train-cpu topology run natively, one
network namespace per service, a job submitted with curl from an outside namespace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose_native.py"
TIMEOUT_S = 1200  # the script; the test's own limit leaves it time to clean up


def _missing() -> str | None:
    """Why this host cannot run the smoke test, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veths, /etc/netns)"
    if shutil.which("ip") is None or subprocess.run(
            ["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` is unavailable (iproute2, CAP_SYS_ADMIN)"
    tools = {"redis-server": shutil.which("redis-server"), "curl": shutil.which("curl"),
             "unshare": shutil.which("unshare"), "nsenter": shutil.which("nsenter"),
             "docker-compose": shutil.which("docker-compose",
                                            path=str(Path(sys.executable).parent))}
    if absent := [name for name, path in tools.items() if path is None]:
        return f"not installed: {', '.join(absent)} (docker-compose: the dev extra)"
    cache = Path(os.environ.get("MINDGAP_CACHE_DIR", Path.home() / ".cache" / "mindgap"))
    if not any((cache / "models").glob("*")):
        return f"the default model is not prepared in {cache} (`mindgap model prepare`)"
    return None


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 400)
def test_compose_topology_natively(tmp_path: Path) -> None:
    if reason := _missing():
        pytest.skip(reason)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--keep", str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script cleans up on SIGTERM
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    summary = json.loads(out.rsplit("compose_native: ok ", 1)[1])
    assert summary["results"] == 8
    assert summary["checkpoint"] == "step-00000002"
    assert summary["aof"]
    assert summary["outside_reaches"] == {"redis": [], "verifier": [], "rewriter": [8000],
                                          "worker-cpu": [], "trainer-cpu": []}
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in leftovers.splitlines() if line.startswith("mg-")]
    assert not list(Path("/etc/netns").glob("mg-*"))
