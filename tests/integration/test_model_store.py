"""``mindgap model prepare``: the packaged GGUF becomes a loadable safetensors folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_prepare_into_an_empty_cache(tmp_path: Path) -> None:
    env = {**os.environ, "MINDGAP_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "mindgap.cli", "model", "prepare"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = Path(run.stdout.strip())
    assert folder.parent.parent == tmp_path
    assert (folder / "model.safetensors").stat().st_size > 100_000_000  # float32 weights
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert not [p for p in folder.parent.iterdir() if p != folder]  # no partial copies left
