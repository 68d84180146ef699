"""The API's surface, written once for both clients: each method describes its `Call` and
hands it to the client, which sends it. On `Client` a method returns its result; on
`AsyncClient` it returns an awaitable of the same result. Files and batches are in
`batch_resources`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from aifactory_sdk._base import Resource, Sender, _segment
from aifactory_sdk._core import NOT_GIVEN, Call, NotGiven
from aifactory_sdk.adapter_resources import OperatorAdapters, TenantAdapters
from aifactory_sdk.batch_resources import OperatorBatches, TenantBatches
from aifactory_sdk.catalogue_resources import CatalogueModels
from aifactory_sdk.types import (
    ApiKey,
    ApiKeyList,
    AuditList,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    CreatedApiKey,
    Deleted,
    DeletedResponse,
    EmbeddingList,
    Endpoint,
    EndpointList,
    ModelCard,
    ModelList,
    MyEndpointList,
    Quota,
    ResponseObject,
    ResponseStreamEvent,
    SlaReport,
    Tenant,
    TenantList,
    UsageReport,
)

Moment = datetime | timedelta | str | None  # a timedelta means "that long before now"


def _inference(path: str, body: dict[str, Any], stream: bool, result: type, chunk: type) -> Call:
    if not stream:
        return Call("POST", path, result, body=body)
    # Ask for the closing usage event, so a stream's usage is known like a plain call's.
    return Call("POST", path, result, chunk=chunk, body={
        **body, "stream": True,
        "stream_options": {"include_usage": True, **body.get("stream_options", {})}})


# Inference (OpenAI's routes)


class ChatCompletions(Resource):
    def create(self, *, model: str, messages: Iterable[Mapping[str, Any]], stream: bool = False,
               **params: Any) -> Any:
        """`ChatCompletion`, or with `stream=True` a stream of `ChatCompletionChunk`.
        Any other OpenAI or vLLM parameter (max_tokens, temperature, top_k, ...) passes
        through as given."""
        body = {"model": model, "messages": list(messages), **params}
        return self._send(_inference("/v1/chat/completions", body, stream, ChatCompletion,
                                     ChatCompletionChunk))


class Chat:
    def __init__(self, client: Sender) -> None:
        self.completions = ChatCompletions(client)


class Completions(Resource):
    def create(self, *, model: str, prompt: str | list[str] | list[int], stream: bool = False,
               **params: Any) -> Any:
        """`Completion`, or with `stream=True` a stream of `CompletionChunk`."""
        body = {"model": model, "prompt": prompt, **params}
        return self._send(_inference("/v1/completions", body, stream, Completion,
                                     CompletionChunk))


class Models(Resource):
    def list(self) -> Any:
        """`ModelList`: the endpoints this key may call."""
        return self._send(Call("GET", "/v1/models", ModelList))

    def retrieve(self, model: str) -> Any:
        """`ModelCard`: one endpoint this key may call (any other name: NotFoundError)."""
        return self._send(Call("GET", f"/v1/models/{_segment(model)}", ModelCard))


class Embeddings(Resource):
    def create(self, *, model: str, input: str | list[str] | list[int] | list[list[int]],
               **params: Any) -> Any:
        """`EmbeddingList`: one vector per input, on an endpoint that runs an embedding
        model. Other OpenAI or vLLM parameters (encoding_format, dimensions, ...) pass
        through as given."""
        body = {"model": model, "input": input, **params}
        return self._send(Call("POST", "/v1/embeddings", EmbeddingList, body=body))


class Responses(Resource):
    def create(self, *, model: str, input: str | Iterable[Mapping[str, Any]],
               stream: bool = False, **params: Any) -> Any:
        """`ResponseObject`, or with `stream=True` a stream of `ResponseStreamEvent` ending
        with the closing event (its `response` and the stream's `usage`). Other OpenAI or
        vLLM parameters (instructions, previous_response_id, store, max_output_tokens, ...)
        pass through as given."""
        body = {"model": model, "input": input if isinstance(input, str) else list(input),
                **params}
        if not stream:
            return self._send(Call("POST", "/v1/responses", ResponseObject, body=body))
        return self._send(Call("POST", "/v1/responses", ResponseObject,
                               chunk=ResponseStreamEvent, body={**body, "stream": True}))

    def retrieve(self, response_id: str) -> Any:
        """`ResponseObject`: a stored response of this tenant (any other id: NotFoundError)."""
        return self._send(Call("GET", f"/v1/responses/{_segment(response_id)}",
                               ResponseObject))

    def delete(self, response_id: str) -> Any:
        """`DeletedResponse`; the response can no longer be retrieved or continued."""
        return self._send(Call("DELETE", f"/v1/responses/{_segment(response_id)}",
                               DeletedResponse))


def _audit_page(since: Moment, until: Moment, after_id: int | None,
                limit: int | None) -> dict[str, Any]:
    return {"since": since, "until": until, "after_id": after_id, "limit": limit}


# Tenant self-service: what the key's own tenant has and used


def _window(since: Moment, until: Moment, by: str) -> dict[str, Any]:
    return {"since": since, "until": until, "by": by}


class TenantSelfService(Resource):
    def __init__(self, client: Sender) -> None:
        super().__init__(client)
        self.batches = TenantBatches(client)
        self.adapters = TenantAdapters(client)

    def endpoints(self) -> Any:
        """`MyEndpointList`: the endpoints this tenant may call, each with its quota there."""
        return self._send(Call("GET", "/tenant/v1/endpoints", MyEndpointList))

    def quota(self) -> Any:
        """`Quota`: this tenant's own limits (None: unlimited)."""
        return self._send(Call("GET", "/tenant/v1/quota", Quota))

    def usage(self, *, since: Moment = None, until: Moment = None,
              by: Literal["hour", "day"] = "day") -> Any:
        """`UsageReport` of this tenant per UTC day (or hour) in [since, until); until
        defaults to now and since to a day before it."""
        return self._send(Call("GET", "/tenant/v1/usage", UsageReport,
                               params=_window(since, until, by)))

    def sla(self, *, since: Moment = None, until: Moment = None) -> Any:
        """`SlaReport` of this tenant over [since, until) (until defaults to now, since to a
        day before it)."""
        return self._send(Call("GET", "/tenant/v1/sla", SlaReport,
                               params={"since": since, "until": until}))

    def audit(self, *, since: Moment = None, until: Moment = None, after_id: int | None = None,
              limit: int | None = None) -> Any:
        """`AuditList`: the admin actions about this tenant, oldest first (an admin-scoped
        key); the platform's operators appear by tenant and scope only."""
        return self._send(Call("GET", "/tenant/v1/audit", AuditList,
                               params=_audit_page(since, until, after_id, limit)))


# Administration (an admin-scoped key)


class Tenants(Resource):
    def create(self, name: str, *,
               priority: Literal["critical", "standard", "best_effort"] = "standard",
               slo: Mapping[str, float | None] | None = None) -> Any:
        """`slo` sets latency targets, e.g. {"ttft_p95_ms": 500, "objective": 0.99}."""
        body: dict[str, Any] = {"name": name, "priority": priority}
        if slo is not None:
            body["slo"] = dict(slo)
        return self._send(Call("POST", "/admin/v1/tenants", Tenant, body=body))

    def list(self) -> Any:
        return self._send(Call("GET", "/admin/v1/tenants", TenantList))

    def retrieve(self, name: str) -> Any:
        return self._send(Call("GET", f"/admin/v1/tenants/{_segment(name)}", Tenant))

    def update(self, name: str, *,
               priority: Literal["critical", "standard", "best_effort"] | None = None,
               status: Literal["active", "suspended"] | None = None,
               slo: Mapping[str, float | None] | None = None) -> Any:
        """Only the fields given change; in `slo`, a target given as None restores the
        platform default."""
        body = {k: v for k, v in (("priority", priority), ("status", status),
                                  ("slo", None if slo is None else dict(slo))) if v is not None}
        return self._send(Call("PATCH", f"/admin/v1/tenants/{_segment(name)}", Tenant,
                               body=body))


class Keys(Resource):
    def create(self, tenant: str, *, scope: Literal["inference", "admin"] = "inference",
               expires_at: datetime | None = None) -> Any:
        """`CreatedApiKey`: its `.key` is shown this once."""
        body: dict[str, Any] = {"scope": scope}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return self._send(Call("POST", f"/admin/v1/tenants/{_segment(tenant)}/keys",
                               CreatedApiKey, body=body))

    def list(self, tenant: str) -> Any:
        return self._send(Call("GET", f"/admin/v1/tenants/{_segment(tenant)}/keys", ApiKeyList))

    def revoke(self, key_id: int) -> Any:
        return self._send(Call("DELETE", f"/admin/v1/keys/{_segment(key_id)}", ApiKey))


class Endpoints(Resource):
    def create(self, name: str, *, owner: str | None = None,
               deployment: dict[str, Any] | None = None) -> Any:
        """An endpoint owned by `owner`, or shared (no owner) and reached through grants.
        With a `deployment` (a config file endpoint's fields: `model`, `replicas`,
        `engine`, `autoscaling`, ...) the platform deploys it at once; with `autoscaling`
        the partition controller sizes it, admitted by its `guaranteed_replicas`."""
        body: dict[str, Any] = {"name": name, "owner": owner}
        if deployment is not None:
            body["deployment"] = deployment
        return self._send(Call("POST", "/admin/v1/endpoints", Endpoint, body=body))

    def list(self) -> Any:
        return self._send(Call("GET", "/admin/v1/endpoints", EndpointList))

    def update_autoscaling(self, name: str, *,
                           min_replicas: int | NotGiven = NOT_GIVEN,
                           max_replicas: int | NotGiven = NOT_GIVEN,
                           guaranteed_replicas: int | NotGiven = NOT_GIVEN,
                           priority: int | NotGiven = NOT_GIVEN,
                           slo: Mapping[str, int] | NotGiven = NOT_GIVEN,
                           target_ongoing_per_replica: float | NotGiven = NOT_GIVEN,
                           idle_to_zero_s: float | None | NotGiven = NOT_GIVEN) -> Any:
        """Change the autoscaling block of an endpoint created with one: a field given
        replaces its value (`slo`'s `ttft_p95_ms`, `itl_p95_ms` one by one), one left out
        keeps it; `idle_to_zero_s=None` keeps one replica warm. Checked as a new endpoint
        is (a guarantee beyond the partition: ConflictError); nothing restarts."""
        fields = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                  "guaranteed_replicas": guaranteed_replicas, "priority": priority,
                  "slo": slo if isinstance(slo, NotGiven) else dict(slo),
                  "target_ongoing_per_replica": target_ongoing_per_replica,
                  "idle_to_zero_s": idle_to_zero_s}
        body = {k: v for k, v in fields.items() if not isinstance(v, NotGiven)}
        return self._send(Call("PATCH", f"/admin/v1/endpoints/{_segment(name)}/autoscaling",
                               Endpoint, body=body))

    def retrieve(self, name: str) -> Any:
        return self._send(Call("GET", f"/admin/v1/endpoints/{_segment(name)}", Endpoint))

    def delete(self, name: str) -> Any:
        return self._send(Call("DELETE", f"/admin/v1/endpoints/{_segment(name)}", Deleted))

    def grant(self, name: str, tenant: str) -> Any:
        return self._send(Call(
            "PUT", f"/admin/v1/endpoints/{_segment(name)}/grants/{_segment(tenant)}", Endpoint))

    def revoke_grant(self, name: str, tenant: str) -> Any:
        return self._send(Call(
            "DELETE", f"/admin/v1/endpoints/{_segment(name)}/grants/{_segment(tenant)}",
            Endpoint))


def _quota_path(tenant: str, endpoint: str | None) -> str:
    where = "" if endpoint is None else f"/endpoints/{_segment(endpoint)}"
    return f"/admin/v1/tenants/{_segment(tenant)}{where}/quota"


class Quotas(Resource):
    def set(self, tenant: str, *, endpoint: str | None = None,
            requests_per_minute: int | None | NotGiven = NOT_GIVEN,
            tokens_per_minute: int | None | NotGiven = NOT_GIVEN,
            concurrent_requests: int | None | NotGiven = NOT_GIVEN,
            tokens_per_month: int | None | NotGiven = NOT_GIVEN) -> Any:
        """A limit given as a number sets it, given as None clears it (unlimited), and left
        out keeps its current value. With `endpoint`, the tenant's quota on that endpoint."""
        limits = {"requests_per_minute": requests_per_minute,
                  "tokens_per_minute": tokens_per_minute,
                  "concurrent_requests": concurrent_requests,
                  "tokens_per_month": tokens_per_month}
        body = {k: v for k, v in limits.items() if not isinstance(v, NotGiven)}
        return self._send(Call("PUT", _quota_path(tenant, endpoint), Quota, body=body))

    def retrieve(self, tenant: str, *, endpoint: str | None = None) -> Any:
        return self._send(Call("GET", _quota_path(tenant, endpoint), Quota))

    def clear(self, tenant: str, *, endpoint: str | None = None) -> Any:
        return self._send(Call("DELETE", _quota_path(tenant, endpoint), Deleted))


class Admin(Resource):
    def __init__(self, client: Sender) -> None:
        super().__init__(client)
        self.tenants = Tenants(client)
        self.keys = Keys(client)
        self.endpoints = Endpoints(client)
        self.quotas = Quotas(client)
        self.batches = OperatorBatches(client)
        self.adapters = OperatorAdapters(client)
        self.models = CatalogueModels(client)

    def usage(self, tenant: str, *, since: Moment = None, until: Moment = None,
              by: Literal["hour", "day"] = "day") -> Any:
        """`UsageReport` of any tenant."""
        return self._send(Call("GET", f"/admin/v1/tenants/{_segment(tenant)}/usage",
                               UsageReport, params=_window(since, until, by)))

    def sla(self, tenant: str, *, since: Moment = None, until: Moment = None) -> Any:
        """`SlaReport` of any tenant."""
        return self._send(Call("GET", f"/admin/v1/tenants/{_segment(tenant)}/sla", SlaReport,
                               params={"since": since, "until": until}))

    def usage_csv(self, *, since: Moment = None, until: Moment = None,
                  tenant: str | None = None) -> Any:
        """The ledger's records in the window as CSV text (all tenants, or one)."""
        return self._send(Call("GET", "/admin/v1/usage.csv", str,
                               params={"since": since, "until": until, "tenant": tenant}))

    def audit(self, *, since: Moment = None, until: Moment = None, tenant: str | None = None,
              after_id: int | None = None, limit: int | None = None) -> Any:
        """`AuditList`: a page of the audit log of admin actions, oldest first (at most
        `limit`, 100 by default and 1000 at most), optionally only those about `tenant`."""
        return self._send(Call("GET", "/admin/v1/audit", AuditList, params={
            **_audit_page(since, until, after_id, limit), "tenant": tenant}))
