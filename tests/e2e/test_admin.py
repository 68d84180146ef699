"""The admin API and the CLI that mirrors it, against the live platform: what an operator
creates there is what an SME's key can then do."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from serving.gateway.access import STORE_CACHE_TTL_S
from tests.e2e.conftest import ADMIN_KEY, aifactory, openai_client


def cli(platform, *args: str) -> dict | list:
    result = aifactory(*args, "--json", env=platform["env"], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_operator_sets_up_a_tenant_with_the_cli_and_its_key_works(platform):
    cli(platform, "tenant", "create", "initech", "--priority", "critical")
    created = cli(platform, "key", "create", "initech")
    key = created["key"]
    assert key.startswith("afk_") and created["prefix"] == key[:12]
    cli(platform, "grant", "demo-remote", "initech")
    quota = cli(platform, "quota", "set", "initech", "--rpm", "100", "--tpm", "50000")
    assert quota["requests_per_minute"] == 100 and quota["tokens_per_minute"] == 50000

    client = openai_client(platform, key)
    assert [m.id for m in client.models.list()] == ["demo-remote"]
    reply = client.completions.create(model="demo-remote", prompt="hi", max_tokens=3)
    assert reply.usage.completion_tokens >= 1

    listed = cli(platform, "key", "list", "initech")["data"]
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert "key" not in listed[0] and not any("hash" in f for f in listed[0])
    usage = cli(platform, "usage", "initech", "--since", "1h", "--by", "hour")
    assert usage["requests"] == 1
    assert usage["completion_tokens"] == reply.usage.completion_tokens
    assert sum(b["outcomes"].get("ok", 0) for b in usage["buckets"]) == 1

    cli(platform, "key", "revoke", str(listed[0]["id"]))
    time.sleep(STORE_CACHE_TTL_S + 0.2)  # revocation takes effect within the cache's lifetime
    with pytest.raises(openai.AuthenticationError):
        client.completions.create(model="demo-remote", prompt="hi", max_tokens=3)


def test_admin_api_needs_an_admin_key(platform, keys):
    url = platform["url"] + "/admin/v1/tenants"
    assert httpx.get(url, timeout=30).status_code == 401
    inference = httpx.get(url, headers={"authorization": f"Bearer {keys['acme']}"}, timeout=30)
    assert inference.status_code == 403
    assert inference.json()["error"]["type"] == "permission_error"
    admin = httpx.get(url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert admin.status_code == 200
    assert {"acme", "globex"} <= {t["name"] for t in admin.json()["data"]}


@pytest.mark.parametrize("payload,status", [
    ({"name": "acme"}, 409),                       # duplicate
    ({"name": "Robert'); DROP TABLE tenants;--"}, 400),
    ({"name": "x" * 500}, 400),
    ({"name": "ok-name", "priority": "royal"}, 400),
    ({"nom": "typo"}, 400),
])
def test_bad_admin_payloads_are_refused_and_change_nothing(platform, payload, status):
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    before = httpx.get(platform["url"] + "/admin/v1/tenants", headers=headers, timeout=30).json()
    resp = httpx.post(platform["url"] + "/admin/v1/tenants", json=payload, headers=headers,
                      timeout=30)
    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    after = httpx.get(platform["url"] + "/admin/v1/tenants", headers=headers, timeout=30).json()
    assert after == before


def test_unknown_paths_answer_in_openai_shape(platform):
    resp = httpx.get(platform["url"] + "/v1/nothing-here", timeout=30)
    assert resp.status_code == 404
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
