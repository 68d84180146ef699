"""Serving overhead: the same demo model served three ways, one after the other on this
machine, each driven by vLLM's own serving benchmark.

  vllm           bare `vllm serve` (vllm.entrypoints.openai.api_server)
  ray-serve-llm  Ray Serve LLM's OpenAI app (the peer)
  platform       this platform (`aifactory up`, embedded default config)

Load: random 128-token prompts, 64 output tokens, ignore_eos, streaming, concurrency 1 and 16.
Prints TTFT p50/p99, ITL p50, TPOT p50 and output tokens/s for each, then ratios to bare vLLM;
`--json` prints one object instead. Usage: python benchmarks/overhead.py [--systems ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEMS = ("vllm", "ray-serve-llm", "platform")
ENGINE_FLAGS = ["--max-model-len", "2048", "--dtype", "bfloat16",
                "--kv-cache-memory-bytes", str(256 * 1024**2)]


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: Ray's own processes take ephemeral
    ports while they start, and could take one picked there before the server binds it."""
    for port in range(18100, 18200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18100-18199")


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
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ray_stop() -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "stop", "--force"], capture_output=True)


class Served:
    """Context manager: starts one system, yields its base URL, stops it and what it left."""

    def __init__(self, system: str, model: str, workdir: Path, log: Path) -> None:
        self.system, self.model, self.workdir, self.log = system, model, workdir, log
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None

    def __enter__(self) -> str:
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> str:
        port = _free_port()
        out = open(self.log, "w")
        if self.system == "vllm":
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                   self.model, "--served-model-name", "demo", "--port", str(port), *ENGINE_FLAGS]
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            _wait_http(f"http://127.0.0.1:{port}/health", self.proc)
        elif self.system == "ray-serve-llm":
            cmd = [sys.executable, str(HERE / "ray_serve_llm_peer.py"), self.model, str(port)]
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            _wait_http(f"http://127.0.0.1:{port}/v1/models", self.proc)
        else:
            self.env = {**os.environ, "AIFACTORY_HOME": str(self.workdir / "home")}
            cmd = [sys.executable, "-m", "deployments.cli", "up", "--detach", "--port", str(port)]
            subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, check=True)
            # The embedded default's tenant key; vLLM's benchmark sends $OPENAI_API_KEY.
            key = (self.workdir / "home" / "default.key").read_text().strip()
            os.environ["OPENAI_API_KEY"] = key
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        os.environ.pop("OPENAI_API_KEY", None)
        if self.env is not None:
            subprocess.run([sys.executable, "-m", "deployments.cli", "down"], env=self.env,
                           capture_output=True)
        if self.proc is not None:
            _stop(self.proc)
        _ray_stop()
        time.sleep(3)


def run_load(base_url: str, tokenizer: str, concurrency: int, prompts: int) -> dict:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", "demo", "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", "128", "--random-output-len", "64", "--ignore-eos",
        "--max-concurrency", str(concurrency), "--num-prompts", str(prompts),
        "--num-warmups", "4", "--percentile-metrics", "ttft,tpot,itl",
        "--metric-percentiles", "50,99", "--disable-tqdm", "--seed", "0",
    ])
    with contextlib.redirect_stdout(sys.stderr):  # its report is not ours
        r = main(args)
    return {
        "output_throughput": r["output_throughput"],
        "ttft_p50_ms": r["p50_ttft_ms"], "ttft_p99_ms": r["p99_ttft_ms"],
        "itl_p50_ms": r["p50_itl_ms"], "tpot_p50_ms": r["p50_tpot_ms"],
        "completed": r["completed"],
    }


def admission_cost(base_url: str, samples: int = 200) -> dict:
    """The gateway's own account (Server-Timing) of what authentication, access and
    admission cost, over sequential small requests."""
    import statistics

    import httpx

    headers = {"authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"}
    costs = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        for _ in range(samples):
            resp = http.post("/v1/completions",
                             json={"model": "demo", "prompt": "hi", "max_tokens": 1})
            resp.raise_for_status()
            timing = resp.headers["server-timing"]
            costs.append(float(timing.split("dur=")[1].split(",")[0]))
    costs.sort()
    return {"admission_p50_ms": statistics.median(costs),
            "admission_p99_ms": costs[int(0.99 * (len(costs) - 1))]}


def _table(results: list[dict]) -> str:
    base = {r["concurrency"]: r for r in results if r["system"] == "vllm"}
    cols = ["output_throughput", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "tpot_p50_ms"]
    lines = [f"{'system':<15}{'conc':>5}  {'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}"
             f"{'ITL p50':>9}{'TPOT p50':>10}   ratios to bare vLLM (tok/s, TTFT p50, TPOT p50)"]
    for r in results:
        row = f"{r['system']:<15}{r['concurrency']:>5}  {r['output_throughput']:>9.1f}" + "".join(
            f"{r[c]:>{10 if c != 'itl_p50_ms' else 9}.2f}" for c in cols[1:])
        b = base.get(r["concurrency"])
        if b is not None and r["system"] != "vllm":
            row += (f"   {r['output_throughput'] / b['output_throughput']:.2f}x"
                    f"  {r['ttft_p50_ms'] / b['ttft_p50_ms']:.2f}x"
                    f"  {r['tpot_p50_ms'] / b['tpot_p50_ms']:.2f}x")
        lines.append(row)
    for r in results:
        if "admission_p50_ms" in r:
            lines.append(f"platform admission (auth + access + quota check, Server-Timing): "
                         f"p50 {r['admission_p50_ms']:.2f} ms, p99 {r['admission_p99_ms']:.2f} ms")
            break
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--prompts-per-client", type=int, default=12,
                    help="prompts = concurrency x this (at least 40)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE.parent))
    from deployments.demo_model import write_demo_model

    results = []
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        work = Path(tmp)
        model = str(write_demo_model(work / "home" / "models" / "demo"))
        for system in args.systems:
            log = work / f"{system}.log"
            try:
                with Served(system, model, work, log) as url:
                    for c in args.concurrency:
                        n = max(40, c * args.prompts_per_client)
                        r = run_load(url, model, c, n)
                        results.append({"system": system, "concurrency": c, **r})
                    if system == "platform":
                        results[-1].update(admission_cost(url))
                        print(f"# {system} c={c}: {r['output_throughput']:.0f} tok/s",
                              file=sys.stderr, flush=True)
            except Exception as exc:
                print(f"# {system} failed: {exc!r}; log:\n{log.read_text()[-3000:]}",
                      file=sys.stderr)
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    else:
        print(_table(results))


if __name__ == "__main__":
    main()
