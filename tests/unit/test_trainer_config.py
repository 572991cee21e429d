"""TrainConfig, the command built from it, and the learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from mindgap.trainer.__main__ import app
from mindgap.trainer.config import TrainConfig, write_config
from tests.training import scheduled_lrs


def _parse(argv: list[str]) -> TrainConfig:
    """The config `python -m mindgap.trainer` would train with (the run itself patched out)."""
    seen: list[TrainConfig] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mindgap.trainer.loop.train", lambda config: seen.append(config) or {})
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_cli_flags_map_to_the_config():
    config = _parse(
        ["--data", "a.jsonl", "--data", "b.parquet", "--model", "m", "--loss", "dft",
         "--max-steps", "7", "--lr", "3e-4", "--batch-tokens", "1024", "--global-batch", "16",
         "--out", "o", "--resume", "latest", "--no-shuffle", "--gradient-checkpointing"])
    assert config.data == ["a.jsonl", "b.parquet"] and config.loss == "dft"
    assert (config.max_steps, config.lr, config.batch_tokens, config.global_batch) == \
        (7, 3e-4, 1024, 16)
    assert config.resume == "latest" and config.shuffle is False
    assert config.gradient_checkpointing is True and config.epochs is None
    result = CliRunner().invoke(app, ["--data", "a", "--model", "m", "--loss", "ppo"])
    assert result.exit_code == 2 and "--loss: Input should be 'sft', 'dft' or 'is'" in \
        result.output
    with pytest.raises(ValidationError, match="nope"):
        TrainConfig.model_validate({"nope": 1})
    with pytest.raises(ValidationError):
        TrainConfig(loss="ppo")  # type: ignore[arg-type]


def test_data_or_redis_one_of_them():
    config = _parse(["--redis", "redis://h:6379/0", "--job", "j", "--model", "m",
                     "--redis-idle-timeout-s", "5"])
    assert (config.redis, config.job, config.data) == ("redis://h:6379/0", "j", [])
    assert config.redis_idle_timeout_s == 5.0 and config.redis_prefix == "mindgap"
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(data=["a.jsonl"], redis="redis://h")
    with pytest.raises(ValueError, match="job needs redis"):
        TrainConfig(data=["a.jsonl"], job="j")
    for argv in (["--model", "m"], ["--model", "m", "--data", "a", "--redis", "redis://h"]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2
        assert result.output.startswith("error: give ") and result.output.count("\n") == 1


def test_the_queue_prefix_variable_is_the_trainers_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MINDGAP_QUEUE_PREFIX", "staging")
    assert TrainConfig().redis_prefix == "staging"
    assert TrainConfig(redis_prefix="other").redis_prefix == "other"


def test_warmup_then_cosine():
    config = TrainConfig(lr=1.0, max_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = scheduled_lrs(config, 11)  # the 11th: after max_steps
    assert lrs[:3] == [0.0, 0.5, 1.0]
    assert lrs[3] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 8)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:10]))
    assert lrs[10] == pytest.approx(0.1)  # the floor at max_steps


def test_data_takes_several_paths_after_one_flag():
    assert _parse(["--data", "a.jsonl", "b.parquet", "--model", "m"]).data == \
        ["a.jsonl", "b.parquet"]
    assert _parse(["--data", "a", "b", "--max-steps", "3", "--data", "c"]).data == \
        ["a", "c", "b"]
    assert _parse(["--data", "a,b"]).data == ["a", "b"]


def test_a_config_file_sets_every_option_and_flags_override_it(tmp_path):
    values = {"data": ["x.jsonl", "y.jsonl"], "max-steps": 7, "lr": 3e-4, "loss": "dft",
              "report_to": "jsonl", "shuffle": False, "save_total_limit": 5}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    config = _parse(["--config", str(path), "--lr", "1e-3", "--shuffle"])
    assert (config.data, config.max_steps, config.loss, config.save_total_limit) == \
        (["x.jsonl", "y.jsonl"], 7, "dft", 5)
    assert config.lr == 1e-3 and config.shuffle is True  # flags given win
    assert _parse(["--config", str(path), "--data", "z"]).data == ["z"]
    every = TrainConfig(data=["d", "e"], model="m", tokenizer="t", max_steps=9, seed=3,
                        report_to="jsonl,tensorboard", dtype="bfloat16", resume="latest",
                        reschedule=True, final_copy=True, stop_after=4, epochs=2)
    write_config(every, tmp_path / "all.yaml")
    assert _parse(["--config", str(tmp_path / "all.yaml")]) == every
    path.write_text("max_steps: 0\n")
    result = CliRunner().invoke(app, ["--config", str(path), "--data", "a"])
    assert result.exit_code == 2 and "run.yaml: max_steps: Input should be greater" in \
        result.output
    path.write_text("nope: 1\n")
    assert "nope: Extra inputs are not permitted" in CliRunner().invoke(
        app, ["--config", str(path), "--data", "a"]).output


def test_reporters_are_checked_by_name():
    assert TrainConfig(report_to="tensorboard, wandb,jsonl,wandb").report_to == \
        ["tensorboard", "wandb", "jsonl"]
    assert TrainConfig(report_to=["none"]).report_to == []
    with pytest.raises(ValidationError, match="unknown reporter 'mlflow'"):
        TrainConfig(report_to="jsonl,mlflow")


def test_help_shows_every_option_with_its_default():
    text = CliRunner().invoke(app, ["--help"], terminal_width=400,
                              env={"COLUMNS": "400"}).output
    for name, info in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        default = info.get_default(call_default_factory=True)
        if default not in (None, "", []) and not isinstance(default, bool):
            assert f"[default: {default}]" in text or f"[default: {default!r}]" in text \
                or f"[default: {', '.join(default) if isinstance(default, list) else default}]"\
                in text, (flag, default)
    assert "--config" in text and "DATA" in text.upper()


def test_the_progress_bar_uses_the_metrics_names_and_units():
    from mindgap.trainer.reporting import bar_postfix

    record = {"loss": 1.5, "ce": 2.0, "w_mean": 0.5, "w_max": 3.0, "ess_frac": 0.25,
              "ess_tokens": 12.0, "grad_norm": 0.7, "lr": 1e-5, "tokens_per_s": 900.0,
              "examples_self": 2, "examples_guided": 3, "examples_expert": 1}
    shown = bar_postfix(record)
    assert shown.pop("self/guided/expert") == "2/3/1"
    assert set(shown) <= set(record) and "ess_tokens" not in shown
    assert shown["ess_frac"] == "0.25"  # a fraction, as in metrics.jsonl
