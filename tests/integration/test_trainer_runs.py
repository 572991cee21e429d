"""Whole training runs on a tiny random Llama: resume (exact), torchrun with 2 gloo processes
(same parameters as one process), the CLI, and a real-model smoke test (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mindgap.trainer.config import TrainConfig
from mindgap.trainer.loop import train
from mindgap.trainer.sources import FileStream
from mindgap.trainer.testing import save_tiny_model, synthetic_examples, write_jsonl
from tests.training import ROOT, kill_when, max_diff, steps, subprocess_env, weights

TRAIN_ARGS = ["--loss", "is", "--max-steps", "6", "--global-batch", "6", "--batch-tokens", "40",
              "--lr", "1e-2", "--warmup-steps", "2", "--no-progress", "--log-example-ids"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer")
    model = save_tiny_model(base / "model", seed=0)
    data = write_jsonl(base / "aligned.jsonl", synthetic_examples(20, seed=0))
    return base, model, data


@pytest.fixture(scope="module")
def whole_run(setup) -> Path:
    """The uninterrupted 6-step run (in process) that interrupted runs must reproduce."""
    base, model, data = setup
    torch.set_num_threads(1)
    summary = train(_config(model, data, base / "whole"))
    assert summary["steps"] == 6 and summary["stopped"] == "max_steps"
    return base / "whole"


def _cli(args: list[str], nproc: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--standalone", "-m", "mindgap.trainer", *args]
    else:
        cmd = [sys.executable, "-m", "mindgap.trainer", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _config(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    values = dict(data=[str(data)], model=str(model), out=str(out), loss="is", max_steps=6,
                  global_batch=6, batch_tokens=40, lr=1e-2, warmup_steps=2, progress=False,
                  log_example_ids=True)
    values.update(kw)
    return TrainConfig(**values)


def test_stop_and_resume_is_exact(setup, whole_run):
    base, model, data = setup
    out = base / "resumed"
    first = train(_config(model, data, out, stop_after=3))
    assert (first["steps"], first["stopped"]) == (3, "stop_after")
    assert first["final_model"] is None and Path(first["checkpoint"]).name == "step-00000003"
    second = train(_config(model, data, out, resume="latest"))
    assert (second["start_step"], second["steps"]) == (3, 6)

    assert max_diff(weights(base / "whole" / "final"), weights(out / "final")) == 0.0
    ids_whole = [s["example_ids"] for s in steps(base / "whole")]
    ids_resumed = [s["example_ids"] for s in steps(out)]
    assert [s["step"] for s in steps(out)] == [1, 2, 3, 4, 5, 6]
    assert ids_resumed == ids_whole
    # The data position continues: the served sequence is the source's own, with no example
    # repeated or skipped (20 examples, 36 served: one epoch, then 16 of the next).
    served = [i for ids in ids_resumed for i in ids]
    expected = [e.id for _, e in FileStream(data, seed=0).next_batch(36)]
    assert served == expected
    assert sorted(served[:20]) == sorted(f"ex-{i}" for i in range(20))
    # The loss, the schedule and the optimizer continued too.
    for a, b in zip(steps(base / "whole"), steps(out), strict=True):
        assert a["lr"] == b["lr"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_killed_run_resumes_exactly(setup, whole_run):
    """SIGKILL in the middle of a run with a checkpoint every step; --resume continues from
    the newest complete checkpoint and ends with the uninterrupted run's weights."""
    base, model, data = setup
    whole = whole_run  # TRAIN_ARGS are _config's defaults
    out = base / "killed"
    cmd = [sys.executable, "-m", "mindgap.trainer", "--data", str(data), "--model", str(model),
           "--out", str(out), "--save-every", "1", "--save-total-limit", "2", *TRAIN_ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, (out / "checkpoints" / "step-00000002").exists)
    if (out / "final").exists():
        pytest.skip("the run finished before the kill landed (machine too fast)")
    result = _cli(["--data", str(data), "--model", str(model), "--out", str(out),
                   "--save-every", "1", "--save-total-limit", "2", "--resume", "latest",
                   *TRAIN_ARGS])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 2 <= summary["start_step"] < 6 and summary["steps"] == 6
    assert max_diff(weights(whole / "final"), weights(out / "final")) == 0.0
    assert [s["example_ids"] for s in steps(out)] == [s["example_ids"]
                                                       for s in steps(whole)]
    assert len(list((out / "checkpoints").iterdir())) == 2  # save_total_limit


@pytest.mark.parametrize("mode", ["fsdp", pytest.param("allreduce", marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one(setup, mode):
    base, model, data = setup
    args = ["--data", str(data), "--model", str(model), "--loss", "is", "--max-steps", "3",
            "--global-batch", "6", "--batch-tokens", "40", "--lr", "1e-2", "--no-progress"]
    one = base / f"one-{mode}"
    two = base / f"two-{mode}"
    _cli([*args, "--out", str(one)])
    result = _cli([*args, "--out", str(two), "--dist-mode", mode], nproc=2)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["dist_mode"] == mode
    assert max_diff(weights(one / "final"), weights(two / "final")) < 1e-5
    for a, b in zip(steps(one), steps(two), strict=True):
        assert a["examples"] == b["examples"] == 6
        assert a["response_tokens"] == b["response_tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes on a loaded 2-core CPU; well under one otherwise
def test_smollm2_smoke_lowers_the_loss(tmp_path):
    """3 steps of the real SmolLM2-135M on 8 short aligned examples lower their loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mindgap.rewriter.model_store import resolve_model
    from mindgap.schemas import SOURCES, Behavior, RewriteOptions, SamplingParams
    from mindgap.trainer.loop import evaluate

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    path = resolve_model(None)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    examples = []
    for i, source in enumerate(SOURCES * 3):
        if i == 8:
            break
        a, b = 3 + i, 4 + 2 * i
        prompt = tok.apply_chat_template(  # a short system prompt keeps it quick on CPU
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": f"{a}+{b}?"}], tokenize=False,
            add_generation_prompt=True)
        ids = tok(f"{a + b}. \\boxed{{{a + b}}}", add_special_tokens=False)["input_ids"] \
            + [tok.eos_token_id]
        behavior = None if source == "expert" else Behavior(
            logprobs=[-1.0 - 0.1 * (j % 7) for j in range(len(ids))], prompt_kind="plain",
            model="smollm2", sampling=SamplingParams.of(RewriteOptions()))
        base = synthetic_examples(1)[0]
        examples.append(base.model_copy(update={
            "id": f"smoke-{i}", "prompt": prompt, "response_token_ids": ids,
            "source": source, "behavior": behavior}))
    assert all(len(tok(e.prompt, add_special_tokens=False)["input_ids"])
               + len(e.response_token_ids) <= 40 for e in examples)

    measure = TrainConfig(loss="sft")
    before = evaluate(model, tok, examples, measure)
    results = {}
    for kind in ("sft", "dft", "is"):
        model.load_state_dict(initial)
        config = TrainConfig(model=path, out=str(tmp_path / kind), loss=kind, max_steps=3,
                             global_batch=8, batch_tokens=512, lr=1e-4, progress=False,
                             save_final=False)
        t0 = time.perf_counter()
        summary = train(config, model=model, tokenizer=tok,
                        stream=FileStream.from_examples(examples, seed=0))
        after = evaluate(model, tok, examples, measure)
        results[kind] = (before["ce"], after["ce"], time.perf_counter() - t0)
        assert summary["steps"] == 3
        assert after["ce"] < before["ce"], (kind, before["ce"], after["ce"])
    print("smoke (ce before, ce after, seconds):", results)
