"""Malformed requests get an OpenAI-shaped 4xx, never a 500 or a hang, and the next request
is served normally."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import ADMIN_KEY, ALL_ENDPOINTS, ENDPOINTS

GOOD = {"prompt": "hello", "max_tokens": 3}

# (name, path, raw body or JSON, expected status, param the error names or None)
CASES = [
    ("invalid json", "/v1/completions", b'{"model": "demo", "prompt": ', 400, None),
    ("json array", "/v1/completions", b"[1, 2]", 400, None),
    ("invalid utf-8", "/v1/completions", b'{"model": "demo", "prompt": "\xff\xfe"}', 400, None),
    ("missing model", "/v1/completions", {"prompt": "hi"}, 400, "model"),
    ("mistyped model", "/v1/completions", {"model": 7, "prompt": "hi"}, 400, "model"),
    ("unknown model", "/v1/chat/completions",
     {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ("missing prompt", "/v1/completions", {"MODEL": 1}, 400, None),
    ("missing messages", "/v1/chat/completions", {"MODEL": 1}, 400, None),
    ("mistyped messages", "/v1/chat/completions", {"MODEL": 1, "messages": "hi"}, 400, None),
    ("max_tokens zero", "/v1/completions", {"MODEL": 1, "prompt": "hi", "max_tokens": 0}, 400, None),
    ("max_tokens negative", "/v1/chat/completions",
     {"MODEL": 1, "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, 400, None),
    ("prompt beyond context", "/v1/completions",
     {"MODEL": 1, "prompt": "licence " * 2000, "max_tokens": 4}, 400, None),
    ("max_tokens beyond context", "/v1/completions",
     {"MODEL": 1, "prompt": "hi", "max_tokens": 100000}, 400, None),
    ("n zero", "/v1/completions", {"MODEL": 1, "prompt": "hi", "n": 0}, 400, None),
    ("logprobs beyond limit", "/v1/completions",
     {"MODEL": 1, "prompt": "hi", "logprobs": 1000}, 400, None),
    ("top_logprobs beyond limit", "/v1/chat/completions",
     {"MODEL": 1, "messages": [{"role": "user", "content": "x"}], "logprobs": True,
      "top_logprobs": 1000}, 400, None),
    ("temperature mistyped", "/v1/completions",
     {"MODEL": 1, "prompt": "hi", "temperature": "hot"}, 400, None),
    ("unsupported parameter", "/v1/completions",
     {"MODEL": 1, "prompt": "hi", "frobnicate": True}, 400, "frobnicate"),
    ("bad stream flag", "/v1/completions", {"MODEL": 1, "prompt": "hi", "stream": "yes"}, 400, None),
    ("deeply nested", "/v1/completions", b'{"model": "demo", "prompt": ' + b"[" * 100000
     + b"]" * 100000 + b"}", 400, None),
]


def _body(raw, model):
    if isinstance(raw, bytes):
        return raw.replace(b'"demo"', f'"{model}"'.encode())
    raw = dict(raw)
    if raw.pop("MODEL", None) is not None:
        raw["model"] = model
    return raw


@pytest.mark.parametrize("model", ENDPOINTS)
@pytest.mark.parametrize("name,path,raw,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_then_service_continues(platform, auth, model, name, path, raw, status,
                                                     param):
    with httpx.Client(base_url=platform["url"], timeout=60, headers=auth) as http:
        body = _body(raw, model)
        if isinstance(body, bytes):
            resp = http.post(path, content=body, headers={"content-type": "application/json"})
        else:
            resp = http.post(path, json=body)
        assert resp.status_code == status, resp.text
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert isinstance(err["message"], str) and err["message"]
        assert err["type"] == "invalid_request_error"
        if param is not None:
            assert err["param"] == param
        if status == 404:
            assert err["code"] == "model_not_found"

        good = http.post("/v1/completions", json={"model": model, **GOOD})
        assert good.status_code == 200, good.text
        assert good.json()["usage"]["completion_tokens"] >= 1


def test_oversized_body_is_refused(platform, auth):
    with httpx.Client(base_url=platform["url"], timeout=60, headers=auth) as http:
        resp = http.post("/v1/completions", content=b"x" * (9 * 1024 * 1024),
                         headers={"content-type": "application/json"})
        assert resp.status_code == 413
        assert resp.json()["error"]["type"] == "invalid_request_error"


def test_health_and_ready(platform, auth):
    with httpx.Client(base_url=platform["url"], timeout=30, headers=auth) as http:
        assert http.get("/health").json() == {"status": "ok"}
        ready = http.get("/ready")
        assert ready.status_code == 200
        # A tenant's key (or none) learns the aggregate only; an operator's names endpoints.
        assert ready.json() == {"ready": True}
        assert http.get("/ready", headers={"authorization": ""}).json() == {"ready": True}
        admin = http.get("/ready", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert admin.json() == {"ready": True, "endpoints": {e: True for e in ALL_ENDPOINTS}}
