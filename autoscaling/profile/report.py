"""A profile as a few lines of text for an operator."""

from __future__ import annotations

from autoscaling.profile.schema import EngineProfileFile


def render_text(profile: EngineProfileFile) -> str:
    m, run, fitted, measured = profile.machine, profile.run, profile.fitted, profile.measured
    prefill, decode = fitted.prefill, fitted.decode_step
    load = run.load_average
    lines = [
        (f"{profile.engine.model_name} on {m.cpu_model} ({m.usable_cores} of {m.cores} cores, "
         f"{m.memory_bytes / 2**30:.1f} GiB), vLLM {m.vllm_version}, "
         f"{run.date:%Y-%m-%d %H:%M} UTC, load average {load.mean:.2f} (max {load.max:.2f})"),
        (f"prefill (first token alone): {prefill.intercept_s * 1e3:.2f} ms + "
         f"{prefill.slope_s * 1e6:.1f} us/token (r2 {prefill.r2:.3f}; "
         f"{1 / prefill.slope_s if prefill.slope_s else float('inf'):,.0f} tokens/s)"),
        (f"decode step: {decode.intercept_s * 1e3:.2f} ms + {decode.slope_s * 1e3:.3f} ms/seq "
         f"(r2 {decode.r2:.3f})"),
        (f"KV cache: {measured.kv_cache.tokens:,} tokens ({measured.kv_cache.blocks} blocks "
         f"of {measured.kv_cache.block_size}); max_num_seqs {profile.engine.max_num_seqs}"),
        f"cold start {fitted.cold_start_s:.1f} s: " + ", ".join(
            f"{phase} {seconds:.2f}" for phase, seconds in measured.cold_start_s.items()),
    ]
    if load.max > m.usable_cores:
        lines.append(f"note: the load average reached {load.max:.2f} on {m.usable_cores} "
                     "cores: other work shared the machine and the times are inflated")
    return "\n".join(lines)
