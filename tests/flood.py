"""A flood of clients for the overload test and benchmark: each client sends one short
completion after another, waiting out Retry-After when refused."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp

from serving.tenancy import DEFAULT_SLO

BODY = {"prompt": "tell me about the licence", "max_tokens": 8}


async def flood(url: str, key: str, model: str, workers: int, until: float) -> list:
    """`workers` clients each sending one request after another until `until`; returns
    (status, retry-after, error code, seconds, completion tokens) per request, or the
    exception a request raised.

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
                    async with http.post("/v1/completions", json={"model": model, **BODY},
                                         headers={"x-request-id": f"flood-{uuid.uuid4().hex}"}
                                         ) as resp:
                        status, body = resp.status, await resp.json()
                        retry_after = resp.headers.get("retry-after")
                except (aiohttp.ClientError, TimeoutError) as exc:  # a hang or a drop fails below
                    results.append(exc)
                    continue
                code = body["error"]["code"] if status != 200 else None
                tokens = body["usage"]["completion_tokens"] if status == 200 else 0
                results.append((status, retry_after, code, time.monotonic() - began, tokens))
                if status != 200:
                    await asyncio.sleep(float(retry_after or "1"))

        await asyncio.gather(*(worker() for _ in range(workers)))
    return results


def quantile(values: list[float], q: float) -> int:
    """The q-quantile of values in milliseconds (nearest rank)."""
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def summary(results: list, seconds: float) -> dict:
    """What a flood's results say: counts, refusal and served latency percentiles (ms), and
    the share of served requests answered whole within the default TTFT target."""
    errors = [r for r in results if isinstance(r, Exception)]
    served = [r[3] for r in results if not isinstance(r, Exception) and r[0] == 200]
    refused = [r[3] for r in results if not isinstance(r, Exception) and r[0] != 200]
    row = {"served": len(served), "refused": len(refused), "errors": len(errors),
           "served_per_s": round(len(served) / seconds, 1)}
    if refused:
        row |= {"refusal_p50_ms": quantile(refused, 0.5), "refusal_p95_ms": quantile(refused, 0.95)}
    if served:
        row |= {"served_p50_ms": quantile(served, 0.5), "served_p95_ms": quantile(served, 0.95),
                "served_p99_ms": quantile(served, 0.99),
                "within_ttft_target": round(
                    sum(s <= DEFAULT_SLO.ttft_s for s in served) / len(served), 4)}
    return row
