"""A flood of clients for the overload test and benchmark: each client streams one short
completion after another, waiting when refused as long as the official openai client would
(`retry-after-ms`, else Retry-After)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
# The SDK's reading, which is openai-python's: `retry-after-ms` first, then Retry-After.
from aifactory_sdk._core import retry_after_from_headers

from observability.slo import DEFAULT_SLO

BODY = {"prompt": "tell me about the licence", "max_tokens": 8}
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


async def flood(url: str, key: str, model: str, workers: int, until: float) -> list:
    """`workers` clients each streaming one short completion after another until `until`;
    returns per request (status, retry-after, error code, seconds to its end, completion
    tokens, seconds to its first token or None), or the exception a request raised.

    Streamed, so that each served request's TTFT is measured where its client sees it, and
    the gateway sees it too (it records TTFT only for streams).
    aiohttp, not httpx: the load generator shares this machine's two cores with the whole
    platform, and httpx's client took most of a core for 240 connections (aiohttp: a
    twentieth of one), which the platform's latencies then paid for."""
    results: list = []
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(base_url=url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120),
                                     headers={"authorization": f"Bearer {key}"}) as http:
        async def worker() -> None:
            while time.monotonic() < until:
                began = time.monotonic()
                try:
                    async with http.post("/v1/completions",
                                         json={"model": model, **BODY, **STREAM},
                                         headers={"x-client-request-id": f"flood-{uuid.uuid4().hex}"}
                                         ) as resp:
                        status, retry_after = resp.status, resp.headers.get("retry-after")
                        if status != 200:
                            code = (await resp.json())["error"]["code"]
                            results.append((status, retry_after, code,
                                            time.monotonic() - began, 0, None))
                            await asyncio.sleep(retry_after_from_headers(resp.headers) or 1.0)
                            continue
                        first, tokens = None, 0
                        async for line in resp.content:
                            if not line.startswith(b"data: {"):
                                continue
                            event = json.loads(line[len(b"data: "):])
                            if "error" in event:
                                raise RuntimeError(f"stream broke: {event['error']}")
                            if event.get("choices") and first is None:
                                first = time.monotonic() - began
                            if event.get("usage"):
                                tokens = event["usage"]["completion_tokens"]
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    results.append(exc)  # a hang, a drop or a broken stream fails the test
                    continue
                results.append((200, None, None, time.monotonic() - began, tokens, first))

        await asyncio.gather(*(worker() for _ in range(workers)))
    return results


def quantile(values: list[float], q: float) -> int:
    """The q-quantile of values in milliseconds (nearest rank)."""
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def summary(results: list, seconds: float) -> dict:
    """What a flood's results say: counts, refusal latency and served TTFT percentiles (ms),
    and the share of served requests within the default SLO's targets: TTFT, and the mean
    gap between the tokens after the first (ITL); and how many missed each target."""
    errors = [r for r in results if isinstance(r, Exception)]
    served = [r for r in results if not isinstance(r, Exception) and r[0] == 200]
    refused = [r[3] for r in results if not isinstance(r, Exception) and r[0] != 200]
    row = {"served": len(served), "refused": len(refused), "errors": len(errors),
           "served_per_s": round(len(served) / seconds, 1)}
    if refused:
        row |= {"refusal_p50_ms": quantile(refused, 0.5), "refusal_p95_ms": quantile(refused, 0.95)}
    if served:
        ttft = [r[5] for r in served if r[5] is not None]
        row |= {"ttft_p50_ms": quantile(ttft, 0.5), "ttft_p95_ms": quantile(ttft, 0.95),
                "ttft_p99_ms": quantile(ttft, 0.99),
                "within_slo": round(sum(_ttft_met(r) and _itl_met(r) for r in served)
                                    / len(served), 4),
                "missed_ttft": sum(not _ttft_met(r) for r in served),
                "missed_itl": sum(not _itl_met(r) for r in served)}
    return row


def _ttft_met(served: tuple) -> bool:
    first = served[5]
    return first is not None and first <= DEFAULT_SLO.ttft_p95_s


def _itl_met(served: tuple) -> bool:
    _, _, _, seconds, tokens, first = served
    return tokens < 2 or first is None or (seconds - first) / (tokens - 1) <= DEFAULT_SLO.itl_p95_s
