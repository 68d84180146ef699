"""Both clients over `httpx.MockTransport`: retries and their bounds, errors, streams that fail
before and after they start, per-call options and the trace context. Every test runs against
`Client` and `AsyncClient`, which share one implementation."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aifactory_sdk import (
    AIFactoryError,
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    QuotaExhaustedError,
    RateLimitError,
    Stream,
    UnavailableError,
)
from aifactory_sdk.types import ChatCompletionChunk, Completion

KINDS = ["sync", "async"]
COMPLETION = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "demo",
              "choices": [{"index": 0, "text": "hi", "finish_reason": "length"}],
              "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}
LIMITS = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "7",
          "x-ratelimit-reset-requests": "6s", "x-ratelimit-limit-tokens": "1000",
          "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "20ms"}


def _error(status: int, code: str | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={"x-request-id": f"req-{status}", **headers}, json={
        "error": {"message": f"status {status}", "type": "t", "param": None, "code": code}})


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(content: str) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "demo",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body for either client: its parts in order; an exception among them is
    raised at that point, as when the connection breaks mid-stream."""

    def __init__(self, *parts: bytes | Exception) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, Exception):
                raise part
            yield part

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self:
            yield part


class Platform:
    """A scripted platform: answers each request with the next of `answers` (a response, or
    an exception the transport raises), and keeps the requests it saw."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make(kind: str, platform: Platform, **options: Any) -> Client | AsyncClient:
    transport = httpx.MockTransport(platform)
    if kind == "sync":
        return Client(api_key="afk_test", base_url="http://platform",
                      http_client=httpx.Client(transport=transport), **options)
    return AsyncClient(api_key="afk_test", base_url="http://platform",
                       http_client=httpx.AsyncClient(transport=transport), **options)


def run(client: Client | AsyncClient, call: Callable[[Any], Any]) -> Any:
    """`call(client)`'s result; for a stream, the list of its chunks (or what it raised, with
    the chunks read before)."""

    async def run_async() -> Any:
        result = await call(client)
        if hasattr(result, "__aiter__"):
            return await _drain_async(result)
        return result

    if isinstance(client, AsyncClient):
        return asyncio.run(run_async())
    result = call(client)
    assert not inspect.isawaitable(result)
    return _drain(result) if isinstance(result, Stream) else result


def _drain(stream: Any) -> tuple[list, AIFactoryError | None]:
    chunks: list = []
    iterator = iter(stream)
    while True:
        try:
            chunks.append(next(iterator))
        except StopIteration:
            return chunks, None
        except AIFactoryError as exc:  # what the caller would catch
            return chunks, exc


async def _drain_async(stream: Any) -> tuple[list, AIFactoryError | None]:
    chunks: list = []
    iterator = aiter(stream)
    while True:
        try:
            chunks.append(await anext(iterator))
        except StopAsyncIteration:
            return chunks, None
        except AIFactoryError as exc:
            return chunks, exc


def complete(client: Any) -> Any:
    return client.completions.create(model="demo", prompt="hi", max_tokens=3)


def stream_chat(client: Any) -> Any:
    return client.chat.completions.create(model="demo", messages=[{"role": "user",
                                                                   "content": "hi"}],
                                          stream=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_result_carries_usage_rate_limits_and_request_id(kind, waits) -> None:
    platform = Platform(httpx.Response(200, json=COMPLETION,
                                       headers={"x-request-id": "req-ok", **LIMITS}))
    result = run(make(kind, platform), complete)
    assert isinstance(result, Completion) and result.choices[0].text == "hi"
    assert result.usage.total_tokens == 5 and result.request_id == "req-ok"
    assert (result.rate_limit.requests.remaining, result.rate_limit.requests.reset_seconds,
            result.rate_limit.tokens.remaining, result.rate_limit.tokens.reset_seconds) == (
        7, 6.0, 900, 0.02)
    sent = platform.requests[0]
    assert sent.headers["authorization"] == "Bearer afk_test"
    assert sent.url == "http://platform/v1/completions"
    assert json.loads(sent.content) == {"model": "demo", "prompt": "hi", "max_tokens": 3}


@pytest.mark.parametrize("kind", KINDS)
def test_a_429_is_retried_after_its_retry_after(kind, waits) -> None:
    platform = Platform(_error(429, "rate_limit_exceeded", **{"retry-after": "2"}),
                        httpx.Response(200, json=COMPLETION))
    assert run(make(kind, platform), complete).usage.total_tokens == 5
    assert waits == [2.0] and len(platform.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_503_then_success(kind, waits) -> None:
    platform = Platform(_error(503), httpx.Response(200, json=COMPLETION))
    assert run(make(kind, platform), complete).choices[0].text == "hi"
    assert waits == [0.5]  # jitter 1 x 0.5 s, the first backoff


@pytest.mark.parametrize("kind", KINDS)
def test_retries_are_bounded_by_max_retries(kind, waits) -> None:
    platform = Platform(*[_error(503) for _ in range(4)])
    with pytest.raises(UnavailableError) as raised:
        run(make(kind, platform, max_retries=3), complete)
    assert len(platform.requests) == 4 and waits == [0.5, 1.0, 2.0]
    assert (raised.value.status, raised.value.request_id) == (503, "req-503")


@pytest.mark.parametrize("kind", KINDS)
def test_retries_are_bounded_by_the_deadline(kind, waits) -> None:
    # Each 429 asks for 4 s; with a 10 s deadline a third attempt would start at 12 s.
    platform = Platform(*[_error(429, "rate_limit_exceeded", **{"retry-after": "4"})
                          for _ in range(5)])
    with pytest.raises(RateLimitError) as raised:
        run(make(kind, platform, max_retries=10, deadline=10), complete)
    assert waits == [4.0, 4.0] and len(platform.requests) == 3
    assert raised.value.retry_after == 4.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "code", "error"), [
    (429, "insufficient_quota", QuotaExhaustedError),  # waiting does not help
    (400, "invalid_value", BadRequestError),
    (401, "invalid_api_key", AuthenticationError),
])
def test_errors_that_waiting_cannot_fix_are_raised_at_once(kind, waits, status, code,
                                                           error) -> None:
    platform = Platform(_error(status, code))
    with pytest.raises(error) as raised:
        run(make(kind, platform), complete)
    assert waits == [] and len(platform.requests) == 1
    assert (raised.value.status, raised.value.code) == (status, code)


@pytest.mark.parametrize("kind", KINDS)
def test_connection_failures_are_retried_then_raised(kind, waits) -> None:
    platform = Platform(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                        httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError, match="refused"):
        run(make(kind, platform), complete)
    assert len(platform.requests) == 3
    timeouts = Platform(httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        run(make(kind, timeouts, max_retries=0), complete)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_yields_typed_chunks_and_its_usage(kind, waits) -> None:
    usage = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "demo",
             "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2,
                                      "total_tokens": 6}}
    body = Body(_event(_chunk("he")), _event(_chunk("llo")), _event(usage), b"data: [DONE]\n\n")
    platform = Platform(httpx.Response(200, stream=body, headers={
        "content-type": "text/event-stream", "x-request-id": "req-s", **LIMITS}))
    client = make(kind, platform)
    seen: dict = {}

    def keep(c: Any) -> Any:
        async def async_keep() -> Any:
            seen["stream"] = await stream_chat(c)
            return seen["stream"]

        if isinstance(c, AsyncClient):
            return async_keep()
        seen["stream"] = stream_chat(c)
        return seen["stream"]

    chunks, error = run(client, keep)
    assert error is None
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "hello"
    stream = seen["stream"]
    assert stream.usage.total_tokens == 6 and stream.request_id == "req-s"
    assert stream.rate_limit.requests.limit == 10
    sent = json.loads(platform.requests[0].content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_failing_midway_is_not_retried(kind, waits) -> None:
    body = Body(_event(_chunk("he")), httpx.ReadError("connection reset"))
    platform = Platform(httpx.Response(200, stream=body),
                        httpx.Response(200, json=COMPLETION))  # never asked for
    chunks, error = run(make(kind, platform), stream_chat)
    assert [c.choices[0].delta.content for c in chunks] == ["he"]
    assert isinstance(error, APIConnectionError) and "connection reset" in str(error)
    assert len(platform.requests) == 1 and waits == []


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_event_mid_stream_raises_the_typed_error(kind, waits) -> None:
    body = Body(_event(_chunk("he")), _event({"error": {
        "message": "the engine failed mid-stream", "type": "service_unavailable_error",
        "param": None, "code": None}}), b"data: [DONE]\n\n")
    platform = Platform(httpx.Response(200, stream=body, headers={"x-request-id": "req-e"}))
    chunks, error = run(make(kind, platform), stream_chat)
    assert len(chunks) == 1 and isinstance(error, UnavailableError)
    assert error.request_id == "req-e" and len(platform.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_refused_before_it_starts_is_retried(kind, waits) -> None:
    body = Body(_event(_chunk("ok")), b"data: [DONE]\n\n")
    platform = Platform(_error(503, **{"retry-after": "1"}), httpx.Response(200, stream=body))
    chunks, error = run(make(kind, platform), stream_chat)
    assert error is None and len(chunks) == 1 and waits == [1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_with_options_overrides_per_call_and_shares_the_connection(kind, waits) -> None:
    platform = Platform(_error(503), _error(503), httpx.Response(200, json=COMPLETION))
    client = make(kind, platform, max_retries=5)
    quick = client.with_options(max_retries=0, api_key="afk_other", timeout=3)
    with pytest.raises(UnavailableError):
        run(quick, complete)
    assert platform.requests[0].headers["authorization"] == "Bearer afk_other"
    assert (quick.max_retries, client.max_retries, quick.timeout.read) == (0, 5, 3)
    assert quick._http is client._http
    assert run(client, complete).choices[0].text == "hi"  # the original keeps its options
    assert platform.requests[-1].headers["authorization"] == "Bearer afk_test"


@pytest.mark.parametrize("kind", KINDS)
def test_the_current_trace_context_is_sent_as_traceparent(kind, waits) -> None:
    from opentelemetry import context, trace

    span = trace.NonRecordingSpan(trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
        is_remote=False, trace_flags=trace.TraceFlags(1)))
    platform = Platform(httpx.Response(200, json=COMPLETION))
    token = context.attach(trace.set_span_in_context(span))
    try:
        run(make(kind, platform), complete)
    finally:
        context.detach(token)
    assert platform.requests[0].headers["traceparent"] == (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


@pytest.mark.parametrize(("call", "method", "path", "body"), [
    # a quota limit left out is kept, None clears it: only given limits are sent
    (lambda c: c.admin.quotas.set("acme", requests_per_minute=5, tokens_per_month=None),
     "PUT", "/admin/v1/tenants/acme/quota", {"requests_per_minute": 5, "tokens_per_month": None}),
    (lambda c: c.admin.quotas.retrieve("acme", endpoint="llama 3"),
     "GET", "/admin/v1/tenants/acme/endpoints/llama%203/quota", None),
    (lambda c: c.admin.tenants.update("a/b", status="suspended"),
     "PATCH", "/admin/v1/tenants/a%2Fb", {"status": "suspended"}),
    (lambda c: c.admin.keys.create("acme", scope="admin"),
     "POST", "/admin/v1/tenants/acme/keys", {"scope": "admin"}),
    (lambda c: c.admin.endpoints.grant("shared", "acme"),
     "PUT", "/admin/v1/endpoints/shared/grants/acme", None),
    (lambda c: c.tenant.endpoints(), "GET", "/tenant/v1/endpoints", None),
    # the audit log: only the filters given are sent
    (lambda c: c.admin.audit(tenant="acme", limit=5), "GET",
     "/admin/v1/audit?limit=5&tenant=acme", None),
    (lambda c: c.tenant.audit(after_id=7), "GET", "/tenant/v1/audit?after_id=7", None),
    # Responses: a stream asks for nothing else; ids are one path segment
    (lambda c: c.responses.create(model="demo", input="hi", stream=True, store=False),
     "POST", "/v1/responses", {"model": "demo", "input": "hi", "store": False, "stream": True}),
    (lambda c: c.responses.retrieve("resp_1/../x"), "GET", "/v1/responses/resp_1%2F..%2Fx",
     None),
    (lambda c: c.responses.delete("resp_2"), "DELETE", "/v1/responses/resp_2", None),
])
def test_calls_go_where_the_platform_routes_them(waits, call, method, path, body) -> None:
    platform = Platform(httpx.Response(500, json={"error": {"message": "stop here"}}))
    with pytest.raises(UnavailableError, match="stop here"):
        call(make("sync", platform, max_retries=0))
    [sent] = platform.requests
    assert (sent.method, sent.url.raw_path.decode()) == (method, path)
    assert (json.loads(sent.content) if sent.content else None) == body


def test_a_timedelta_window_means_that_long_ago(waits) -> None:
    platform = Platform(httpx.Response(500, json={"error": {"message": "stop here"}}))
    with pytest.raises(UnavailableError):
        make("sync", platform, max_retries=0).tenant.usage(since=timedelta(days=7), by="day")
    params = platform.requests[0].url.params
    since = datetime.fromisoformat(params["since"])
    assert since.tzinfo is not None and params["by"] == "day" and "until" not in params
    assert timedelta(days=7) <= datetime.now(UTC) - since < timedelta(days=7, minutes=5)
