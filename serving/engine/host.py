"""Hosts one vLLM V1 engine (AsyncLLM) and answers OpenAI requests with vLLM's serving layer.

Requests are validated by vLLM's own protocol models and handled by vLLM's own serving
objects (chat, completions, Responses, embeddings, pooling, score and rerank, tokenization;
which for which kind: serving.engine.protocols), set up exactly as `vllm serve` sets them up
(from the same argument parser), so chat templates, sampling, stop sequences, logprobs,
tools, structured output and pooling behave as under `vllm serve`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError

from observability.tracing import configure_tracing
from serving.engine import telemetry
from serving.engine.adapters import (
    AdapterLoadFailed,
    AdapterRef,
    EngineAdapters,
    without_adapter_field,
)
from serving.engine.card import engine_card
from serving.engine.protocols import (
    BINARY_ENCODINGS,
    CHAT,
    COMPLETION,
    DETOKENIZE,
    POOLING_KINDS,
    RESPONSES,
    SERVING,
    TOKENIZE,
    WHAT,
    check_before_validation,
    known_fields,
    request_model,
)
from serving.engine.node_forkserver import this_nodes_forkserver
from serving.engine.warm_processes import start_forkserver, stop_forkserver

logger = logging.getLogger(__name__)

# What vLLM raises, reading a request its protocol model accepted, on shapes it does not
# handle (seen: IndexError for a Responses message item with empty content).
INPUT_SHAPE_ERRORS = (LookupError, TypeError, AttributeError)


@dataclass(frozen=True)
class EngineReply:
    """What the engine answers: a finished JSON body, or a stream of SSE events."""

    status: int
    body: dict[str, Any] | None = None
    stream: AsyncIterator[str] | None = None


def vllm_cli_args(model: str, served_name: str, engine: Mapping[str, Any]) -> list[str]:
    """Turn engine settings into `vllm serve` flags, so vLLM's parser validates and defaults
    them exactly as it would for `vllm serve`."""
    argv = ["--model", model, "--served-model-name", served_name]
    for key, value in engine.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def parse_vllm_args(argv: list[str]):
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on a bad flag; say which instead
        raise ValueError(f"invalid vLLM engine arguments {argv}: see the message above") from exc
    validate_parsed_serve_args(args)
    return args


def _error(status: int, message: str, err_type: str, param: str | None = None) -> EngineReply:
    return EngineReply(
        status=status,
        body={"error": {"message": message, "type": err_type, "param": param, "code": status}},
    )


def _validation_error(exc: ValidationError) -> EngineReply:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith(("function-", "union"))]
    param = loc[0] if loc else None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}"
        for e in exc.errors()[:5]
    )
    return _error(HTTPStatus.BAD_REQUEST, message, "BadRequestError", param)


async def _response_events(events) -> AsyncIterator[str]:
    """vLLM's Responses stream events as SSE, as its own route writes them. Closed early
    (the client left), it closes vLLM's generator, which aborts the engine request."""
    try:
        async for event in events:
            kind = getattr(event, "type", "unknown")
            yield f"event: {kind}\ndata: {event.model_dump_json(indent=None, by_alias=True)}\n\n"
    finally:
        await events.aclose()


class EngineHost:
    """One AsyncLLM plus the vLLM OpenAI serving objects built on it."""

    def __init__(self, engine_client, state, args) -> None:
        self.engine = engine_client
        self._state = state
        self.args = args
        self.served_name: str = args.served_model_name[0]
        self.max_model_len: int = engine_client.model_config.max_model_len
        self.lora = engine_client.vllm_config.lora_config  # None: LoRA not enabled
        self.adapters = (EngineAdapters(state.openai_serving_models)
                         if self.lora is not None else None)

    def card(self) -> dict[str, Any]:
        lora = self.lora
        return engine_card(self.args.model, self.max_model_len,
                           lora.max_lora_rank if lora else None, lora.max_loras if lora else None)

    @classmethod
    async def start(cls, model: str, served_name: str, engine: Mapping[str, Any],
                    stat_loggers: Sequence[Any] = ()) -> EngineHost:
        """`stat_loggers`: extra vLLM StatLoggerFactory callables (vLLM's own loggers stay)."""
        # First, so that a server's imports of torch and vLLM run beside this process's own,
        # or are done already where the node keeps one warm.
        start_forkserver(warm_server=this_nodes_forkserver())
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        configure_tracing("aifactory")  # only when the OTEL_* variables ask for traces
        args = parse_vllm_args(vllm_cli_args(model, served_name, engine))
        engine_args = AsyncEngineArgs.from_cli_args(args)
        vllm_config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        client = AsyncLLM.from_vllm_config(
            vllm_config=vllm_config,
            usage_context=UsageContext.OPENAI_API_SERVER,
            enable_log_requests=engine_args.enable_log_requests,
            disable_log_stats=engine_args.disable_log_stats,
            stat_loggers=[*stat_loggers, telemetry.stat_logger_factory(served_name, model)],
        )
        state = State()
        supported = await client.get_supported_tasks()
        await init_app_state(client, state, args, supported)
        return cls(client, state, args)

    # -- requests --------------------------------------------------------------------------

    async def handle(self, kind: str, body: dict[str, Any], request_id: str | None = None) -> EngineReply:
        """Answer one request body (already JSON-decoded) of a kind (serving.engine.protocols:
        chat, completion, responses, embedding, pooling, score, rerank, tokenize,
        detokenize); under the request's engine span when tracing is on."""
        body, trace_carrier = telemetry.take_trace_context(body)
        body, adapter = without_adapter_field(body)
        span = telemetry.start_engine_span(trace_carrier, kind, self.served_name, request_id)
        reply = await self._handle(kind, body, request_id, adapter)
        if span is not None:
            if reply.stream is not None:
                return EngineReply(reply.status, stream=telemetry.traced_stream(reply.stream, span))
            error = (reply.body or {}).get("error") if reply.status >= 400 else None
            telemetry.end_engine_span(span, reply.status,
                                      error.get("type") if isinstance(error, dict) else None)
        return reply

    async def _serve(self, kind: str, serving, request):
        """`serving` (vLLM's object for the kind) called as `vllm serve`'s routes call it."""
        if kind == CHAT:
            return await serving.create_chat_completion(request, None)
        if kind == COMPLETION:
            return await serving.create_completion(request, None)
        if kind == TOKENIZE:
            return await serving.create_tokenize(request, None)
        if kind == DETOKENIZE:
            return await serving.create_detokenize(request, None)
        if kind == RESPONSES:
            result = await serving.create_responses(request, None)
            if hasattr(result, "model_dump") or not hasattr(result, "__aiter__"):
                return result
            return EngineReply(status=HTTPStatus.OK, stream=_response_events(result))
        if kind in POOLING_KINDS:  # a finished HTTP response, JSON (binary ones are refused)
            response = await serving(request, None)
            return EngineReply(status=response.status_code, body=json.loads(response.body))
        raise AssertionError(f"no vLLM call for {kind!r}")

    async def _handle(self, kind: str, body: dict[str, Any], request_id: str | None,
                      adapter: AdapterRef | None = None) -> EngineReply:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )

        protocol = request_model(kind, body)
        if protocol is None:
            return _error(HTTPStatus.NOT_FOUND, f"unknown route {kind!r}", "NotFoundError")
        serving = getattr(self._state, SERVING[kind], None)
        if serving is None:
            return _error(HTTPStatus.BAD_REQUEST,
                          f"model `{self.served_name}` does not serve {WHAT[kind]}",
                          "BadRequestError", "model")
        try:
            check_before_validation(kind, body)
            # Strict JSON types, as OpenAI checks them: "stream": "yes" is an error, not True.
            request = protocol.model_validate_json(json.dumps(body), strict=True)
        except ValidationError as exc:
            return _validation_error(exc)
        except Exception as exc:  # vLLM's validators raise its own errors too
            return self._error_from(create_error_response(exc))
        # vLLM ignores unknown fields with a warning; OpenAI refuses them, and so do we.
        unknown = sorted(set(body) - known_fields(protocol))
        if unknown:
            return _error(
                HTTPStatus.BAD_REQUEST,
                f"Unrecognized request argument supplied: {', '.join(unknown)}",
                "BadRequestError",
                unknown[0],
            )
        encoding = getattr(request, "encoding_format", None)
        if encoding in BINARY_ENCODINGS:
            # vLLM answers these with raw bytes; replies here are JSON or SSE.
            return _error(HTTPStatus.BAD_REQUEST,
                          f"encoding_format `{encoding}` is not served here: use `float` or "
                          "`base64`", "BadRequestError", "encoding_format")
        if request_id and hasattr(request, "request_id"):
            # A response's id is its request's (OpenAI's ids start "resp_").
            request.request_id = f"resp_{request_id}" if kind == RESPONSES else request_id
        try:
            result = await self._serve_with(adapter, kind, serving, request)
        except AdapterLoadFailed as exc:
            logger.warning("LoRA adapter %s not loaded: %s", adapter.name, exc)
            return _error(exc.status, f"the adapter `{adapter.name}` could not be loaded: {exc}",
                          "BadRequestError" if exc.status < 500 else "InternalServerError",
                          "model")
        except INPUT_SHAPE_ERRORS as exc:
            # Raised while vLLM read a validated request, before anything ran: an input
            # shape it does not handle (e.g. a Responses item with empty content), which
            # vLLM's mapping would answer 500. The request's fault: 400.
            logger.info("%s request refused: vLLM could not read it: %r", kind, exc)
            return _error(HTTPStatus.BAD_REQUEST,
                          f"the request could not be processed: {type(exc).__name__}: {exc}",
                          "BadRequestError")
        except Exception as exc:  # vLLM's own mapping of its errors to statuses
            result = create_error_response(exc)

        if isinstance(result, EngineReply):
            return result
        if isinstance(result, ErrorResponse):
            return self._error_from(result)
        if hasattr(result, "model_dump"):
            # by_alias: the Responses objects' wire names (as vLLM's own route writes them).
            return EngineReply(status=HTTPStatus.OK,
                               body=result.model_dump(mode="json", by_alias=kind == RESPONSES))
        return EngineReply(status=HTTPStatus.OK, stream=result)

    async def _serve_with(self, adapter: AdapterRef | None, kind: str, serving, request):
        """`_serve`, with the request's LoRA adapter registered and held until vLLM has
        resolved it (which it does before the reply, streamed or not, begins)."""
        if adapter is None:
            return await self._serve(kind, serving, request)
        if self.adapters is None:
            raise AdapterLoadFailed(HTTPStatus.BAD_REQUEST,
                                    f"model `{self.served_name}` does not enable LoRA")
        async with self.adapters.using(adapter):
            return await self._serve(kind, serving, request)

    @staticmethod
    def _error_from(response) -> EngineReply:
        err = response.error
        return _error(err.code, err.message, err.type, err.param)

    # -- state -----------------------------------------------------------------------------

    async def check_health(self) -> None:
        await self.engine.check_health()

    def load(self) -> dict[str, float]:
        """Requests in the engine right now, from vLLM's own output processor."""
        processor = getattr(self.engine, "output_processor", None)
        running = processor.get_num_unfinished_requests() if processor is not None else 0
        return {"unfinished_requests": float(running)}

    def shutdown(self) -> None:
        if self.adapters is not None:
            self.adapters.close()
        try:
            self.engine.shutdown()
        except Exception:  # shutting down anyway; nothing to recover
            logger.exception("engine shutdown failed")
        stop_forkserver()

