"""Wake to first token: what a request to an endpoint at zero replicas waits, phase by phase,
beside bare `vllm serve` started cold for the same model.

Starts a platform in a home and on a port of its own: a partition of two CPU slots and two
autoscaled endpoints of the demo model that go to zero after 5 s idle, `compiled` (vLLM's
default: torch.compile, from vLLM's compile cache after the first start) and `eager`
(`enforce_eager`: no compilation). Each repeat, in an order reversed every other repeat:
  compiled, eager  wait until the endpoint has no replica, then one streamed completion
                   (8 tokens) through the official `openai` client: wake to first token as
                   the client saw it, and the replica's start phase by phase as it published
                   it (serving.engine.start_progress)
  vllm serve       `python -m vllm.entrypoints.openai.api_server` with the compiled
                   endpoint's engine flags, started cold: process start to the first token
                   of the same request, sent as soon as /health answers
Prints medians over the repeats (min-max) and each path's ratio to bare `vllm serve`.
Single runs vary by +-20% on two cores. `--engine-processes spawn` runs the platform with
vLLM's engine processes spawned cold, as before serving.engine.warm_processes, instead of
forked from each replica's forkserver (the default).

It starts a local Ray head of its own: nothing else may run one on the machine meanwhile
(another `aifactory up`, the end-to-end tests); on a shared machine hold a lock around it,
e.g. `flock FILE python ...`.
Usage: python benchmarks/cold_start.py [--repeats 3] [--engine-processes forkserver|spawn]
                                      [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import (
    free_port,
    machine,
    machine_line,
    median_spread,
    print_result,
    stop_platform,
    work_directory,
)

TENANT = "bench"
ENGINE = {"max_model_len": 512, "dtype": "bfloat16", "kv_cache_memory_bytes": 128 * 1024**2}
PATHS = {"compiled": ENGINE, "eager": {**ENGINE, "enforce_eager": True}}
PEER = "vllm serve"
IDLE_TO_ZERO_S = 5
PROMPT = "The partition lends idle capacity to batch work"
MAX_TOKENS = 8


def platform_config(port: int) -> dict:
    endpoints = [{"name": name, "owner": TENANT, "model": "builtin:demo", "replicas": 1,
                  "engine": engine,
                  "autoscaling": {"min_replicas": 0, "max_replicas": 1,
                                  "guaranteed_replicas": 1, "idle_to_zero_s": IDLE_TO_ZERO_S}}
                 for name, engine in PATHS.items()]
    return {"server": {"host": "127.0.0.1", "port": port},
            "partition": {"accelerator": "cpu", "count": 2,
                          "autoscaler": {"period_s": 1, "window_s": 5,
                                         "wake_timeout_s": 600}},
            "tenants": [{"name": TENANT}], "endpoints": endpoints}


@contextlib.contextmanager
def platform(work: Path, engine_processes: str):
    """`aifactory up --detach`; yields the base URL and a key; always `aifactory down`."""
    import yaml

    port = free_port()
    home, config = work / "home", work / "platform.yaml"
    config.write_text(yaml.safe_dump(platform_config(port)))
    env = {**os.environ, "AIFACTORY_HOME": str(home),
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
           "AIFACTORY_ENGINE_PROCESSES": engine_processes}
    env.pop("AIFACTORY_DATABASE_URL", None)
    env.pop("AIFACTORY_REDIS_URL", None)
    cli = [sys.executable, "-m", "deployments.cli"]
    try:
        with open(work / "up.log", "w") as out:
            up = subprocess.run([*cli, "up", "--detach", "--config", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, process_group=0,
                                check=False)
        if up.returncode != 0:
            raise RuntimeError(f"aifactory up failed:\n{(work / 'up.log').read_text()[-3000:]}")
        from serving.tenancy import Store, default_database_url

        store = Store(default_database_url(home))
        try:
            key = store.create_key(TENANT).plaintext
        finally:
            store.close()
        import ray

        ray.init(address="auto", namespace="serve", logging_level="ERROR",
                 log_to_driver=False)
        yield f"http://127.0.0.1:{port}/v1", key
    finally:
        signals = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        stop_platform(cli, env)
        for number, handler in signals.items():
            signal.signal(number, handler)


def running_replicas(name: str) -> int:
    from ray import serve
    from ray.serve._private.common import ReplicaState

    from deployments.app import APP_NAME
    from deployments.engine import engine_deployment_name

    app = serve.status().applications.get(APP_NAME)
    deployment = app.deployments.get(engine_deployment_name(name)) if app else None
    return int(deployment.replica_states.get(ReplicaState.RUNNING, 0)) if deployment else 0


def wait_for_zero(name: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while running_replicas(name) != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not go to zero within {timeout_s:.0f} s")
        time.sleep(1)
    time.sleep(2)  # the gateways' view of its replicas follows within a second


def first_token_s(base_url: str, key: str, model: str, timeout_s: float = 900) -> float:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout_s)
    sent = time.monotonic()
    stream = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS,
                                       stream=True)
    first = None
    for _ in stream:
        if first is None:
            first = time.monotonic() - sent
    if first is None:
        raise RuntimeError(f"{model}: no token")
    return first


def last_start(name: str) -> dict[str, float]:
    """The phases of the endpoint's newest start, as its replica published them."""
    from deployments.app import APP_NAME
    from deployments.engine import engine_deployment_name
    from serving.engine.start_phases import durations
    from serving.engine.start_progress import read_starts

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        starts = [s for s in read_starts() if s.app == APP_NAME and s.ready
                  and s.deployment == engine_deployment_name(name)]
        if starts:
            newest = max(starts, key=lambda s: s.marks[0].at)
            return {p.value: s for p, s in durations(newest.marks, time.time())}
        time.sleep(1)
    return {}


def bare_vllm_first_token_s(model_path: str, work: Path, repeat: int) -> float:
    """Process start to first token of `vllm serve` with the compiled path's flags."""
    port = free_port() + 50
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in ENGINE.items()]
    log = open(work / f"vllm-serve-{repeat}.log", "w")  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                             "--model", model_path, "--served-model-name", "demo",
                             "--port", str(port), *flags],
                            stdout=log, stderr=subprocess.STDOUT, process_group=0)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        waited = time.monotonic() - started
        return waited + first_token_s(f"http://127.0.0.1:{port}/v1", "none", "demo")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def measure(url: str, key: str, work: Path, repeats: int) -> list[dict]:
    model_path = str(work / "home" / "models" / "demo")  # the demo model the platform made
    runs = []
    for repeat in range(repeats):
        order = [*PATHS, PEER] if repeat % 2 == 0 else [PEER, *reversed(PATHS)]
        for path in order:
            if path == PEER:
                seconds, phases = bare_vllm_first_token_s(model_path, work, repeat), {}
            else:
                wait_for_zero(path)
                seconds, phases = first_token_s(url, key, path), last_start(path)
            runs.append({"repeat": repeat, "path": path, "first_token_s": seconds,
                         "phases_s": phases, "load_average": os.getloadavg()[0]})
            print(f"# {repeat} {path}: {seconds:.1f} s {phases}", file=sys.stderr, flush=True)
    return runs


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for path in [*PATHS, PEER]:
        mine = [r for r in runs if r["path"] == path]
        phases = sorted({p for r in mine for p in r["phases_s"]},
                        key=lambda p: min(list(r["phases_s"]).index(p) for r in mine
                                          if p in r["phases_s"]))
        summary[path] = {
            "first_token_s": median_spread([r["first_token_s"] for r in mine]),
            "phases_s": {p: median_spread([r["phases_s"][p] for r in mine
                                           if p in r["phases_s"]])[0] for p in phases}}
    for path in PATHS:  # per repeat, against the peer's run of the same repeat
        ratios = [r["first_token_s"] / peer["first_token_s"]
                  for r in runs if r["path"] == path
                  for peer in runs if peer["path"] == PEER and peer["repeat"] == r["repeat"]]
        summary[path]["vs_vllm_serve"] = median_spread(ratios)
    return summary


def table(summary: dict) -> str:
    lines = ["| path | to first token, s | vs `vllm serve` | phases (medians, s) |",
             "|---|---|---|---|"]
    for path, row in summary.items():
        median, low, high = row["first_token_s"]
        ratio = row.get("vs_vllm_serve")
        ratio_text = f"{ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f})" if ratio else "1"
        phases = ", ".join(f"{p} {s:.1f}" for p, s in row["phases_s"].items()) or "-"
        lines.append(f"| {path} | {median:.1f} ({low:.1f}-{high:.1f}) | {ratio_text} | "
                     f"{phases} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, help="keep the config, the home and logs here")
    ap.add_argument("--engine-processes", choices=("forkserver", "spawn"),
                    default="forkserver", help="how replicas start vLLM's engine processes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    host = machine()
    with contextlib.ExitStack() as stack:
        work = work_directory(stack, args.work, "cold-")
        with platform(work, args.engine_processes) as (url, key):
            runs = measure(url, key, work, args.repeats)
    summary = summarise(runs)
    report = (f"{machine_line(host)}; {args.repeats} repeats; engine processes "
              f"{args.engine_processes}\n" + table(summary))
    print_result({"machine": host, "engine_processes": args.engine_processes,
                  "summary": summary, "runs": runs}, report, args.json)


if __name__ == "__main__":
    main()
