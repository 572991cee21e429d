"""TrainConfig, the command built from it, and the learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from mindgap.trainer.__main__ import app
from mindgap.trainer.config import TrainConfig
from mindgap.trainer.loop import build_scheduler


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
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = build_scheduler(opt, config)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 0.5, 1.0]
    assert lrs[3] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 8)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
    assert sched.get_last_lr()[0] == pytest.approx(0.1)  # the floor at max_steps
