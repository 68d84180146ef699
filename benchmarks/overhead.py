"""Serving overhead on every path a request can take, against bare `vllm serve` on the same
machine in the same run.

Paths (each an endpoint of the same demo model, with the same engine flags as bare vLLM):
  colocated    the engine inside the gateway replica
  deployment   the engine in its own Ray Serve deployment, reached over engine links
  autoscaled   an engine deployment under the partition controller, at its steady state
               (min = max = 1 replica, so it runs one engine, as bare vLLM does)
  haproxy      two gateway replicas behind Ray Serve's HAProxy, one engine deployment
  ray-serve-llm  the peer: Ray Serve LLM's OpenAI app (only with --peer)

Bare vLLM stays up for the whole run. Each path is measured in pairs, bare then path, for
every concurrency, `--repeats` times interleaved (bare, path, bare, path, ...): single runs
here vary by +-20%, so each ratio is a median over the pairs, printed with its spread.

Bare vLLM runs as the platform's processes do: at nice 15 (the niceness raylet gives every
Ray worker) and in the load generator's session, hence its scheduler autogroup (Linux shares
CPU between sessions first, then by niceness within one; `ray start` stays in the session it
was started from). At nice 0 beside the load generator bare vLLM lost half its throughput;
in a session of its own its first tokens and bursts of tokens waited behind whole scheduler
periods (TTFT p99 240-290 ms at one client, against 20-30 ms).

Load: vLLM's serving benchmark, random 128-token prompts, 64 output tokens, ignore_eos,
streaming /v1/completions. `--json` prints one object instead of the table.
Usage: python benchmarks/overhead.py [--paths ...] [--concurrency 1 16 64] [--repeats 5]
                                     [--work DIR (keeps configs and server logs)] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import harness  # benchmarks/: this script's folder, first on its path

HERE = Path(__file__).resolve().parent
PATHS = ("colocated", "deployment", "autoscaled", "haproxy")
# The embedded default's engine settings, as `vllm serve` flags and as the platform's config.
ENGINE = {"max_model_len": 2048, "dtype": "bfloat16", "kv_cache_memory_bytes": 256 * 1024**2}
ENGINE_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in ENGINE.items()]
RAY_WORKER_NICENESS = 15
METRICS = ("output_throughput", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms",
           "tpot_p50_ms")
# Ratios the targets are stated in: throughput up, latency down.
TARGETS = {"output_throughput": (">=", 0.95), "ttft_p50_ms": ("<=", 1.15),
           "itl_p99_ms": ("<=", 1.3)}


def _free_port(start: int) -> int:
    """A free port below the kernel's ephemeral range: Ray's own processes take ephemeral
    ports while they start, and could take one picked there before the server binds it."""
    for port in range(start, start + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + 99}")


def _wait_http(url: str, proc: subprocess.Popen | None, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _ray_stop() -> None:
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"],
                   capture_output=True)


@contextlib.contextmanager
def bare_vllm(model: str, log: Path, flags: list[str] = ENGINE_FLAGS):
    """`vllm serve` of `model` as `demo` with `flags`, at the niceness of Ray's workers;
    yields its base URL (and None)."""
    port = _free_port(18100)
    cmd = ["nice", "-n", str(RAY_WORKER_NICENESS), sys.executable, "-m",
           "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
           "demo", "--port", str(port), *flags]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                process_group=0)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}", None
    finally:
        _stop(proc)


def platform_config(paths: list[str], port: int) -> dict:
    """One platform for the paths that share a direct-ingress gateway, or the HAProxy one."""
    engine = {**ENGINE}
    if paths == ["haproxy"]:
        return {"server": {"host": "127.0.0.1", "port": port, "ingress": "haproxy",
                           "gateway_replicas": 2},
                "partition": {"accelerator": "cpu", "count": 8},
                "tenants": [{"name": "bench"}],
                "endpoints": [{"name": "haproxy", "owner": "bench", "model": "builtin:demo",
                               "engine": engine}]}
    endpoints = []
    for path in paths:
        endpoint = {"name": path, "owner": "bench", "model": "builtin:demo", "engine": engine}
        if path == "colocated":
            endpoint["colocated"] = True
        if path == "autoscaled":
            endpoint["autoscaling"] = {"min_replicas": 1, "max_replicas": 1,
                                       "guaranteed_replicas": 1}
        endpoints.append(endpoint)
    return {"server": {"host": "127.0.0.1", "port": port},
            "partition": {"accelerator": "cpu", "count": 8},
            "tenants": [{"name": "bench"}], "endpoints": endpoints}


@contextlib.contextmanager
def platform(paths: list[str], work: Path, log: Path):
    """`aifactory up` with the paths' config; yields its base URL and a key of its tenant."""
    import yaml

    port = _free_port(18200)
    home = work / f"home-{'-'.join(paths)}"
    config = work / f"{'-'.join(paths)}.yaml"
    config.write_text(yaml.safe_dump(platform_config(paths, port)))
    env = {**os.environ, "AIFACTORY_HOME": str(home)}
    env.pop("AIFACTORY_DATABASE_URL", None)
    env.pop("AIFACTORY_REDIS_URL", None)
    cli = [sys.executable, "-m", "deployments.cli"]
    try:
        with open(log, "w") as out:
            subprocess.run([*cli, "up", "--detach", "--config", str(config)], env=env,
                           stdout=out, stderr=subprocess.STDOUT, check=True)
        from serving.tenancy import Store, default_database_url

        store = Store(default_database_url(home))
        try:
            key = store.create_key("bench").plaintext
        finally:
            store.close()
        yield f"http://127.0.0.1:{port}", key
    finally:
        subprocess.run([*cli, "down"], env=env, capture_output=True)
        _ray_stop()
        time.sleep(3)


@contextlib.contextmanager
def ray_serve_llm(model: str, log: Path):
    port = _free_port(18300)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / "ray_serve_llm_peer.py"), model,
                                 str(port)], stdout=out, stderr=subprocess.STDOUT,
                                process_group=0)
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
        yield f"http://127.0.0.1:{port}", None
    finally:
        _stop(proc)
        _ray_stop()
        time.sleep(3)


def run_load(base_url: str, model: str, key: str | None, tokenizer: str, concurrency: int,
             prompts: int) -> dict:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", "128", "--random-output-len", "64", "--ignore-eos",
        "--max-concurrency", str(concurrency), "--num-prompts", str(prompts),
        "--num-warmups", "4", "--percentile-metrics", "ttft,tpot,itl",
        "--metric-percentiles", "50,99", "--disable-tqdm", "--seed", "0",
    ])
    # vLLM's benchmark sends $OPENAI_API_KEY as the bearer token.
    os.environ["OPENAI_API_KEY"] = key or "unused"
    with contextlib.redirect_stdout(sys.stderr):  # its report is not ours
        r = main(args)
    if r["completed"] < prompts:
        raise RuntimeError(f"{base_url} {model}: {r['completed']} of {prompts} completed")
    return {"output_throughput": r["output_throughput"],
            "ttft_p50_ms": r["p50_ttft_ms"], "ttft_p99_ms": r["p99_ttft_ms"],
            "itl_p50_ms": r["p50_itl_ms"], "itl_p99_ms": r["p99_itl_ms"],
            "tpot_p50_ms": r["p50_tpot_ms"]}


def measure_phase(paths: list[str], server, bare_url: str, tokenizer: str, args,
                  results: dict, runs: list[dict]) -> None:
    """Pairs (bare, path) for each repeat, concurrency and path of one running system."""
    with server as (url, key):
        for repeat in range(args.repeats):
            for c in args.concurrency:
                prompts = max(32, c * args.prompts_per_client)
                for path in paths:
                    bare = run_load(bare_url, "demo", None, tokenizer, c, prompts)
                    model = "demo" if path == "ray-serve-llm" else path
                    ours = run_load(url, model, key, tokenizer, c, prompts)
                    results.setdefault((path, c), []).append((bare, ours))
                    runs.append({"repeat": repeat, "path": path, "concurrency": c,
                                 "bare": bare, "path_result": ours})
                    print(f"# {repeat + 1}/{args.repeats} c={c:<3} {path:<13} "
                          f"{ours['output_throughput']:7.0f} tok/s vs bare "
                          f"{bare['output_throughput']:7.0f}  "
                          f"({ours['output_throughput'] / bare['output_throughput']:.2f}x)",
                          file=sys.stderr, flush=True)


def summarise(results: dict) -> list[dict]:
    rows = []
    for (path, c), pairs in results.items():
        row = {"path": path, "concurrency": c, "pairs": len(pairs)}
        for metric in METRICS:
            ratios = [ours[metric] / bare[metric] for bare, ours in pairs if bare[metric] > 0]
            row[metric] = statistics.median(ours[metric] for _, ours in pairs)
            row[f"bare_{metric}"] = statistics.median(bare[metric] for bare, _ in pairs)
            row[f"ratio_{metric}"] = statistics.median(ratios) if ratios else None
            row[f"spread_{metric}"] = [min(ratios), max(ratios)] if ratios else None
        row["meets_targets"] = all(
            row[f"ratio_{m}"] is not None and (row[f"ratio_{m}"] >= bound if op == ">=" else
                                               row[f"ratio_{m}"] <= bound)
            for m, (op, bound) in TARGETS.items())
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'path':<14}{'c':>3}  {'tok/s':>7} {'(bare)':>7}  {'TTFT50':>7} {'TTFT99':>7} "
            f"{'ITL50':>6} {'ITL99':>6} {'TPOT50':>6}   median ratio to bare vLLM "
            f"[spread over pairs]: tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT p50")
    lines = [head]

    def ratio(row, metric):
        lo, hi = row[f"spread_{metric}"]
        return f"{row[f'ratio_{metric}']:.2f}x [{lo:.2f}-{hi:.2f}]"

    for row in rows:
        lines.append(
            f"{row['path']:<14}{row['concurrency']:>3}  {row['output_throughput']:>7.0f} "
            f"{row['bare_output_throughput']:>7.0f}  {row['ttft_p50_ms']:>7.1f} "
            f"{row['ttft_p99_ms']:>7.1f} {row['itl_p50_ms']:>6.2f} {row['itl_p99_ms']:>6.2f} "
            f"{row['tpot_p50_ms']:>6.2f}   " + " | ".join(ratio(row, m) for m in METRICS)
            + ("" if row["meets_targets"] else "   (below target)"))
    lines.append("targets: tok/s >= 0.95x, TTFT p50 <= 1.15x, ITL p99 <= 1.3x of bare vLLM")
    return "\n".join(lines)


def machine() -> dict:
    return {**harness.machine(), "engine_flags": ENGINE_FLAGS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--peer", action="store_true", help="also measure Ray Serve LLM")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs per point")
    ap.add_argument("--prompts-per-client", type=int, default=8,
                    help="prompts = concurrency x this (at least 32)")
    ap.add_argument("--work", type=Path, help="keep configs and server logs here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE.parent))
    from deployments.demo_model import write_demo_model

    print(f"# engine flags on both sides: {' '.join(ENGINE_FLAGS)}", file=sys.stderr)
    results: dict = {}
    runs: list[dict] = []
    with contextlib.ExitStack() as stack:
        if args.work is not None:
            work = args.work.resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="overhead-")))
        model = str(write_demo_model(work / "models" / "demo"))
        phases = [[p for p in args.paths if p != "haproxy"], ["haproxy"]]
        _ray_stop()
        with bare_vllm(model, work / "vllm.log") as (bare_url, _):
            for paths in phases:
                if not paths or not set(paths) <= set(args.paths):
                    continue
                log = work / f"platform-{'-'.join(paths)}.log"
                try:
                    measure_phase(paths, platform(paths, work, log), bare_url, model, args,
                                  results, runs)
                except Exception as exc:
                    print(f"# {paths} failed: {exc!r}; log:\n{log.read_text()[-3000:]}",
                          file=sys.stderr)
            if args.peer:
                log = work / "ray-serve-llm.log"
                try:
                    measure_phase(["ray-serve-llm"], ray_serve_llm(model, log), bare_url,
                                  model, args, results, runs)
                except Exception as exc:
                    print(f"# ray-serve-llm failed: {exc!r}; log:\n{log.read_text()[-3000:]}",
                          file=sys.stderr)
    rows = summarise(results)
    if args.json:
        print(json.dumps({"machine": machine(), "results": rows, "runs": runs}, indent=2))
    else:
        m = machine()
        print(f"machine: {m['cpu']}, {m['cores']} cores; engine flags: {' '.join(ENGINE_FLAGS)}")
        print(table(rows))


if __name__ == "__main__":
    main()
