"""`python -m autoscaling.profile` end to end on the real CPU engine and the demo model, with
the smallest settings (two prompt lengths, two batch sizes, one repeat, four decode tokens):
one engine start, most of the test's time (about 45 s on an idle two-core machine)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoscaling.profile.fit import PHASES
from autoscaling.profile.schema import load_profile
from autoscaling.simulate.calibrated import load_calibrated


def test_the_profile_command_measures_the_demo_model(tmp_path):
    from deployments.demo_model import write_demo_model

    model = write_demo_model(tmp_path / "demo")
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, "-m", "autoscaling.profile", "--model", str(model),
         "--engine-arg", "max_model_len=256", "--engine-arg", "dtype=bfloat16",
         "--engine-arg", f"kv_cache_memory_bytes={32 * 1024**2}",
         "--engine-arg", "enforce_eager=true",
         "--prompt-lengths", "8,64", "--batch-sizes", "1,2", "--decode-tokens", "4",
         "--repeats", "1", "--out", str(out), "--log", str(tmp_path / "engine.log"),
         "--timeout", "240"],
        check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "decode step:" in result.stdout and "cold start" in result.stdout

    profile = load_profile(out)
    assert sorted(profile.measured.prefill_s) == [8, 64]
    assert sorted(profile.measured.decode_step_s) == [1, 2]
    # 32 MiB at 512 bytes per token (2 layers x 1 KV head x 64 x 2 (K, V) x 2 bytes):
    # 65,536 tokens in blocks of 128.
    assert profile.measured.kv_cache.tokens == 65_536
    assert profile.engine.max_model_len == 256
    phases = profile.measured.cold_start_s
    assert tuple(phases) == PHASES
    # vLLM's own timings were found in its log: the weights and the KV cache take time.
    assert phases["weights"] > 0 and phases["kv cache"] > 0
    assert profile.fitted.cold_start_s == pytest.approx(sum(phases.values()), abs=0.01)
    assert profile.machine.vllm_version != "not installed"
    # The simulator takes it.
    assert load_calibrated(out).cold_start_s == profile.fitted.cold_start_s
