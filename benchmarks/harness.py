"""What the benchmarks share: the machine they ran on, a platform's ports and its stopping,
medians with their spread, and how a report is printed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform as host_platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between the two nearest ranks as numpy's
    default does; e.g. [10, 20, 30, 40], q=95: rank 0.95 x 3 = 2.85, 30 + 0.85 x 10 = 38.5."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def median_spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max), NaN where nothing was measured."""
    measured = [v for v in values if not math.isnan(v)]
    if not measured:
        return math.nan, math.nan, math.nan
    return statistics.median(measured), min(measured), max(measured)


def free_port() -> int:
    """A port in 18400-18498 free with the next one (the gateway's direct-ingress range is
    [port, port + 2)) and with port + 100 (Serve's own proxy), below the ephemeral range and
    apart from the tests' 18000 and the other benchmarks' ports."""
    for port in range(18400, 18500, 2):
        sockets = [socket.socket() for _ in range(3)]
        try:
            for s, p in zip(sockets, (port, port + 1, port + 100)):
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return port
    raise RuntimeError("no free ports in 18400-18499")


def leftover_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    keep = ("ray::", "raylet", "gcs_server", "VLLM::", "EngineCore", "haproxy",
            "aifactory::")
    return [line for line in out.splitlines()[1:]
            if any(k in line for k in keep) and not line.split()[1].startswith("Z")]


def stop_platform(cli: list[str], env: dict) -> None:
    """`aifactory down`; if it fails or leaves Ray, vLLM or HAProxy processes, `ray stop
    --force` and `aifactory down` again (it ends engines whose replica is gone)."""
    def down() -> str | None:
        try:
            done = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True,
                                  timeout=300, process_group=0)
        except subprocess.TimeoutExpired:
            return "timed out"
        return None if done.returncode == 0 else done.stderr[-2000:]

    failed = down()
    deadline = time.monotonic() + 30
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(1)
    left = leftover_processes()
    if failed is None and not left:
        return
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"],
                   capture_output=True, timeout=120, process_group=0)
    down()
    print(f"# aifactory down failed ({failed}) or left {len(left)} processes; ran `ray stop "
          f"--force` and `aifactory down` again; now left: {leftover_processes()}",
          file=sys.stderr)


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True,
                              text=True).stdout.strip()

    # The platform runs the working tree: say so when it differs from the commit.
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"cpu": cpu, "cores": os.cpu_count(), "python": host_platform.python_version(),
            "commit": git("rev-parse", "--short", "HEAD") + (" (modified)" if dirty else ""),
            "load_average_at_start": os.getloadavg()}


def machine_line(host: dict) -> str:
    """The first line of every benchmark's report: where and on what it ran."""
    load = ", ".join(f"{x:.1f}" for x in host["load_average_at_start"])
    return (f"machine: {host['cpu']}, {host['cores']} cores, load average {load} at start; "
            f"commit {host['commit']}")


def print_result(result: dict, report: str, as_json: bool) -> None:
    """With --json the object on stdout and the table beside it (stderr) for whoever
    watches; else the table."""
    if as_json:
        print(json.dumps(result, indent=2))
        print(report, file=sys.stderr)
    else:
        print(report)


def work_directory(stack: contextlib.ExitStack, work: Path | None, prefix: str) -> Path:
    """`work` (made if missing), kept after the run; else a temporary folder that `stack`
    removes."""
    if work is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    return work


def exit_on_sigterm(*_) -> None:
    raise SystemExit(143)  # unwinds through `platform`'s finally: the platform is stopped
