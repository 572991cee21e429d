"""`mindgap experiment` end to end on a tiny random model (SmolLM2's tokenizer, so its chat
template) with the transformers engine and the real verifier: killed mid-training, run
again, it continues from its caches and writes the report. One arm is online: a real
worker child rewrites its problems through the real Redis while a real trainer child trains
on them and publishes policy versions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA as SHARED_BENCHMARKS
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.skipif(not SHARED_BENCHMARKS.exists(),
                                reason=f"{SHARED_BENCHMARKS} is absent (benchmark files)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with the packaged model's tokenizer."""
    from transformers import AutoTokenizer

    from mindgap.rewriter.model_store import resolve_model
    from mindgap.trainer.testing import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    path = tmp_path_factory.mktemp("tiny")
    model = tiny_llama(0, vocab=len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _config(tmp_path: Path, model: Path, prefix: str) -> Path:
    config = {
        "name": "tiny experiment", "work_dir": str(tmp_path / "work"),
        "report_dir": str(tmp_path / "report"), "model": str(model), "engine": "transformers",
        "data_dir": str(SHARED_BENCHMARKS),
        "train": {"benchmarks": "asdiv,svamp", "limit": 3},
        "heldout": {"benchmarks": "asdiv,multiarith", "limit": 3},
        "drift": {"benchmarks": "svamp", "limit": 3}, "drift_max_tokens": 8,
        "rewrite": {"k_self": 1, "k_guided": 1, "max_tokens": 8},
        "eval": {"n": 2, "max_tokens": 8},
        "training": {"max_steps": 6, "global_batch": 2, "batch_tokens": 4096,
                     "max_length": 512, "lr": 1e-3, "save_every": 1, "save_total_limit": 0,
                     "progress": False},  # every checkpoint kept: the kill marker stays
        "arms": [{"name": "sft-expert", "data": "expert", "loss": "sft", "seeds": [0, 1]},
                 {"name": "dft-rewritten", "data": "rewritten", "loss": "dft"},
                 {"name": "is-online", "data": "rewritten", "loss": "is", "mode": "online"}],
        "online": {"redis_url": REDIS_URL, "prefix": prefix, "publish_every": 1,
                   "max_staleness": 1, "worker_batch_size": 2, "max_ahead_steps": 1},
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "mindgap.cli", "experiment", str(config)]


def _kill_when(process: subprocess.Popen[str], marker: Path, timeout_s: float = 300) -> None:
    """SIGKILL the experiment and its children once ``marker`` exists."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        assert process.poll() is None, "the experiment ended before the kill"
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_experiment_continues_and_reports(tmp_path: Path, tiny_model: Path,
                                                 prefix: str) -> None:
    config = _config(tmp_path, tiny_model, prefix)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(_command(config), env=env, start_new_session=True, text=True,
                             stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    checkpoint = tmp_path / "work" / "arms" / "sft-expert-s0" / "checkpoints" / "step-00000002"
    _kill_when(first, checkpoint)
    assert not (tmp_path / "work" / "arms" / "sft-expert-s0" / "final").exists()

    second = subprocess.run(_command(config), env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "rewrite rewritten: cached" in second.stderr
    assert "gap expert: cached" in second.stderr
    metrics_rows = (tmp_path / "work" / "arms" / "sft-expert-s0" / "metrics.jsonl"
                    ).read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics_rows if '"step"' in line]
    assert sorted(set(steps)) == list(range(1, 7)) and steps[-1] == 6  # resumed, not restarted

    report = tmp_path / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert list(metrics["runs"]) == ["start", "sft-expert-s0", "sft-expert-s1",
                                     "dft-rewritten-s0", "is-online-s0"]
    start_kl = metrics["runs"]["start"]["drift_kl"]
    assert abs(start_kl) < 1e-5  # the start model against itself: scoring noise only
    assert metrics["runs"]["sft-expert-s0"]["drift_kl"] > max(1e-4, 10 * abs(start_kl))
    assert metrics["data"]["expert"]["sources"] == {"expert": 6}
    assert metrics["data"]["expert"]["ratio_var"] is not None
    assert set(metrics["seed_noise"]) == {"sft-expert"}
    assert metrics["runs"]["dft-rewritten-s0"]["vs_baseline"]["problems"] == 6
    text = (report / "report.md").read_text()
    assert "| dft-rewritten-s0 | rewritten | dft |" in text
    for name in ("curves.png", "summary.png", "config.yaml", "rewritten.summary.json"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "curves.png").read_bytes()[:4] == b"\x89PNG"
    _check_online_arm(tmp_path, metrics, text, prefix)

    again = subprocess.run([*_command(config), "--report-only"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]


def _check_online_arm(tmp_path: Path, metrics: dict, text: str, prefix: str) -> None:
    """The online arm trained on its job's results, which the worker produced at the
    versions the trainer published; the report compares it; its Redis keys are gone."""
    import redis

    work = tmp_path / "work"
    assert (work / "arms" / "is-online-s0" / "final").exists()
    assert not (work / "arms" / "is-online-s0" / "policy").exists()  # versions deleted
    summary = json.loads((work / "arms" / "is-online-s0" / "online.json").read_text())
    assert summary["job"]["status"] == "completed"
    assert summary["job"]["total"] == 6 and summary["job"]["done"] >= 6
    assert [v["version"] for v in summary["versions"]] == list(range(1, len(
        summary["versions"]) + 1)) and summary["versions"]
    examples = [json.loads(line) for line in
                (work / "data" / "online-is-online-s0.jsonl").read_text().splitlines()]
    assert {e["problem_id"] for e in examples} == {
        json.loads(line)["id"] for line in (work / "data" / "train.jsonl").read_text().splitlines()}
    assert (work / "logs" / "worker-is-online-s0.log").stat().st_size > 0
    run = metrics["runs"]["is-online-s0"]
    online = run["online"]
    assert run["mode"] == "online" and run["vs_baseline"]["problems"] == 6
    assert online["versions"] == len(summary["versions"])
    assert sum(online["produced"].values()) == len(examples)
    assert sum(online["trained"].values()) == 6
    assert sum(online["staleness"].values()) == online["trained"]["self"] + \
        online["trained"]["guided"]
    assert run["train_logprob_mean"] is not None
    assert metrics["runs"]["dft-rewritten-s0"]["mode"] == "offline"
    assert "## Offline and online" in text and "| is-online-s0 | online | rewritten | is |" in text
    assert (tmp_path / "report" / "online.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{prefix}:*"))
