"""scripts/validate_deploy.sh passes: compose under every profile, every k8s overlay."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("docker-compose", "kubectl", "kubernetes-validate")


def test_validate_deploy_script_passes() -> None:
    bindir = str(Path(sys.executable).parent)
    missing = [t for t in TOOLS if shutil.which(t) is None and shutil.which(t, path=bindir) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (docker-compose and kubernetes-validate "
                    "come with the dev extra; kubectl from the system)")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "validate_deploy.sh")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
