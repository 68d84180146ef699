"""`Client` and `AsyncClient`: the one surface of `resources` over httpx, with the retry loop
and the stream readers as their only sync/async-specific code. Every decision (what to send,
whether and how long to wait, which error) comes from `_core`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel

from aifactory_sdk import errors
from aifactory_sdk._core import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    NOT_GIVEN,
    REQUEST_ID_HEADER,
    Call,
    NotGiven,
    Options,
    connection_error,
    error_from_response,
    parse_result,
    rate_limit_from_headers,
    request_args,
    resolve_options,
    retry_delay,
)
from aifactory_sdk._streams import ChunkDecoder
from aifactory_sdk.batch_resources import Batches, Files
from aifactory_sdk.resources import (
    Admin,
    Chat,
    Completions,
    Embeddings,
    Models,
    Responses,
    TenantSelfService,
)
from aifactory_sdk.types import RateLimit, Usage

Chunk = TypeVar("Chunk", bound=BaseModel)

# Looked up at call time, so unit tests can stand in for the clock and the waits.
_clock = time.monotonic
_sleep = time.sleep
_async_sleep = asyncio.sleep
_jitter = random.random


class _Surface:
    """What both clients share: options, the resources, `with_options`."""

    _options: Options

    def _init_surface(self, options: Options) -> None:
        self._options = options
        self.chat = Chat(self)
        self.completions = Completions(self)
        self.embeddings = Embeddings(self)
        self.models = Models(self)
        self.responses = Responses(self)
        self.files = Files(self)
        self.batches = Batches(self)
        self.tenant = TenantSelfService(self)
        self.admin = Admin(self)

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._options.base_url

    @property
    def max_retries(self) -> int:
        return self._options.max_retries

    @property
    def timeout(self) -> httpx.Timeout:
        return self._options.timeout

    def with_options(self, *, api_key: str | NotGiven = NOT_GIVEN,
                     base_url: str | NotGiven = NOT_GIVEN,
                     timeout: float | httpx.Timeout | None | NotGiven = NOT_GIVEN,
                     max_retries: int | NotGiven = NOT_GIVEN,
                     deadline: float | None | NotGiven = NOT_GIVEN,
                     default_headers: Mapping[str, str] | NotGiven = NOT_GIVEN) -> Any:
        """A client like this one with some options changed, sharing its connections, e.g.
        `client.with_options(timeout=5, max_retries=0).models.list()`."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._owns_http = False
        clone._init_surface(self._options.changed(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries,
            deadline=deadline, default_headers=default_headers))
        return clone

    def _give_up_or_wait(self, error: errors.AIFactoryError, retries_done: int,
                         started: float) -> float:
        wait = retry_delay(error, retries_done, max_retries=self._options.max_retries,
                           elapsed=_clock() - started, deadline=self._options.deadline,
                           jitter=_jitter)
        if wait is None:
            raise error
        return wait


class Client(_Surface):
    """The platform's API, synchronously.

    `api_key` defaults to $AIFACTORY_API_KEY and `base_url` to $AIFACTORY_BASE_URL (else
    http://127.0.0.1:8000). `timeout` bounds each attempt (seconds); failed attempts are retried
    up to `max_retries` times, none starting once `deadline` seconds have passed since the
    call began."""

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 deadline: float | None = DEFAULT_DEADLINE_S,
                 default_headers: Mapping[str, str] | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self._init_surface(resolve_options(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries,
            deadline=deadline, default_headers=default_headers))
        self._http = http_client or httpx.Client()
        self._owns_http = http_client is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        started, retries = _clock(), 0
        while True:
            request = self._http.build_request(**request_args(call, self._options))
            try:
                response = self._http.send(request, stream=call.streams)
            except httpx.TransportError as exc:
                error: errors.AIFactoryError = connection_error(exc)
            else:
                if response.is_success:
                    if call.chunk is not None:  # from here on the call is never retried
                        return Stream(response, call.chunk)
                    return parse_result(call, response.headers, response.content)
                try:
                    body = response.read()
                except httpx.TransportError as exc:
                    error = connection_error(exc)
                else:
                    error = error_from_response(response.status_code, response.headers, body)
                finally:
                    response.close()
            _sleep(self._give_up_or_wait(error, retries, started))
            retries += 1


class AsyncClient(_Surface):
    """The same API as `Client` for asyncio: every method returns an awaitable of what the
    `Client` method returns, and a stream is iterated with `async for`."""

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 deadline: float | None = DEFAULT_DEADLINE_S,
                 default_headers: Mapping[str, str] | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._init_surface(resolve_options(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries,
            deadline=deadline, default_headers=default_headers))
        self._http = http_client or httpx.AsyncClient()
        self._owns_http = http_client is None

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _send(self, call: Call) -> Any:
        started, retries = _clock(), 0
        while True:
            request = self._http.build_request(**request_args(call, self._options))
            try:
                response = await self._http.send(request, stream=call.streams)
            except httpx.TransportError as exc:
                error: errors.AIFactoryError = connection_error(exc)
            else:
                if response.is_success:
                    if call.chunk is not None:
                        return AsyncStream(response, call.chunk)
                    return parse_result(call, response.headers, response.content)
                try:
                    body = await response.aread()
                except httpx.TransportError as exc:
                    error = connection_error(exc)
                else:
                    error = error_from_response(response.status_code, response.headers, body)
                finally:
                    await response.aclose()
            await _async_sleep(self._give_up_or_wait(error, retries, started))
            retries += 1


class _StreamHead:
    """What a stream knows before its first chunk, from its response headers."""

    def __init__(self, response: httpx.Response, chunk: type[BaseModel]) -> None:
        self.response = response
        self.request_id: str | None = response.headers.get(REQUEST_ID_HEADER)
        self.rate_limit: RateLimit = rate_limit_from_headers(response.headers)
        self._decoder = ChunkDecoder(chunk, self.request_id)

    @property
    def usage(self) -> Usage | None:
        """The token counts, once the stream's last event has been read."""
        return self._decoder.usage


class Stream(_StreamHead, Generic[Chunk]):
    """Typed chunks as the platform sends them. A failure after the stream started raises the
    typed error and is never retried: the chunks already read cannot be taken back."""

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for line in self.response.iter_lines():
                chunk = self._decoder.feed(line)
                if chunk is not None:
                    yield chunk  # type: ignore[misc]
                if self._decoder.done:
                    return
            last = self._decoder.finish()
            if last is not None:
                yield last  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        finally:
            self.response.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncStream(_StreamHead, Generic[Chunk]):
    """`Stream` for asyncio: `async for chunk in stream`."""

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        try:
            async for line in self.response.aiter_lines():
                chunk = self._decoder.feed(line)
                if chunk is not None:
                    yield chunk  # type: ignore[misc]
                if self._decoder.done:
                    return
            last = self._decoder.finish()
            if last is not None:
                yield last  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        finally:
            await self.response.aclose()

    async def close(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
