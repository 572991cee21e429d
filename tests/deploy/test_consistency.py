"""The deployment files agree with the code: settings, commands, flags, ports, probe paths."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic_settings import BaseSettings

from mindgap import config
from mindgap.cli import app
from mindgap.config import VerifierSettings
from mindgap.rewriter.app import create_app as rewriter_app
from mindgap.verifier.app import create_app as verifier_app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
K8S_OF = {"verifier": "verifier", "rewriter": "rewriter", "worker": "worker",
          "worker-cpu": "worker", "trainer": "trainer", "trainer-cpu": "trainer"}
"""Each mindgap compose service and the k8s workload that runs the same role."""
ROUTES = {8001: {r.path for r in verifier_app(settings=VerifierSettings(workers=1)).routes},
          8000: {r.path for r in rewriter_app().routes}}
"""The routes of the verifier (port 8001) and the rewriter (port 8000)."""
SECRET = "MINDGAP_API_KEY"


def settings_vars() -> set[str]:
    """Every ``MINDGAP_*`` variable of the settings classes in mindgap/config.py."""
    names = set()
    for _, cls in inspect.getmembers(config, inspect.isclass):
        if issubclass(cls, BaseSettings) and cls is not BaseSettings:
            prefix = cls.model_config["env_prefix"]
            names |= {(prefix + field).upper() for field in cls.model_fields}
    return names


SETTINGS = settings_vars()


def k8s_docs(overlay: str) -> list[dict[str, Any]]:
    """The manifests of one overlay, as ``kubectl kustomize`` renders them."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The (single) container of each Deployment, StatefulSet and Job, by workload name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def k8s_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """A container's MINDGAP_* variables; secret ones as ``secret``."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        env[var["name"]] = "secret" if "secretKeyRef" in var.get("valueFrom", {}) \
            else var["value"]
    return {k: v for k, v in env.items() if k.startswith("MINDGAP_")}


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's MINDGAP_* variables; those interpolated from .env as ``secret``."""
    env = service.get("environment", {})
    return {k: "secret" if str(v).startswith("${") else str(v)
            for k, v in env.items() if k.startswith("MINDGAP_")}


def test_every_setting_the_code_reads_is_a_settings_field_and_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    code = "\n".join(p.read_text() for folder in ("mindgap", "services", "trainer")
                     for p in (ROOT / folder).rglob("*.py"))
    for name in set(re.findall(r"MINDGAP_[A-Z0-9_]*", code)):
        assert name in SETTINGS or any(s.startswith(name) for s in SETTINGS), name
    for name in SETTINGS:
        assert f"| `{name}` |" in readme, f"{name} is not in README's settings table"


def test_compose_sets_only_settings_and_the_key_from_the_env_file() -> None:
    example = (ROOT / ".env.example").read_text()
    for name, service in SERVICES.items():
        env = compose_env(service)
        assert set(env) <= SETTINGS, (name, set(env) - SETTINGS)
        assert all(v != "secret" or k == SECRET for k, v in env.items()), name
    assert re.search(rf"^{SECRET}=", example, re.M)
    assert not set(re.findall(r"^(MINDGAP_\w+)=", example, re.M)) - SETTINGS


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_k8s_sets_the_same_settings_as_compose(overlay: str) -> None:
    docs = k8s_docs(overlay)
    pods = containers(docs)
    for name, workload in K8S_OF.items():
        assert k8s_env(pods[workload], docs) == compose_env(SERVICES[name]), (overlay, name)


def click_command(args: list[str]) -> tuple[Any, list[str]]:
    """The mindgap (sub)command ``args`` name (typer's command tree), and the arguments after
    it."""
    command = typer.main.get_command(app)
    args = list(args)
    while hasattr(command, "commands"):
        assert args and args[0] in command.commands, f"no command {args[:1]} in {command.name}"
        command = command.commands[args.pop(0)]
    return command, args


def check_mindgap_args(args: list[str]) -> Any:
    """The subcommand exists and takes every ``--flag`` given; returns it."""
    command, rest = click_command(args)
    flags = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=")[0] in flags, f"{command.name} has no {arg}"
    return command


def check_port(args: list[str], port: int) -> None:
    """A service command listens on ``port`` (its ``--port``, else the CLI default)."""
    command = check_mindgap_args(args)
    given = args[args.index("--port") + 1] if "--port" in args else None
    default = next(p.default for p in command.params if p.name == "port")
    assert int(given or default) == port, (args, port)


def check_url(url: str, args: list[str]) -> None:
    """A health-check URL names a route of the service that the command runs."""
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\w+)", url)
    assert match, url
    port, path = int(match[1]), match[2]
    check_port(args, port)
    assert path in ROUTES[port], url


def test_compose_commands_ports_and_probes_exist() -> None:
    for name, service in SERVICES.items():
        if name == "redis":
            continue
        args = [str(a) for a in service["command"]]
        check_mindgap_args(args)
        test = service.get("healthcheck", {}).get("test", [])
        for url in [t for t in test if t.startswith("http")]:
            check_url(url, args)
        for mapping in service.get("ports", []):
            check_port(args, int(str(mapping).rsplit(":", 1)[1]))


def test_dockerfiles_commands_and_probes_exist() -> None:
    for dockerfile in (ROOT / "docker").glob("Dockerfile.*"):
        text = dockerfile.read_text()
        assert re.search(r'^ENTRYPOINT \["mindgap"\]$', text, re.M), dockerfile
        cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M)[1])
        check_mindgap_args(cmd)
        for url in re.findall(r'"(http://[^"]+)"', text):
            check_url(url, cmd)
        for run in re.findall(r"mindgap ([a-z]+ [a-z]+)", text):
            click_command(run.split())


def k8s_args(container: dict[str, Any]) -> list[str]:
    """The mindgap arguments of a container: its args, or those after ``-m mindgap.trainer``."""
    command, args = container.get("command", ["mindgap"]), container["args"]
    if command == ["torchrun"]:
        assert args[args.index("-m") + 1] == "mindgap.trainer"
        return ["train", *args[args.index("-m") + 2:]]
    assert command == ["mindgap"], command
    return args


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_k8s_commands_ports_and_probes_exist(overlay: str) -> None:
    docs = k8s_docs(overlay)
    for name, container in containers(docs).items():
        if name == "redis":
            continue
        args = k8s_args(container)
        check_mindgap_args(args)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for port in ports.values():
            check_port(args, port)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind, {})
            if "httpGet" in probe:
                port = ports[probe["httpGet"]["port"]]
                check_url(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", args)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for name in ("verifier", "rewriter"):
        assert services[name]["spec"]["ports"][0]["port"] in ROUTES


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_keda_scales_workers_on_the_tasks_stream(overlay: str) -> None:
    """kubernetes-validate has no KEDA schema (scripts/validate_deploy.sh): check it here."""
    docs = k8s_docs(overlay)
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                         "pollingInterval", "cooldownPeriod", "triggers"}
    assert spec["scaleTargetRef"] == {"name": "worker"} and spec["minReplicaCount"] == 0
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "worker" for d in docs)
    prefix = config.QueueSettings().prefix
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis-streams"
        meta = trigger["metadata"]
        assert meta["stream"] == f"{prefix}:tasks" and meta["consumerGroup"] == "rewriters"
        assert meta["address"].split(".")[0] == "redis" and meta["address"].endswith(":6379")
        assert all(isinstance(v, str) for v in meta.values())
