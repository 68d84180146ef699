"""A built-in engine profile calibrated by a measured one (autoscaling.profile's file).

The file's fits replace the built-in step-time, capacity and cold-start figures; the serving
defaults (SLOs, concurrency target, request shapes) stay the built-in profile's:
- decode_step(b) = the fitted decode step's intercept + slope * b, as measured.
- prefill: the fit gives the time to the first token of a prompt alone, a + b * tokens, and
  the simulator's TTFT is prefill + one decode step; so prefill_tokens_per_s = 1 / b and
  prefill_base_s = a - decode_step(1) (at least 0), which makes an idle replica's simulated
  TTFT the measured one. E.g. a = 9.97 ms, b = 0.24 ms/token, decode_step(1) = 6.5 ms:
  4,160 tokens/s and 3.5 ms; a 128-token prompt: 3.5 + 30.8 + 6.5 = 40.8 ms = 9.97 + 30.8.
- max_num_seqs: the engine's, or fewer when the KV cache cannot hold that many of the
  profile's longest requests (longest prompt + longest output tokens each).
- cold_start_s: the measured one, launch to first token.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from autoscaling.profile.schema import EngineProfileFile, load_profile
from autoscaling.simulate.engine import PROFILES, EngineProfile

# A flat prefill fit (no measurable cost per token) still needs a finite rate.
MIN_PREFILL_SECONDS_PER_TOKEN = 1e-9


def base_profile_for(file: EngineProfileFile) -> str:
    """The built-in profile whose serving defaults go with a measurement's accelerator."""
    return "cpu-tiny-llama" if file.machine.accelerator == "cpu" else "h100-llama-8b"


def calibrate(base: EngineProfile, file: EngineProfileFile, name: str) -> EngineProfile:
    decode, prefill = file.fitted.decode_step, file.fitted.prefill
    one_step = decode.intercept_s + decode.slope_s
    longest = max(base.prompt_tokens) + max(base.output_tokens)
    seats = max(1, min(file.engine.max_num_seqs, file.measured.kv_cache.tokens // longest))
    return dataclasses.replace(
        base,
        name=name,
        decode_step_base_s=decode.intercept_s,
        decode_step_per_seq_s=decode.slope_s,
        prefill_tokens_per_s=1.0 / max(prefill.slope_s, MIN_PREFILL_SECONDS_PER_TOKEN),
        prefill_base_s=max(0.0, prefill.intercept_s - one_step),
        max_num_seqs=seats,
        cold_start_s=file.fitted.cold_start_s,
    )


def load_calibrated(path: str | os.PathLike[str], base: str | None = None) -> EngineProfile:
    """The profile file at path over the built-in profile base (by default the one for its
    accelerator). Raises autoscaling.profile.ProfileError for a file that cannot be used."""
    file = load_profile(path)
    base = base or base_profile_for(file)
    return calibrate(PROFILES[base], file, f"{base} calibrated by {Path(path).name}")
