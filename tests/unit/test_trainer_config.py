"""TrainConfig, the CLI parser built from it, and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from mindgap.trainer.__main__ import build_parser, main
from mindgap.trainer.config import TrainConfig
from mindgap.trainer.loop import build_scheduler


def test_every_field_is_documented_and_a_flag():
    parser = build_parser()
    flags = {a.dest for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert f.name in flags, f.name


def test_cli_flags_map_to_the_config():
    args = build_parser().parse_args(
        ["--data", "a.jsonl", "b.parquet", "--model", "m", "--loss", "dft", "--max-steps", "7",
         "--lr", "3e-4", "--batch-tokens", "1024", "--global-batch", "16", "--out", "o",
         "--resume", "--no-shuffle", "--gradient-checkpointing"])
    config = TrainConfig.from_dict(vars(args))
    assert config.data == ["a.jsonl", "b.parquet"] and config.loss == "dft"
    assert (config.max_steps, config.lr, config.batch_tokens, config.global_batch) == \
        (7, 3e-4, 1024, 16)
    assert config.resume == "latest" and config.shuffle is False
    assert config.gradient_checkpointing is True and config.epochs is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "a", "--model", "m", "--loss", "ppo"])
    with pytest.raises(TypeError):
        TrainConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        TrainConfig(loss="ppo")


def test_data_or_redis_one_of_them(capsys):
    args = build_parser().parse_args(["--redis", "redis://h:6379/0", "--job", "j", "--model",
                                      "m", "--redis-idle-timeout-s", "5"])
    config = TrainConfig.from_dict(vars(args))
    assert (config.redis, config.job, config.data) == ("redis://h:6379/0", "j", [])
    assert config.redis_idle_timeout_s == 5.0 and config.redis_prefix == "mindgap"
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(data=["a.jsonl"], redis="redis://h")
    with pytest.raises(ValueError, match="job needs redis"):
        TrainConfig(data=["a.jsonl"], job="j")
    for argv in (["--model", "m"], ["--model", "m", "--data", "a", "--redis", "redis://h"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "give --data FILE... or --redis URL" in capsys.readouterr().err


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
