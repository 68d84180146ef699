"""A client that disconnects mid-stream frees its engine request."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import ENDPOINTS

STREAMS = 6
MAX_TOKENS = 480  # natural end: 480 decode steps of 6 requests, several seconds on this CPU


def _running(handle) -> float:
    return handle.load.remote().result()["unfinished_requests"]


@pytest.mark.parametrize("model", ENDPOINTS)
def test_disconnect_mid_stream_aborts_engine_request(platform, auth, serve_handles, model):
    handle = serve_handles[model]
    assert _running(handle) == 0
    body = {"model": model, "prompt": "go on", "max_tokens": MAX_TOKENS, "stream": True,
            "ignore_eos": True}
    clients = [httpx.Client(base_url=platform["url"], timeout=60, headers=auth) for _ in range(STREAMS)]
    streams = []
    for http in clients:
        ctx = http.stream("POST", "/v1/completions", json=body)
        resp = ctx.__enter__()
        assert resp.status_code == 200
        lines = resp.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert any(line.startswith("data: {") for line in got)
        # Keep the line iterator alive: dropping it closes the connection early.
        streams.append((ctx, resp, lines))
    assert _running(handle) == STREAMS

    closed_at = time.monotonic()
    for (ctx, resp, lines), http in zip(streams, clients):
        resp.close()
        http.close()

    while _running(handle) and time.monotonic() - closed_at < 1.5:
        time.sleep(0.05)
    assert _running(handle) == 0, "engine still runs requests whose clients went away"

    # The engine keeps serving.
    with httpx.Client(base_url=platform["url"], timeout=60, headers=auth) as http:
        ok = http.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 2})
        assert ok.status_code == 200
