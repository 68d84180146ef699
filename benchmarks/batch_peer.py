"""The peer of benchmarks/batch_beside_interactive.py: bare `vllm serve` with the demo
engine's flags, the same interactive load alone and beside one batch line at a time, back to
back (what the platform's batch worker runs beside a busy tenant). What that costs the
tenant there is the engine's own share of what the batch costs it on the platform."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from pathlib import Path

from interactive_load import MODEL, drive_interactive, one_request


def demo_engine_flags() -> list[str]:
    """The embedded default's `demo` engine as `vllm serve` flags (LoRA enabled included:
    it changes what an engine step costs)."""
    from deployments.config import default_config

    demo = next(e for e in default_config().endpoints if e.name == MODEL).engine
    options = {"max_model_len": demo.max_model_len, "dtype": demo.dtype,
               "kv_cache_memory_bytes": demo.kv_cache_memory_bytes, **demo.extra_args}
    return [f"--{key.replace('_', '-')}" if value is True
            else f"--{key.replace('_', '-')}={value}" for key, value in options.items()]


async def one_line_at_a_time(client, bodies: list[dict], stop: asyncio.Event) -> int:
    """The batch's lines as chat completions, one at a time and back to back, until `stop`:
    what the platform's batch worker runs beside a busy interactive tenant (one line,
    serving/batch/capacity.py). Returns their completion tokens."""
    tokens = 0
    for body in itertools.cycle(bodies):
        if stop.is_set():
            return tokens
        known = {key: body[key] for key in ("model", "messages", "max_tokens")}
        rest = {key: value for key, value in body.items() if key not in known}
        reply = await client.chat.completions.create(**known, extra_body=rest)
        tokens += reply.usage.completion_tokens
    return tokens


async def measure_peer(url: str, work: Path, args) -> list[dict]:
    """Per repeat, in an order reversed every other repeat: the interactive tenant alone on
    bare `vllm serve` (`peer-alone`), and beside one batch line at a time (`peer-beside`),
    each for --interactive-seconds."""
    from openai import AsyncOpenAI

    bodies = [json.loads(line)["body"] for line in
              (work / "batch.jsonl").read_text().splitlines()[:1000]]
    runs = []
    async with AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                           timeout=120) as client:
        rng = random.Random(1)
        for _ in range(10):
            await one_request(client, rng)
        for repeat in range(args.repeats):
            order = ["peer-alone", "peer-beside"]
            if repeat % 2:
                order.reverse()
            for phase in order:
                seed = 1000 * repeat + 500 + len(runs)
                stop = asyncio.Event()
                line = (asyncio.create_task(one_line_at_a_time(client, bodies, stop))
                        if phase == "peer-beside" else None)
                began = time.perf_counter()
                load = asyncio.create_task(drive_interactive(client, args.rate, stop, seed))
                await asyncio.sleep(args.interactive_seconds)
                stop.set()
                result = {"interactive": (await load).summary()}
                if line is not None:
                    result["line_tokens_per_s"] = await line / (time.perf_counter() - began)
                runs.append({"repeat": repeat, "phase": phase, **result})
                tenant = result["interactive"]
                print(f"# {repeat + 1}/{args.repeats} {phase:<11} interactive "
                      f"{tenant['requests']} requests ({tenant['errors']} errors) TTFT p50 "
                      f"{tenant['ttft_p50_ms']:.1f} ms p95 {tenant['ttft_p95_ms']:.1f} ms",
                      file=sys.stderr, flush=True)
                await asyncio.sleep(2)
    return runs


def run_peer(work: Path, args) -> list[dict]:
    from overhead import bare_vllm

    from deployments.demo_model import write_demo_model

    model = str(write_demo_model(work / "models" / "demo"))
    with bare_vllm(model, work / "vllm.log", demo_engine_flags()) as (url, _):
        return asyncio.run(measure_peer(url, work, args))
