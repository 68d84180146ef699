"""Starting and stopping a real platform for end-to-end tests, with the CLI as a user would."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def aifactory(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def _up_in_foreground(config: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`aifactory up` left running, once it says it is ready; its output goes to a file
    (a pipe nobody reads would fill and block it)."""
    log = Path(env["AIFACTORY_HOME"]) / "up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "deployments.cli", "up", "--config",
                               str(config)], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while "ready: " not in log.read_text():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            aifactory("down", env=env)
            pytest.fail(f"aifactory up did not become ready:\n{log.read_text()}")
        time.sleep(1)
    return up, log.read_text()


def leftover_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    keep = ("ray::", "raylet", "gcs_server", "VLLM::", "EngineCore", "haproxy",
            "aifactory::")
    return [line for line in out.splitlines()[1:]
            if any(k in line for k in keep) and not line.split()[1].startswith("Z")]


# A stopping gateway replica (direct ingress) keeps answering for Serve's minimum draining
# period, 30 s by default, so that load balancers see it leave; a test platform that is
# being taken down has no one to drain to.
TEST_RAY_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


def running_platform(config: Path, env: dict, url: str,
                     foreground: bool = False) -> Iterator[dict]:
    """`aifactory up --detach` with `config`; yields what tests need; then `aifactory down`
    and a check that no Ray, vLLM or HAProxy process is left behind. `foreground`: plain
    `aifactory up` instead, as the README runs it, which must end once `aifactory down` has
    stopped the platform from another process."""
    env = {**env, **TEST_RAY_ENV}
    started = time.monotonic()
    if foreground:
        up, output = _up_in_foreground(config, env)
    else:
        up = aifactory("up", "--detach", "--config", str(config), env=env)
        if up.returncode != 0:
            aifactory("down", env=env)
            pytest.fail(f"aifactory up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        output = up.stdout
    print(f"platform up in {time.monotonic() - started:.0f}s", file=sys.stderr)
    yield {"url": url, "home": Path(env["AIFACTORY_HOME"]), "env": env, "up_stdout": output}

    import ray

    if ray.is_initialized():
        ray.shutdown()
    down = aifactory("down", env=env, timeout=300)
    assert down.returncode == 0, down.stderr
    if foreground:
        try:
            assert up.wait(timeout=30) == 0, "foreground `aifactory up` failed"
        except subprocess.TimeoutExpired:
            up.kill()
            pytest.fail("foreground `aifactory up` kept waiting after `aifactory down`")
    deadline = time.monotonic() + 30
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert leftover_processes() == [], "aifactory down left processes behind"


# Kills the one Serve replica (a Ray actor) whose name holds NAME_PART, from a process of its
# own so that the test process never joins the cluster; Serve starts a new one.
_KILL_SERVE_REPLICA = """
import sys, ray
ray.init(address="auto", namespace="serve", logging_level="ERROR", log_to_driver=False)
names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
         if a["name"].startswith("SERVE_REPLICA::") and sys.argv[1] in a["name"]]
assert len(names) == 1, names
ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
print("killed", names[0])
"""


def kill_serve_replica(name_part: str) -> str:
    """Kill the one Serve replica whose actor name holds `name_part` (e.g.
    "#autoscaler#"); returns the killed replica's name."""
    kill = subprocess.run([sys.executable, "-c", _KILL_SERVE_REPLICA, name_part],
                          capture_output=True, text=True, timeout=120, check=False)
    assert kill.returncode == 0 and kill.stdout.startswith("killed"), kill.stderr
    return kill.stdout.split()[1]


def inside_one_minute_window(needed_s: float) -> None:
    """Return when at least `needed_s` of the current minute are left, sleeping into the next
    one otherwise: the quotas count requests and tokens in fixed minute windows, so a test
    expecting a refusal after N requests would see the count restart at a boundary."""
    if 60 - time.time() % 60 < needed_s:
        time.sleep(60 - time.time() % 60 + 0.5)

