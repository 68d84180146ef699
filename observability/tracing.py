"""Request tracing with OpenTelemetry.

Library code calls only the OpenTelemetry API: without an SDK configured its tracer is a
no-op, and the gateway and engine skip span work altogether (`active()` is False), so tracing
costs nothing when off. `configure_tracing()` sets the SDK up once per process, from the
standard `OTEL_*` variables (OTLP over HTTP), and does nothing when they do not ask for traces.

The trace crosses the gateway -> engine hop inside the request body, under
`TRACE_CONTEXT_FIELD` (a W3C `traceparent` carrier): the body is the one thing both transports
(a Ray Serve handle, or the engine in the gateway's own process) carry unchanged. The engine
removes the field before vLLM sees the body.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

logger = logging.getLogger(__name__)

TRACER_NAME = "aifactory"
TRACE_CONTEXT_FIELD = "aifactory_trace_context"

# OpenTelemetry GenAI semantic conventions (attribute names are stable strings; the
# semantic-conventions package marks them incubating, so they are spelled out here).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
PROVIDER = "vllm"

# What the gateway calls each OpenAI route, in GenAI's `gen_ai.operation.name` terms.
# gen_ai.operation.name by kind of request (OpenTelemetry's well-known values; the Responses
# API is a chat; vLLM's tokenizer routes have none and keep their own names).
OPERATIONS = {"chat": "chat", "completion": "text_completion", "responses": "chat",
              "embedding": "embeddings"}

_configured = False
_configure_lock = threading.Lock()


def active() -> bool:
    """Whether an SDK tracer provider is installed in this process (else spans are skipped)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def wants_traces(env: Mapping[str, str]) -> str | None:
    """The exporter the `OTEL_*` variables ask for: "otlp", "console", or None (off).

    Off unless OTEL_TRACES_EXPORTER names an exporter, or an OTLP endpoint is set (OTLP being
    OpenTelemetry's default exporter). OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none win.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        first = exporter.split(",")[0].strip()
        return first if first in ("otlp", "console") else None
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def configure_tracing(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK with the exporter the `OTEL_*` variables ask for; once per process.
    Returns whether tracing is on. OTEL_SERVICE_NAME, when set, overrides `service_name`."""
    global _configured
    env = os.environ if env is None else env
    exporter_name = wants_traces(env)
    if exporter_name is None:
        return False
    with _configure_lock:
        if _configured or active():
            return True
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
        )

        if exporter_name == "otlp":
            # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter(**_otlp_settings(env))
            # A collector that is down must not fill the log: its exporter's retries and
            # failures are said at most once a minute.
            logging.getLogger(OTLPSpanExporter.__module__).addFilter(_OncePerInterval(60.0))
        else:
            exporter = ConsoleSpanExporter()
        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES.
        resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _configured = True
        logger.info("tracing on: %s exporter, service %s", exporter_name,
                    resource.attributes.get(SERVICE_NAME))
        return True


def _otlp_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Endpoint and timeout from `env` (the exporter itself would read only os.environ)."""
    settings: dict[str, Any] = {}
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        settings["endpoint"] = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        settings["endpoint"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    if timeout:
        try:
            settings["timeout"] = float(timeout)
        except ValueError:
            logger.warning("ignoring OTEL_EXPORTER_OTLP_TIMEOUT=%r: not a number", timeout)
    return settings


class _OncePerInterval(logging.Filter):
    """Lets one record through per `interval_s`; the rest are dropped."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            return False
        self._last = now
        return True


# -- propagation ---------------------------------------------------------------------------


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The caller's context from W3C `traceparent`/`tracestate` headers (empty if absent or
    malformed: a bad header starts a new trace rather than failing the request)."""
    return propagate.extract(headers)


def carrier_for(span: trace.Span) -> dict[str, str]:
    """A W3C carrier naming `span` as the parent, to send across a process boundary."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def context_from_carrier(carrier: Any) -> otel_context.Context | None:
    if not isinstance(carrier, dict):
        return None
    clean = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
    return propagate.extract(clean)


def request_attributes(kind: str, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """GenAI attributes of an OpenAI request body (only those present and well-typed)."""
    attrs: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: OPERATIONS.get(kind, kind),
        GEN_AI_PROVIDER_NAME: PROVIDER,
        GEN_AI_REQUEST_MODEL: model,
    }
    for key, name, types in (
        ("max_completion_tokens", GEN_AI_REQUEST_MAX_TOKENS, (int,)),
        ("max_tokens", GEN_AI_REQUEST_MAX_TOKENS, (int,)),
        ("max_output_tokens", GEN_AI_REQUEST_MAX_TOKENS, (int,)),
        ("temperature", GEN_AI_REQUEST_TEMPERATURE, (int, float)),
        ("top_p", GEN_AI_REQUEST_TOP_P, (int, float)),
    ):
        value = body.get(key)
        if name not in attrs and isinstance(value, types) and not isinstance(value, bool):
            attrs[name] = value
    return attrs
