"""The SDK (`aifactory_sdk`) against the live platform over HTTP: inference sync and async,
typed streams, usage and rate-limit state on results, typed refusals, tenant self-service
(endpoints, usage, SLA report) and administration round trips with an admin key."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aifactory_sdk import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExhaustedError,
    RateLimitError,
)
from aifactory_sdk.types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    EmbeddingList,
    ModelCard,
    MyEndpoint,
    ResponseObject,
    ResponseStreamEvent,
    SlaReport,
)

from serving.gateway.access import STORE_CACHE_TTL_S
from tests.e2e.conftest import ADMIN_KEY
from tests.e2e.test_tenancy import new_tenant
from tests.platform_helpers import inside_one_minute_window

HELLO = [{"role": "user", "content": "Hello"}]


def sdk(platform, key: str, **options) -> Client:
    return Client(api_key=key, base_url=platform["url"], **options)


def test_inference_with_usage_request_ids_and_typed_streams(platform, keys):
    # The OpenAI base URL works as well as the platform's root.
    with Client(api_key=keys["acme"], base_url=platform["url"] + "/v1") as client:
        assert sorted(m.id for m in client.models.list().data) == [
            "demo", "demo-embed", "demo-remote"]
        card = client.models.retrieve("demo")
        assert isinstance(card, ModelCard) and card.max_model_len == 512 and card.request_id
        with pytest.raises(NotFoundError):
            client.models.retrieve("no-such-model")

        vectors = client.embeddings.create(model="demo-embed", input=["one", "two"])
        assert isinstance(vectors, EmbeddingList) and [e.index for e in vectors.data] == [0, 1]
        assert len(vectors.data[0].embedding) >= 16 and vectors.usage.prompt_tokens > 0

        reply = client.chat.completions.create(model="demo", messages=HELLO, max_tokens=8,
                                               ignore_eos=True)
        assert isinstance(reply, ChatCompletion)
        assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 0
        assert reply.request_id and reply.choices[0].message.role == "assistant"

        text = client.completions.create(model="demo-remote", prompt="Once upon", max_tokens=5,
                                         ignore_eos=True)
        assert isinstance(text, Completion) and text.usage.completion_tokens == 5

        with client.chat.completions.create(model="demo", messages=HELLO, max_tokens=6,
                                            ignore_eos=True, stream=True) as stream:
            chunks = list(stream)
        assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        assert len([p for p in pieces if p]) >= 1
        assert stream.usage.completion_tokens == 6 and stream.request_id


def test_responses_are_created_streamed_continued_and_kept_per_tenant(platform, keys):
    with sdk(platform, keys["acme"]) as client, sdk(platform, keys["globex"]) as other:
        first = client.responses.create(model="demo", input="Say one word.",
                                        max_output_tokens=4)
        assert isinstance(first, ResponseObject) and first.status in ("completed", "incomplete")
        assert first.usage.output_tokens >= 1 and first.request_id
        assert first.output_text == client.responses.retrieve(first.id).output_text

        with client.responses.create(model="demo", input="And another.", stream=True,
                                     previous_response_id=first.id,
                                     max_output_tokens=4) as stream:
            events = list(stream)
        assert all(isinstance(e, ResponseStreamEvent) for e in events)
        assert events[0].type == "response.created" and events[-1].closes
        second = events[-1].response
        assert second.previous_response_id == first.id
        # the continued prompt carries the first turn, so it is longer than the first's
        assert stream.usage.prompt_tokens > first.usage.input_tokens
        assert stream.usage.completion_tokens == second.usage.output_tokens

        with pytest.raises(NotFoundError):
            other.responses.retrieve(second.id)
        with pytest.raises(NotFoundError):
            other.responses.create(model="demo", input="x", previous_response_id=first.id)
        assert client.responses.delete(second.id).deleted is True
        with pytest.raises(NotFoundError):
            client.responses.retrieve(second.id)


async def test_inference_async_with_concurrent_calls_and_a_stream(platform, keys):
    async with AsyncClient(api_key=keys["acme"], base_url=platform["url"]) as client:
        replies = await asyncio.gather(*[
            client.completions.create(model="demo-remote", prompt=f"n {i}", max_tokens=3,
                                      ignore_eos=True) for i in range(4)])
        assert [r.usage.completion_tokens for r in replies] == [3, 3, 3, 3]
        assert len({r.request_id for r in replies}) == 4

        stream = await client.completions.create(model="demo", prompt="Once", max_tokens=4,
                                                 ignore_eos=True, stream=True)
        chunks = [chunk async for chunk in stream]
        assert all(isinstance(c, CompletionChunk) for c in chunks)
        assert "".join(c.choices[0].text for c in chunks if c.choices)
        assert stream.usage.completion_tokens == 4


def test_rate_limit_state_and_refusals(platform, store):
    _, key = new_tenant(store, requests_per_minute=2)
    client = sdk(platform, key, max_retries=0)
    inside_one_minute_window(15)
    first = client.completions.create(model="demo-remote", prompt="hi", max_tokens=2)
    second = client.completions.create(model="demo-remote", prompt="hi", max_tokens=2)
    assert (first.rate_limit.requests.limit, first.rate_limit.requests.remaining,
            second.rate_limit.requests.remaining) == (2, 1, 0)
    assert 0 < first.rate_limit.requests.reset_seconds <= 60
    assert first.rate_limit.tokens is None  # no token limit set

    with pytest.raises(RateLimitError) as refused:
        client.completions.create(model="demo-remote", prompt="hi", max_tokens=2)
    error = refused.value
    assert not isinstance(error, QuotaExhaustedError)
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert 0 < error.retry_after <= 60 and error.request_id
    assert error.rate_limit.requests.remaining == 0

    # A spent monthly budget is its own error, and is not retried even when retries are on.
    broke, broke_key = new_tenant(store, tokens_per_month=5)
    with pytest.raises(QuotaExhaustedError) as spent:
        sdk(platform, broke_key, max_retries=5).completions.create(
            model="demo-remote", prompt="hi", max_tokens=10)
    assert spent.value.code == "insufficient_quota" and spent.value.retry_after is None
    now = datetime.now(UTC)
    [bucket] = store.usage_summary(broke, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert bucket.outcomes["rejected"] == 1  # one attempt: no retry


def test_tenant_self_service_shows_its_endpoints_usage_and_sla(platform, store, keys):
    mine = sdk(platform, keys["globex"]).tenant.endpoints()
    assert [(e.name, e.shared) for e in mine.data] == [("demo-embed", True),
                                                       ("demo-remote", True)]
    assert isinstance(mine.data[0], MyEndpoint)

    name, key = new_tenant(store)
    client = sdk(platform, key)
    spent = []
    for _ in range(3):  # streamed: the platform measures time to first token on streams
        with client.completions.create(model="demo-remote", prompt="count", max_tokens=3,
                                       ignore_eos=True, stream=True) as stream:
            assert len([c for c in stream if c.choices]) >= 1
        spent.append(stream.usage)
    report = client.tenant.usage(since=timedelta(hours=1), by="day")
    assert (report.tenant, report.by, report.requests) == (name, "day", 3)
    assert report.total_tokens == sum(u.total_tokens for u in spent)
    assert sum(b.outcomes["ok"] for b in report.buckets) == 3
    assert client.tenant.quota().requests_per_minute is None

    sla = client.tenant.sla(since=timedelta(hours=1))
    assert isinstance(sla, SlaReport)
    assert (sla.tenant, sla.requests, sla.outcomes["ok"], sla.availability) == (name, 3, 3, 1.0)
    assert sla.ttft.samples == 3 and sla.ttft.p95_s > 0
    assert sla.total_tokens == report.total_tokens
    assert sdk(platform, ADMIN_KEY).admin.sla(name, since=timedelta(hours=1)).requests == 3


def test_admin_round_trips(platform, keys):
    admin = sdk(platform, ADMIN_KEY, max_retries=0)
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    tenant = admin.admin.tenants.create(name, priority="critical")
    assert (tenant.name, tenant.priority, tenant.status) == (name, "critical", "active")
    assert name in {t.name for t in admin.admin.tenants.list().data}
    assert admin.admin.tenants.update(name, priority="best_effort").priority == "best_effort"
    with pytest.raises(ConflictError):
        admin.admin.tenants.create(name)
    with pytest.raises(NotFoundError) as missing:
        admin.admin.tenants.retrieve("no-such-tenant")
    assert missing.value.code == "not_found"

    created = admin.admin.keys.create(name)
    assert created.key.startswith("afk_") and created.status == "active"
    assert admin.admin.endpoints.grant("demo-remote", name).grants.count(name) == 1
    quota = admin.admin.quotas.set(name, requests_per_minute=50, tokens_per_minute=10_000)
    assert (quota.requests_per_minute, quota.tokens_per_minute) == (50, 10_000)
    # a limit left out keeps its value, None clears it
    quota = admin.admin.quotas.set(name, tokens_per_minute=None)
    assert (quota.requests_per_minute, quota.tokens_per_minute) == (50, None)
    assert admin.admin.quotas.retrieve(name).requests_per_minute == 50

    user = sdk(platform, created.key, max_retries=0)
    reply = user.completions.create(model="demo-remote", prompt="hi", max_tokens=2)
    assert reply.rate_limit.requests.limit == 50
    assert admin.admin.usage(name, since=timedelta(hours=1)).requests == 1
    assert created.prefix in admin.admin.usage_csv(since=timedelta(hours=1), tenant=name)

    shared = f"sdk-ep-{uuid.uuid4().hex[:6]}"
    assert admin.admin.endpoints.create(shared).shared
    assert admin.admin.endpoints.grant(shared, name).grants == [name]
    assert admin.admin.endpoints.revoke_grant(shared, name).grants == []
    assert admin.admin.endpoints.delete(shared).deleted
    with pytest.raises(NotFoundError):
        admin.admin.endpoints.retrieve(shared)

    with pytest.raises(PermissionDeniedError):  # an inference key on the admin API
        sdk(platform, keys["acme"]).admin.tenants.list()

    [listed] = admin.admin.keys.list(name).data
    assert admin.admin.keys.revoke(listed.id).status == "revoked"
    time.sleep(STORE_CACHE_TTL_S + 0.2)  # revocation takes effect within the cache's lifetime
    with pytest.raises(AuthenticationError) as rejected:
        user.completions.create(model="demo-remote", prompt="hi", max_tokens=2)
    assert rejected.value.code == "invalid_api_key"
