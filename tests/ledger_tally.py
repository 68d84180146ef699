"""A mixed run against a live platform (plain and streamed requests, engine-refused ones,
client cancellations), and the check that the ledger says what the clients saw: counts per
outcome and exact token sums, also through the CSV export. Used on SQLite (tests/e2e) and
on PostgreSQL (tests/e2e_replicas)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from serving.tenancy.keys import visible_prefix


async def mixed_run_matches_the_ledger(url: str, store, tenant: str, key: str,
                                       model: str) -> None:
    """Only the records of `key` are counted (the tenant may have others)."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        tally = await mixed_run(client, url, key, model)
    await ledger_matches(tally, since, store, tenant, key)


async def mixed_run(client: openai.AsyncOpenAI, url: str, key: str, model: str) -> dict:
    """18 requests at once; what their clients saw, as the ledger should count it."""
    tally = {"ok": 0, "error": 0, "client_cancelled": 0, "prompt": 0, "completion": 0}

    async def ok_plain():
        r = await client.completions.create(model=model, prompt="count me", max_tokens=5)
        tally["ok"] += 1
        tally["prompt"] += r.usage.prompt_tokens
        tally["completion"] += r.usage.completion_tokens

    async def ok_stream():
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage:
                tally["prompt"] += chunk.usage.prompt_tokens
                tally["completion"] += chunk.usage.completion_tokens
        tally["ok"] += 1

    async def error():
        with pytest.raises(openai.BadRequestError):
            await client.completions.create(model=model, prompt="x", max_tokens=0)
        tally["error"] += 1

    async def cancelled():
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     headers={"authorization": f"Bearer {key}"}) as http:
            async with http.stream("POST", "/v1/completions", json={
                    "model": model, "prompt": "long", "max_tokens": 400,
                    "ignore_eos": True, "stream": True}) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        break
        tally["client_cancelled"] += 1

    await asyncio.gather(*[ok_plain() for _ in range(6)], *[ok_stream() for _ in range(6)],
                         *[error() for _ in range(3)], *[cancelled() for _ in range(3)])
    return tally


async def ledger_matches(tally: dict, since: datetime, store, tenant: str, key: str) -> None:
    prefix = visible_prefix(key)
    until = datetime.now(UTC) + timedelta(minutes=1)
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # the cancelled ones are recorded after their clients left
        records = [r for r in store.usage_records(tenant, since, until)
                   if r.key_prefix == prefix]
        if len(records) >= 18 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    counts = {o: sum(1 for r in records if r.outcome == o)
              for o in ("ok", "error", "client_cancelled", "rejected")}
    assert counts == {"ok": 12, "error": 3, "client_cancelled": 3, "rejected": 0}, records

    out = io.StringIO()
    store.export_csv(out, since, until, tenant=tenant)
    rows = [row for row in csv.DictReader(io.StringIO(out.getvalue()))
            if row["key_prefix"] == prefix]
    assert len(rows) == 18
    ok_rows = [row for row in rows if row["outcome"] == "ok"]
    assert sum(int(row["prompt_tokens"]) for row in ok_rows) == tally["prompt"]
    assert sum(int(row["completion_tokens"]) for row in ok_rows) == tally["completion"]
