"""Flags generated from option groups: every field a flag with its help, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from mindgap import config as settings_module
from mindgap.cli import app
from mindgap.config import QueueSettings, RewriterSettings, ServiceSettings, VerifierSettings
from mindgap.options import Flags, command_options, env_name
from mindgap.rewriter.options import DataOptions, EngineOptions, WorkerOptions
from mindgap.schemas import RewriteOptions
from mindgap.trainer.config import TrainConfig
from tests.conftest import ROOT

GROUPS: dict[str, list[type[BaseModel]]] = {
    "rewrite": [DataOptions, RewriteOptions, EngineOptions],
    "submit": [DataOptions, RewriteOptions],
    "worker": [EngineOptions, WorkerOptions, QueueSettings],
    "train": [TrainConfig],
}


def _options(command: str) -> dict[str, Any]:
    """The click options of a command by flag (typer vendors its own click)."""
    group: Any = typer.main.get_command(app)
    params = group.commands[command].params
    return {opt: p for p in params if p.param_type_name == "option" for opt in p.opts}


@pytest.mark.parametrize("command", sorted(GROUPS))
def test_every_field_of_each_group_is_a_flag_with_its_help(command: str) -> None:
    flags = _options(command)
    for model in GROUPS[command]:
        for name, info in model.model_fields.items():
            flag = "--" + name.replace("_", "-")
            assert flag in flags, f"{command}: {model.__name__}.{name} has no {flag}"
            assert info.description, f"{model.__name__}.{name} is not documented"
            assert (flags[flag].help or "").startswith(info.description), flag


def test_settings_flags_name_their_environment_variable() -> None:
    flags = _options("worker")
    assert "MINDGAP_QUEUE_REDIS_URL" in (flags["--redis-url"].help or "")
    assert "MINDGAP_VERIFIER_URL" in (flags["--verifier-url"].help or "")
    assert "MINDGAP_REWRITER_URL" in (_options("submit")["--rewriter-url"].help or "")


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    classes = [c for c in vars(settings_module).values()
               if isinstance(c, type) and issubclass(c, BaseSettings) and c is not BaseSettings]
    assert {QueueSettings, RewriterSettings, ServiceSettings, VerifierSettings} <= set(classes)
    for cls in classes:
        for name in cls.model_fields:
            assert f"| `{env_name(cls, name)}` |" in readme, env_name(cls, name)


class _Group(BaseModel):
    size: int = Field(default=3, ge=1, description="How many.")
    mode: Literal["fast", "slow"] = Field(default="fast", description="Which way.")
    verbose: bool = Field(default=False, description="Say more.")
    paths: list[str] = Field(default_factory=list, description="Where.")


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINDGAP_TESTOPT_")

    url: str = Field(default="http://default", description="Where to go.")


def _probe_app() -> typer.Typer:
    probe = typer.Typer()

    @probe.command()
    @command_options(group=_Group, env=Flags(_Env, prefix="env_"))
    def show(group: _Group, env: _Env, name: str = "x") -> None:
        typer.echo(f"{name} {group.model_dump_json()} {env.url}")

    return probe


def test_generated_flags_build_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(_probe_app(), [])
    assert result.exit_code == 0, result.output
    assert '{"size":3,"mode":"fast","verbose":false,"paths":[]} http://default' in result.output
    monkeypatch.setenv("MINDGAP_TESTOPT_URL", "http://from-env")
    result = runner.invoke(_probe_app(), ["--size", "5", "--mode", "slow", "--verbose",
                                          "--paths", "a", "--paths", "b", "--name", "y"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ('y {"size":5,"mode":"slow","verbose":true,'
                                     '"paths":["a","b"]} http://from-env')
    result = runner.invoke(_probe_app(), ["--env-url", "http://flag"])
    assert result.output.strip().endswith("http://flag")


@pytest.mark.parametrize(("args", "message"), [
    (["--size", "0"], "error: --size: Input should be greater than or equal to 1"),
    (["--size", "many"], "error: --size: Input should be a valid integer"),
    (["--mode", "medium"], "error: --mode: Input should be 'fast' or 'slow'"),
])
def test_a_rejected_value_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_probe_app(), args)
    assert result.exit_code == 2
    assert result.output.strip().startswith(message) and len(result.output.splitlines()) == 1


def test_a_flag_declared_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="declared twice"):
        @command_options(group=_Group)
        def clash(group: _Group, size: int = 1) -> None:
            """Never run."""


def test_submit_with_an_invalid_option_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    sample = ROOT / "mindgap" / "samples" / "problems.jsonl"
    for flag, value, message in [("--k-self", "99", "less than or equal to 64"),
                                 ("--choose", "best", "'random' or 'likeliest'"),
                                 ("--temperature", "hot", "valid number")]:
        run = subprocess.run([sys.executable, "-m", "mindgap.cli", "submit", "--data",
                              str(sample), flag, value], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"error: {flag}: ")
        assert message in run.stderr


def test_a_cpu_vllm_server_is_told_from_its_metrics() -> None:
    from mindgap.rewriter.engines.openai_engine import server_on_cpu

    cpu = ('vllm:cache_config_info{_block_size_resolved="True",block_size="128",'
           'effective_attention_block_size="128",user_specified_block_size="False"} 1.0')
    gpu = cpu.replace('block_size="128",', 'block_size="16",', 1)
    asked = cpu.replace('user_specified_block_size="False"', 'user_specified_block_size="True"')
    assert server_on_cpu("# HELP x\n" + cpu)
    assert not server_on_cpu(gpu) and not server_on_cpu(asked) and not server_on_cpu("")
