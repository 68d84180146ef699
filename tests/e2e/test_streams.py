"""Streams on one engine are independent of each other's readers, and the engine links the
gateway reaches engine replicas by are closed to anyone without the platform's secret."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest

from tests.e2e.conftest import ENDPOINTS

# Events with five logprobs each are about a kilobyte: 400 of them fill the socket buffers
# between a reader that stops reading and the gateway.
SLOW_BODY = {"prompt": "a long story", "max_tokens": 400, "ignore_eos": True, "stream": True,
             "logprobs": 5}


@pytest.mark.parametrize("model", ENDPOINTS)
async def test_a_stalled_reader_does_not_hold_back_another_stream(platform, auth, model):
    async with httpx.AsyncClient(base_url=platform["url"], headers=auth, timeout=120) as slow, \
            httpx.AsyncClient(base_url=platform["url"], headers=auth, timeout=120) as fast:
        async with slow.stream("POST", "/v1/completions",
                               json={"model": model, **SLOW_BODY}) as stalled:
            assert stalled.status_code == 200
            lines = stalled.aiter_lines()
            while not (await anext(lines)).startswith("data: {"):
                pass
            # The stalled reader reads nothing more while a whole stream goes by beside it.
            reply = await fast.post("/v1/completions", json={
                "model": model, "prompt": "hi", "max_tokens": 64, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}})
            events = [json.loads(line[6:]) for line in reply.text.splitlines()
                      if line.startswith("data: {")]
            assert events[-1]["usage"]["completion_tokens"] == 64
            # Whole, to its end (vLLM may put two tokens in one event when it falls behind).
            choices = [e["choices"][0] for e in events if e["choices"]]
            assert 0 < len(choices) <= 64 and choices[-1]["finish_reason"] == "length"
            # Then the stalled one reads on: everything is still there, in order, to [DONE].
            rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            finish = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in rest[:-1]]
            assert finish[-1] == "length"


def _link_addresses(serve_handles) -> list:
    """Where the engine replicas' links listen, as the gateway finds them."""
    from serving.targets.links.directory import LinkDirectory

    return asyncio.run(LinkDirectory(lambda _: None).read())  # its own loop: called in a thread


async def test_engine_links_refuse_strangers_and_the_platform_serves_on(
        platform, auth, serve_handles):
    from serving.targets.links import LinkRefused, connect

    addresses = [a for a in await asyncio.to_thread(_link_addresses, serve_handles)
                 if a.deployment == "engine-demo-remote"]
    assert len(addresses) == 1, addresses
    address = (addresses[0].host, addresses[0].port)
    with pytest.raises(LinkRefused):  # a guessed secret
        await connect(address, os.urandom(32), "stranger")
    # Raw bytes without the handshake: a request frame the replica never serves.
    reader, writer = await asyncio.open_connection(*address)
    await reader.readexactly(36)
    writer.write(os.urandom(64) + b'\x01\x00\x00\x00\x01\x00\x00\x00\x02{}')
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    async with httpx.AsyncClient(base_url=platform["url"], headers=auth, timeout=60) as http:
        ok = await http.post("/v1/completions", json={"model": "demo-remote", "prompt": "x",
                                                       "max_tokens": 2})
    assert ok.status_code == 200, ok.text
