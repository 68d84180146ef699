"""The interactive tenant of the benchmarks: short streamed completions in an open loop,
Poisson arrivals, TTFT as the client sees it (the first streamed chunk)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass

from harness import percentile

MODEL = "demo"
MAX_TOKENS = 32  # per request (and per batch line, unless a benchmark says otherwise)
# Short varied prompts (about 20 tokens with the demo tokenizer); the text is noise to a
# model with random weights anyway, what matters is its length.
WORDS = ("the partition lends idle capacity to batch work and takes it back when a tenant "
         "with a guarantee returns to its endpoint so that nobody waits").split()


def prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(16))



@dataclass
class Interactive:
    """TTFTs (seconds) of the requests sent in one phase, and how many failed."""

    ttft_s: list[float]
    errors: int
    first_error: str | None = None

    def summary(self) -> dict:
        ms = [t * 1000 for t in self.ttft_s]
        return {"requests": len(self.ttft_s) + self.errors, "errors": self.errors,
                "ttft_p50_ms": percentile(ms, 50), "ttft_p95_ms": percentile(ms, 95),
                "ttft_p99_ms": percentile(ms, 99), "first_error": self.first_error}


async def one_request(client, rng: random.Random, began: float | None = None) -> float:
    """TTFT in seconds, from `began` (its arrival, by time.perf_counter) if given."""
    began = time.perf_counter() if began is None else began
    stream = await client.completions.create(model=MODEL, prompt=prompt(rng),
                                             max_tokens=MAX_TOKENS, stream=True,
                                             extra_body={"ignore_eos": True})
    ttft = None
    async for _ in stream:
        if ttft is None:
            ttft = time.perf_counter() - began
    if ttft is None:
        raise RuntimeError("the stream ended without a chunk")
    return ttft


async def drive_interactive(client, rate: float, stop: asyncio.Event, seed: int) -> Interactive:
    """Open loop: Poisson arrivals at `rate` per second until `stop`, each request on its
    own task (a slow answer never delays the next arrival); waits for those in flight."""
    rng = random.Random(seed)
    tasks: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not stop.is_set():
        tasks.append(asyncio.create_task(one_request(client, random.Random(rng.random()),
                                                     time.perf_counter())))
        next_at += rng.expovariate(rate)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    return Interactive([r for r in results if not isinstance(r, BaseException)],
                       len(failures), repr(failures[0])[:300] if failures else None)
