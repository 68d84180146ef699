"""One request on its way through the gateway's steps (serving.gateway.pipeline and
serving.gateway.engine_steps): what it carries between them, and the refusal any step may
raise instead of answering."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import Response

from observability.metrics import model_label
from serving.engine.adapters import ADAPTER_FIELD, AdapterRef
from serving.gateway import responses
from serving.gateway.errors import error_response
from serving.targets import EndpointTarget

logger = logging.getLogger(__name__)


class Unserved(Exception):
    """The engines did not serve the request, through no fault of its own (none reachable,
    one failed), and nothing was recorded for it: its sender sends it again, under the same
    request id, after `retry_after_s` (see Exchange.resend_on_fault)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


class Refusal(Exception):
    """A request refused before it reached an engine, as the response to send."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class Exchange:
    """One request on its way through the steps, and the headers its response will carry
    whatever it turns out to be."""

    kind: str
    request_id: str
    span: Any
    arrived: float = field(default_factory=time.perf_counter)
    headers: dict[str, str] = field(default_factory=dict)
    client_request_id: str | None = None
    conversation: responses.Conversation | None = None  # a Responses API request's
    # Whether its sender will send it again when the engines fail it (a batch line): then
    # such a failure raises Unserved, unrecorded, instead of answering it with a 5xx.
    resend_on_fault: bool = False


@dataclass(frozen=True)
class Route:
    """The endpoint a request names, which its tenant may call; or the endpoint one of its
    LoRA adapters runs on, and that adapter (`model` is the endpoint either way: its grants,
    quotas and bounds apply)."""

    model: str
    target: EndpointTarget
    card: dict[str, Any]
    adapter: AdapterRef | None = None

    @property
    def model_label(self) -> str:
        """What the ledger and metrics call the model: the adapter's name, or the
        endpoint's model folder."""
        return self.adapter.name if self.adapter else model_label(self.card.get("root"))

    def engine_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body with the adapter's folder for the engine, which loads it on first use."""
        if self.adapter is None:
            return body
        return {**body, ADAPTER_FIELD: self.adapter.to_field()}


def store_unavailable(exc: Exception) -> Refusal:
    logger.warning("tenancy store or counters unavailable: %r", exc)
    return Refusal(error_response(
        503, "the platform's tenancy store is unavailable; retry shortly",
        headers={"retry-after": "1"}))
