"""Training runs on a tiny random Llama for the options of issue 16: reporters, lean
checkpoints (sizes, limit, final link), bf16 checkpoints, resumes that change the schedule,
and the saved config read back."""

from __future__ import annotations

import itertools
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from mindgap.trainer.__main__ import app
from mindgap.trainer.checkpoint import MASTER, list_checkpoints
from mindgap.trainer.config import TrainConfig, read_config_file
from mindgap.trainer.loop import evaluate, train
from mindgap.trainer.schedule import ScheduleChanged
from mindgap.trainer.testing import (
    char_tokenizer,
    save_tiny_model,
    synthetic_examples,
    tiny_llama,
    write_jsonl,
)
from tests.training import max_diff, scheduled_lrs, steps, weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer-options")
    torch.set_num_threads(1)
    model = save_tiny_model(base / "model", seed=0)
    data = write_jsonl(base / "aligned.jsonl", synthetic_examples(20, seed=0))
    return base, model, data


def _config(setup, name: str, **kw) -> TrainConfig:
    base, model, data = setup
    values = dict(data=[str(data)], model=str(model), out=str(base / name), loss="is",
                  max_steps=4, global_batch=6, batch_tokens=40, lr=1e-2, warmup_steps=1,
                  progress=False)
    values.update(kw)
    return TrainConfig(**values)


def _num_params(model_dir: Path) -> int:
    return sum(t.numel() for t in weights(model_dir).values())


def test_weights_are_stored_once_in_the_training_dtype(setup):
    config = _config(setup, "lean", save_every=1, save_total_limit=2)
    summary = train(config)
    out = Path(config.out)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000003", "step-00000004"]
    final = out / "final"
    assert final.is_symlink() and final.resolve() == (out / "checkpoints" / "step-00000004"
                                                      / "model").resolve()
    stored = [p for p in out.rglob("*.safetensors") if not p.is_symlink()
              and "final" not in p.relative_to(out).parts]
    assert len(stored) == 2  # one weights file per kept checkpoint, none for final/
    sizes = summary["checkpoint_sizes"]
    n = _num_params(final)
    assert sizes["weights_bytes"] == (final / "model.safetensors").stat().st_size
    assert 4.0 <= sizes["weights_bytes_per_param"] < 4.3  # fp32, plus the header
    assert 8.0 <= sizes["optimizer_bytes_per_param"] < 9.5  # AdamW's two fp32 moments
    assert sizes["weights_bytes"] / n == pytest.approx(sizes["weights_bytes_per_param"])
    copy = _config(setup, "lean-copy", final_copy=True, max_steps=1)
    train(copy)
    assert not (Path(copy.out) / "final").is_symlink()
    assert (Path(copy.out) / "final" / "model.safetensors").is_file()


def test_bf16_checkpoints_hold_bf16_weights_and_resume_exactly(setup):
    whole = _config(setup, "bf16-whole", dtype="bfloat16")
    train(whole)
    final = Path(whole.out) / "final"
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert (final.resolve().parent / MASTER).is_file()
    part = _config(setup, "bf16-resumed", dtype="bfloat16", stop_after=2)
    train(part)
    train(part.model_copy(update={"stop_after": None, "resume": "latest"}))
    resumed = Path(part.out) / "checkpoints" / "step-00000004"
    from safetensors.torch import load_file

    assert max_diff(load_file(final.resolve().parent / MASTER),
                    load_file(resumed / MASTER)) == 0.0


def test_a_resume_with_another_horizon_is_refused(setup):
    config = _config(setup, "refused", max_steps=3)
    train(config)
    longer = config.model_copy(update={"max_steps": 5, "resume": "latest"})
    with pytest.raises(ScheduleChanged, match=r"max_steps 3 -> 5.*--reschedule"):
        train(longer)
    result = CliRunner().invoke(app, ["--data", *config.data, "--model", config.model,
                                      "--out", config.out, "--max-steps", "5", "--resume",
                                      "latest", "--no-progress"])
    assert result.exit_code == 2 and "error: the checkpoint at step 3" in result.output


def test_reschedule_continues_on_the_new_horizon(setup, caplog):
    config = _config(setup, "rescheduled", max_steps=3)
    train(config)
    longer = config.model_copy(update={"max_steps": 6, "resume": "latest", "reschedule": True})
    with caplog.at_level(logging.WARNING, logger="mindgap.trainer.schedule"):
        summary = train(longer)
    assert summary["steps"] == 6
    assert "schedule rebuilt for the new settings (max_steps 3 -> 6) at step 3" in caplog.text
    expected = scheduled_lrs(longer, 6)
    lrs = [s["lr"] for s in steps(Path(config.out))]
    assert lrs[3:] == pytest.approx(expected[3:], rel=1e-12)
    assert all(a > b for a, b in itertools.pairwise(lrs[3:]))  # decays, no restart
    assert lrs[5] > 0.0


def test_reporters_write_what_they_claim(setup, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _config(setup, "reported", max_steps=2, report_to="jsonl,tensorboard,wandb",
                     save_final=False)
    train(config)
    out = Path(config.out)
    assert len(steps(out)) == 2
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert read_config_file(out / "config.yaml")["report_to"] == ["jsonl", "tensorboard",
                                                                  "wandb"]
    quiet = _config(setup, "unreported", max_steps=1, report_to="none", save_final=False)
    train(quiet)
    assert not (Path(quiet.out) / "metrics.jsonl").exists()


def test_a_missing_reporter_is_an_error_naming_the_extra(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    config = _config(setup, "missing")
    result = CliRunner().invoke(app, ["--data", *config.data, "--model", config.model,
                                      "--out", config.out, "--report-to", "tensorboard"])
    assert result.exit_code == 2
    assert "--report-to tensorboard: tensorboard is not installed" in result.output
    assert "mindgap[report]" in result.output
    assert not (Path(config.out) / "config.yaml").exists()  # refused before anything ran


def test_the_saved_config_runs_again(setup):
    """OUT/config.yaml is the resolved config: --config reads it back, flags override it."""
    config = _config(setup, "saved", max_steps=2, lr=3e-3, loss="dft")
    train(config)
    saved = Path(config.out) / "config.yaml"
    assert TrainConfig.model_validate(read_config_file(saved)) == config
    again = Path(config.out).with_name("saved-again")
    result = CliRunner().invoke(app, ["--config", str(saved), "--out", str(again)])
    assert result.exit_code == 0, result.output
    rerun = TrainConfig.model_validate(read_config_file(again / "config.yaml"))
    assert rerun == config.model_copy(update={"out": str(again)})
    first, second = steps(Path(config.out)), steps(again)
    assert [s["loss"] for s in first] == [s["loss"] for s in second]
    assert not math.isnan(second[-1]["loss"])


def test_held_out_loss_is_logged_every_n_steps(setup):
    base = setup[0]
    held_out = synthetic_examples(5, seed=9)
    path = write_jsonl(base / "held_out.jsonl", held_out)
    config = _config(setup, "evaluated", max_steps=3, eval_every=2, eval_data=str(path))
    model = tiny_llama(0)
    train(config, model=model, tokenizer=char_tokenizer())
    records = [s for s in steps(Path(config.out)) if "eval/loss" in s]
    assert [s["step"] for s in records] == [2, 3]
    final = evaluate(model, char_tokenizer(), held_out, config)
    assert records[-1]["eval/loss"] == pytest.approx(final["loss"], rel=1e-9)
    assert records[-1]["eval/tokens"] == final["tokens"] > 0
    with pytest.raises(ValueError, match="eval_every needs eval_data"):
        TrainConfig(eval_every=2)
