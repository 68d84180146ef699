"""The SDK's pure core: retry decisions, error mapping, rate-limit headers, SSE decoding."""

from __future__ import annotations

import httpx
import pytest
from aifactory_sdk import errors
from aifactory_sdk._core import (
    MAX_RETRY_AFTER_S,
    error_from_event,
    error_from_response,
    parse_duration,
    rate_limit_from_headers,
    resolve_options,
    retry_after_from_headers,
    retry_delay,
)
from aifactory_sdk._streams import ChunkDecoder, SSEDecoder
from aifactory_sdk.types import ChatCompletionChunk, ResponseStreamEvent


def _status(status: int, code: str | None = None,
            retry_after: float | None = None) -> errors.APIStatusError:
    body = {"error": {"message": "m", "type": "t", "param": None, "code": code}}
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    return error_from_response(status, httpx.Headers(headers), httpx.Response(
        status, json=body).content)


@pytest.mark.parametrize(("error", "retries_done", "elapsed", "expected"), [
    # no Retry-After: full jitter (jitter() = 0.5 here) of min(8, 0.5 * 2**n)
    (_status(503), 0, 0.0, 0.25),      # 0.5 * 0.5
    (_status(500), 1, 0.0, 0.5),       # 0.5 * 1
    (_status(502), 5, 0.0, 4.0),       # 0.5 * min(8, 0.5 * 32): capped at 8
    (_status(408), 0, 0.0, 0.25),
    (_status(409), 0, 0.0, 0.25),
    (_status(429, "rate_limit_exceeded"), 0, 0.0, 0.25),  # a concurrency limit: no Retry-After
    (errors.APIConnectionError("refused"), 0, 0.0, 0.25),
    (errors.APITimeoutError("slow"), 0, 0.0, 0.25),
    # Retry-After is waited exactly
    (_status(429, "rate_limit_exceeded", retry_after=3), 0, 0.0, 3.0),
    (_status(503, retry_after=1), 1, 0.0, 1.0),
    # ... unless it is absurdly long: then the error is raised at once
    (_status(429, "rate_limit_exceeded", retry_after=MAX_RETRY_AFTER_S + 1), 0, 0.0, None),
    # never: all 6 retries used up, a spent monthly budget, client errors
    (_status(503), 6, 0.0, None),
    (_status(429, "insufficient_quota", retry_after=1), 0, 0.0, None),
    (_status(400), 0, 0.0, None),
    (_status(401), 0, 0.0, None),
    (_status(404), 0, 0.0, None),
    # nor a wait that would end past the deadline (10 s): 9 + 3 > 10
    (_status(429, "rate_limit_exceeded", retry_after=3), 0, 9.0, None),
    (_status(429, "rate_limit_exceeded", retry_after=3), 0, 7.0, 3.0),
])
def test_retry_delay(error, retries_done, elapsed, expected) -> None:
    assert retry_delay(error, retries_done, max_retries=6, elapsed=elapsed, deadline=10.0,
                       jitter=lambda: 0.5) == expected


@pytest.mark.parametrize(("status", "code", "kind"), [
    (400, "invalid_value", errors.BadRequestError),
    (422, None, errors.BadRequestError),
    (413, None, errors.BadRequestError),
    (401, "invalid_api_key", errors.AuthenticationError),
    (403, "insufficient_permissions", errors.PermissionDeniedError),
    (404, "model_not_found", errors.NotFoundError),
    (409, "conflict", errors.ConflictError),
    (429, "rate_limit_exceeded", errors.RateLimitError),
    (429, "insufficient_quota", errors.QuotaExhaustedError),
    (500, None, errors.UnavailableError),
    (503, None, errors.UnavailableError),
    (405, None, errors.APIStatusError),
])
def test_error_answers_map_to_the_typed_tree(status, code, kind) -> None:
    body = {"error": {"message": "what went wrong", "type": "some_type", "param": "model",
                      "code": code}}
    headers = httpx.Headers({"x-request-id": "req-1", "retry-after": "2"})
    error = error_from_response(status, headers, httpx.Response(status, json=body).content)
    assert type(error) is kind
    assert (error.status, error.code, error.message, error.param, error.request_id) == (
        status, code, "what went wrong", "model", "req-1")
    assert error.retry_after == 2.0
    assert "req-1" in str(error) and "what went wrong" in str(error)


def test_an_error_answer_that_is_not_json_keeps_its_text() -> None:
    error = error_from_response(502, httpx.Headers(), b"<html>Bad Gateway</html>")
    assert type(error) is errors.UnavailableError
    assert error.message == "<html>Bad Gateway</html>" and error.code is None


@pytest.mark.parametrize(("detail", "kind", "status"), [
    # the gateway's event for an engine that broke mid-stream
    ({"message": "engine failed", "type": "service_unavailable_error", "param": None,
      "code": None}, errors.UnavailableError, 503),
    # vLLM's own events carry the HTTP status in `code`
    ({"message": "bad", "type": "BadRequestError", "param": None, "code": 400},
     errors.BadRequestError, 400),
    ({"message": "?", "type": "unheard_of"}, errors.UnavailableError, 500),
])
def test_error_events_map_to_the_typed_tree(detail, kind, status) -> None:
    error = error_from_event(detail, "req-2")
    assert type(error) is kind and error.status == status and error.request_id == "req-2"


def test_connection_and_timeout_errors_are_also_builtin_ones() -> None:
    assert issubclass(errors.APITimeoutError, TimeoutError)
    assert issubclass(errors.APIConnectionError, ConnectionError)
    assert issubclass(errors.QuotaExhaustedError, errors.RateLimitError)


@pytest.mark.parametrize(("text", "seconds"), [
    ("20ms", 0.02), ("1s", 1.0), ("7.25s", 7.25), ("6m0s", 360.0), ("1h1m1s", 3661.0),
    ("0s", 0.0), ("3", 3.0), ("soon", None), ("5x", None), ("", None),
])
def test_reset_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


def test_rate_limit_state_from_openai_headers() -> None:
    limits = rate_limit_from_headers(httpx.Headers({
        "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "598",
        "x-ratelimit-reset-requests": "1m30s",
        "x-ratelimit-limit-tokens": "200000", "x-ratelimit-remaining-tokens": "nonsense"}))
    assert (limits.requests.limit, limits.requests.remaining,
            limits.requests.reset_seconds) == (600, 598, 90.0)
    assert limits.tokens is None  # unreadable is unknown, not an exception
    assert rate_limit_from_headers(httpx.Headers()).requests is None


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "3"}, 3.0),
    ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),  # the precise one wins
    ({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, 40.0),  # an HTTP date: 100 - 60
    ({"retry-after": "later"}, None),
    ({"retry-after": "-1"}, None),
    ({}, None),
])
def test_retry_after(headers, seconds) -> None:
    assert retry_after_from_headers(httpx.Headers(headers), now=lambda: 60.0) == seconds


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    decoder = SSEDecoder()
    lines = [": keep-alive", "", "data: {\"a\":", "data: 1}", "", "event: x", "data:[DONE]", ""]
    assert [e for e in map(decoder.feed, lines) if e is not None] == ['{"a":\n1}', "[DONE]"]


def _chunk_line(content: str) -> str:
    return ('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            f'"choices":[{{"index":0,"delta":{{"content":"{content}"}}}}]}}')


def test_chunk_decoder_types_chunks_keeps_usage_and_stops_at_done() -> None:
    decoder = ChunkDecoder(ChatCompletionChunk, "req-3")
    usage = ('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
             '"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}')
    lines = [_chunk_line("he"), "", _chunk_line("llo"), "", usage, "", "data: [DONE]", "",
             _chunk_line("after the end"), ""]
    chunks = [c for c in map(decoder.feed, lines) if c is not None]
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["he", "llo"]
    assert decoder.done and decoder.usage.total_tokens == 5


def test_chunk_decoder_raises_the_typed_error_of_an_error_event() -> None:
    decoder = ChunkDecoder(ChatCompletionChunk, "req-4")
    assert decoder.feed(_chunk_line("x")) is None and decoder.feed("") is not None
    decoder.feed('data: {"error": {"message": "the engine failed mid-stream", '
                 '"type": "service_unavailable_error", "param": null, "code": null}}')
    with pytest.raises(errors.UnavailableError, match="mid-stream") as raised:
        decoder.feed("")
    assert raised.value.request_id == "req-4"


def test_a_stream_that_ends_without_done_broke() -> None:
    decoder = ChunkDecoder(ChatCompletionChunk, None)
    decoder.feed(_chunk_line("x"))
    decoder.feed("")
    with pytest.raises(errors.APIConnectionError, match="DONE"):
        decoder.finish()


_RESPONSE = ('{"id":"resp_1","object":"response","created_at":1,"model":"m","status":"%s",'
             '"output":[{"type":"message","role":"assistant","content":[{"type":"output_text",'
             '"text":"hello","annotations":[]}]}],'
             '"usage":{"input_tokens":4,"output_tokens":2,"total_tokens":6}}')


def test_a_responses_stream_ends_at_its_closing_event_with_its_usage() -> None:
    decoder = ChunkDecoder(ResponseStreamEvent, "req-5")
    lines = ["event: response.created",
             'data: {"type":"response.created","sequence_number":0,"response":'
             + _RESPONSE % "in_progress" + "}", "",
             "event: response.output_text.delta",
             'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"hel"}',
             "", "event: response.completed",
             'data: {"type":"response.completed","sequence_number":2,"response":'
             + _RESPONSE % "completed" + "}", "",
             'data: {"type":"response.output_text.delta","delta":"after the end"}', ""]
    events = [e for e in map(decoder.feed, lines) if e is not None]
    assert [e.type for e in events] == ["response.created", "response.output_text.delta",
                                        "response.completed"]
    assert events[1].delta == "hel" and events[2].response.output_text == "hello"
    assert decoder.done and decoder.usage.prompt_tokens == 4
    assert decoder.usage.completion_tokens == 2 and decoder.finish() is None


def test_a_responses_error_event_raises_and_a_stream_without_its_close_broke() -> None:
    decoder = ChunkDecoder(ResponseStreamEvent, "req-6")
    decoder.feed('data: {"type":"error","code":"server_error","message":"engine died",'
                 '"sequence_number":3}')
    with pytest.raises(errors.APIStatusError, match="engine died"):
        decoder.feed("")
    unfinished = ChunkDecoder(ResponseStreamEvent, None)
    unfinished.feed('data: {"type":"response.output_text.delta","delta":"x"}')
    unfinished.feed("")
    with pytest.raises(errors.APIConnectionError, match="closing event"):
        unfinished.finish()


def test_options_fall_back_to_the_environment() -> None:
    env = {"AIFACTORY_API_KEY": "afk_env", "AIFACTORY_BASE_URL": "http://gw:9000/v1/"}
    options = resolve_options(api_key=None, base_url=None, timeout=5, max_retries=1,
                              deadline=None, default_headers=None, environ=env)
    assert (options.api_key, options.base_url) == ("afk_env", "http://gw:9000")
    explicit = resolve_options(api_key="afk_arg", base_url="http://other", timeout=5,
                               max_retries=1, deadline=None, default_headers=None, environ=env)
    assert (explicit.api_key, explicit.base_url) == ("afk_arg", "http://other")
    with pytest.raises(errors.AIFactoryError, match="AIFACTORY_API_KEY"):
        resolve_options(api_key=None, base_url=None, timeout=5, max_retries=1, deadline=None,
                        default_headers=None, environ={})
    with pytest.raises(ValueError, match="max_retries"):
        resolve_options(api_key="k", base_url=None, timeout=5, max_retries=-1, deadline=None,
                        default_headers=None, environ={})
