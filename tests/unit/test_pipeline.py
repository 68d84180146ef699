"""The gateway's steps one at a time, each with what it returns or the refusal it raises: a
real SQLite store and local counters behind them, requests made by hand, no engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from serving.engine.adapters import ADAPTER_FIELD
from serving.gateway.access import Access
from serving.gateway.engine_steps import (
    BATCH_PRIORITY,
    INTERACTIVE_PRIORITY,
    call_engine,
    engine_body,
    respond,
)
from serving.gateway.exchange import Exchange, Refusal, Route, Unserved
from serving.gateway.pipeline import (
    MAX_BODY_BYTES,
    admit,
    authenticate,
    read_body,
    refuse_if_full,
    route,
)
from serving.gateway.shape import RequestLimits, bad_shape
from serving.gateway.stream_usage import StreamWants
from serving.targets import EndpointOverloaded, EndpointUnavailable, InFlightBound
from serving.tenancy import ErrorClass, LocalAdmissionCounters, Outcome
from tests.unit.stores import sqlite_store


def request(body: bytes = b"{}", headers: dict[str, str] | None = None) -> Request:
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/v1/completions",
                    "headers": raw}, receive)


def refusal_of(exc_info) -> tuple[int, dict]:
    response = exc_info.value.response
    return response.status_code, json.loads(response.body)["error"]


class Target:
    """An endpoint as the steps see it; `reply` is what its call's head() gives or raises."""

    def __init__(self, name: str = "m", reply=None, bound: InFlightBound | None = None) -> None:
        self.name = name
        self.bound = bound or InFlightBound(None)
        self.reply = reply or {"status": 200, "body": {"usage": {"prompt_tokens": 3,
                                                                  "completion_tokens": 2}}}
        self.calls: list = []

    def call(self, kind, body, request_id):
        target = self

        class Call:
            cancelled = False

            async def head(self):
                target.calls.append(body)
                if isinstance(target.reply, Exception):
                    raise target.reply
                return target.reply

            def cancel(self):
                self.cancelled = True

        return Call()

    async def ready(self):
        return True

    async def card(self):
        return {"root": "/models/m", "max_model_len": 64}


@pytest.fixture
def store(tmp_path):
    store = sqlite_store(tmp_path, "t", "m")
    store.create_tenant("other")
    store.create_endpoint("theirs", owner="other")
    yield store
    store.close()


@pytest.fixture
def access(store):
    return Access(store, LocalAdmissionCounters())


@pytest.fixture
async def principal(store, access):
    key = store.create_key("t").plaintext
    return await access.authenticate(f"Bearer {key}")


def records(store):
    now = datetime.now(UTC)
    return store.usage_records("t", now - timedelta(hours=1), now + timedelta(hours=1))


# -- authenticate, read body -----------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer afk_unknown0000000"])
async def test_authenticate_refuses_what_is_not_a_known_key(access, header):
    with pytest.raises(Refusal) as refused:
        await authenticate(access, request(headers={"authorization": header} if header else {}))
    assert refusal_of(refused) == (401, {
        "message": "Incorrect or missing API key: pass a valid key as "
                   "'Authorization: Bearer ...'",
        "type": "authentication_error", "param": None, "code": "invalid_api_key"})


async def test_a_revoked_key_is_refused(store, access):
    key = store.create_key("t")
    store.revoke_key(key.key.id)
    with pytest.raises(Refusal) as refused:
        await authenticate(access, request(headers={"authorization": f"Bearer {key.plaintext}"}))
    assert refusal_of(refused)[0] == 401


@pytest.mark.parametrize(("raw", "status", "says"), [
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (b'{"a": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}', 413, "larger than"),
])
async def test_read_body_refuses_what_is_not_a_bounded_json_object(raw, status, says):
    with pytest.raises(Refusal) as refused:
        await read_body(request(raw))
    code, error = refusal_of(refused)
    assert code == status and says in error["message"]


async def test_read_body_trusts_no_declared_length_but_refuses_a_large_one_unread():
    with pytest.raises(Refusal) as refused:
        await read_body(request(b"{}", {"content-length": str(MAX_BODY_BYTES + 1)}))
    assert refusal_of(refused)[0] == 413
    assert await read_body(request(b'{"model": "m"}', {"content-length": "2"})) == {"model": "m"}


# -- route -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [None, "", 7, ["m"], {"m": 1}])
async def test_route_needs_a_model_string(access, principal, model):
    with pytest.raises(Refusal) as refused:
        await route({"m": Target()}, access, principal, {"model": model})
    assert refusal_of(refused)[0:1] == (400,) and refusal_of(refused)[1]["param"] == "model"


async def test_a_grant_revoked_between_route_and_admission_is_refused(store, principal):
    """The grant is read again at admission; gone by then, the request is a 404, never
    admitted without limits (it failed open before)."""
    store.create_endpoint("shared")
    store.grant("shared", "t")
    store.set_quota("t", requests_per_minute=1)
    access = Access(store, LocalAdmissionCounters(), cache_ttl_s=0.0)  # read each time
    endpoints = {"shared": Target("shared")}
    chosen = await route(endpoints, access, principal, {"model": "shared"})
    store.revoke_grant("shared", "t")
    with pytest.raises(Refusal) as refused:
        await admit(access, principal, chosen, {"prompt": "hi"},
                    Exchange("completion", "r1", None))
    status, error = refusal_of(refused)
    assert (status, error["code"]) == (404, "model_not_found")
    assert records(store) == []


async def test_another_tenants_endpoint_answers_as_a_missing_one(access, principal):
    endpoints = {"m": Target("m"), "theirs": Target("theirs")}
    answers = []
    for model in ("theirs", "nowhere"):
        with pytest.raises(Refusal) as refused:
            await route(endpoints, access, principal, {"model": model})
        status, error = refusal_of(refused)
        answers.append((status, error["code"], error["message"].replace(model, "<m>")))
    assert answers[0] == answers[1] == (
        404, "model_not_found", "The model `<m>` does not exist or you do not have access to it.")
    chosen = await route(endpoints, access, principal, {"model": "m"})
    assert chosen.model == "m" and chosen.card["max_model_len"] == 64
    assert chosen.model_label == "m"


@pytest.mark.parametrize("model", ["\ud800", "m\x00", "M", "m" * 64, "m" * 100_000, "../m"])
async def test_a_name_no_endpoint_can_have_is_a_404_without_asking_the_store(
        store, access, principal, monkeypatch, model):
    """A lone surrogate (valid JSON: "\\ud800") cannot even be sent to SQLite; it answered
    503 "store unavailable" before. The answer is a plain 404 whose body encodes."""
    def asked(*_):
        raise AssertionError("the store was asked about an impossible name")

    monkeypatch.setattr(store, "can_use", asked)
    with pytest.raises(Refusal) as refused:
        await route({"m": Target()}, access, principal, {"model": model})
    status, error = refusal_of(refused)
    assert (status, error["code"]) == (404, "model_not_found")
    assert len(error["message"]) < 200
    refused.value.response.body.decode("utf-8")  # encodable, whatever the name was


async def test_a_store_that_fails_answers_503_with_retry_after(store, access, principal,
                                                               monkeypatch):
    def broken(*_):
        raise OSError("store down")

    monkeypatch.setattr(store, "can_use", broken)
    with pytest.raises(Refusal) as refused:
        await route({"m": Target()}, access, principal, {"model": "m"})
    assert refusal_of(refused)[0] == 503
    assert refused.value.response.headers["retry-after"] == "1"


# -- refuse if full, admit -------------------------------------------------------------------


async def test_a_full_endpoint_refuses_before_admission_with_one_record(store, access,
                                                                        principal):
    bound = InFlightBound(1)
    assert bound.try_acquire()
    chosen = Route("m", Target(bound=bound), {"root": "m", "max_model_len": 64})
    with pytest.raises(Refusal) as refused:
        await refuse_if_full(access, principal, chosen, Exchange("completion", "r1", None))
    status, error = refusal_of(refused)
    assert status == 503 and error["code"] == "endpoint_overloaded"
    [record] = records(store)
    assert (record.outcome, record.prompt_tokens, record.completion_tokens) == (
        Outcome.ERROR, 0, 0)
    bound.release()
    await refuse_if_full(access, principal, chosen, Exchange("completion", "r2", None))


async def test_admit_sets_the_headers_and_refuses_over_quota_with_429(store, access, principal):
    store.set_quota("t", requests_per_minute=1)
    access._grants = type(access._grants)(0)
    chosen = Route("m", Target(), {"root": "m", "max_model_len": 64})
    first = Exchange("completion", "r1", None)
    admitted = await admit(access, principal, chosen, {"prompt": "hi"}, first)
    assert admitted.decision.admitted
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["server-timing"].startswith("admission;dur=")
    second = Exchange("completion", "r2", None)
    with pytest.raises(Refusal) as refused:
        await admit(access, principal, chosen, {"prompt": "hi"}, second)
    status, error = refusal_of(refused)
    assert status == 429 and error["type"] == "rate_limit_error"
    assert "x-ratelimit-limit-requests" in second.headers
    assert [r.outcome for r in records(store)] == [Outcome.REJECTED]


# -- engine body, call, respond --------------------------------------------------------------


RUNNING = {"include_usage": True, "continuous_usage_stats": True}


@pytest.mark.parametrize(("body", "wants"), [
    ({"stream": True}, StreamWants()),
    ({"stream": True, "stream_options": {"include_usage": True}}, StreamWants(usage=True)),
    ({"stream": True, "stream_options": {"continuous_usage_stats": True}, "n": 3},
     StreamWants(running=True, choices_per_prompt=3)),
    ({"stream": True, "n": "3"}, StreamWants()),  # the engine refuses such an n
])
def test_the_engine_is_always_asked_for_the_streams_running_usage(body, wants):
    sent, asked = engine_body(body, None, "t")
    assert sent["stream_options"] == RUNNING and asked == wants


def test_a_reply_that_is_not_a_stream_keeps_its_usage():
    sent, wants = engine_body({"stream": False}, None, "t")
    assert "stream_options" not in sent and wants.usage


def test_each_tenant_has_its_own_prefix_cache_salt():
    """A tenant's salt is never one another tenant can send: a client's salt is mixed into
    its tenant's, not used as given."""
    salts = {(tenant, given): engine_body({"cache_salt": given} if given else {}, None,
                                          tenant)[0]["cache_salt"]
             for tenant in ("acme", "globex") for given in (None, "s1")}
    assert len(set(salts.values())) == 4
    acme = salts["acme", None]
    assert engine_body({"cache_salt": acme}, None, "globex")[0]["cache_salt"] != acme
    assert engine_body({}, None, "acme")[0]["cache_salt"] == acme  # stable: acme shares its own


async def test_an_unavailable_endpoint_settles_its_record_and_answers_503(store, access,
                                                                          principal):
    target = Target(reply=EndpointUnavailable("no replica woke", retry_after_s=30))
    chosen = Route("m", target, {"root": "m", "max_model_len": 64})
    exchange = Exchange("completion", "r1", None)
    admitted = await admit(access, principal, chosen, {"prompt": "hi"}, exchange)
    with pytest.raises(Refusal) as refused:
        await call_engine(access, chosen, admitted, {"prompt": "hi"}, exchange)
    assert refusal_of(refused)[1]["code"] == "endpoint_unavailable"
    assert refused.value.response.headers["retry-after"] == "30"
    assert [r.outcome for r in records(store)] == [Outcome.ERROR]


async def test_an_endpoint_that_fails_answers_503_without_detail(store, access, principal):
    chosen = Route("m", Target(reply=RuntimeError("secret internals")), {"max_model_len": 64})
    exchange = Exchange("completion", "r1", None)
    admitted = await admit(access, principal, chosen, {"prompt": "hi"}, exchange)
    with pytest.raises(Refusal) as refused:
        await call_engine(access, chosen, admitted, {"prompt": "hi"}, exchange)
    status, error = refusal_of(refused)
    assert status == 503 and "secret" not in error["message"]


async def test_a_json_reply_is_settled_with_the_engines_counts(store, access, principal):
    chosen = Route("m", Target(), {"max_model_len": 64})
    exchange = Exchange("completion", "r1", None)
    exchange.headers["x-request-id"] = "r1"
    admitted = await admit(access, principal, chosen, {"prompt": "hi"}, exchange)
    call, head = await call_engine(access, chosen, admitted, {"prompt": "hi"}, exchange)
    response = await respond(access, chosen, admitted, call, head, True, exchange)
    assert response.status_code == 200 and response.headers["x-request-id"] == "r1"
    [record] = records(store)
    assert (record.outcome, record.prompt_tokens, record.completion_tokens) == (
        Outcome.OK, 3, 2)


async def test_an_engine_error_is_reshaped_as_openais_and_recorded(store, access, principal):
    error = {"error": {"message": "max_tokens must be at least 1", "type": "BadRequestError",
                       "param": "max_tokens", "code": 400}}
    chosen = Route("m", Target(reply={"status": 400, "body": error}), {"max_model_len": 64})
    exchange = Exchange("completion", "r1", None)
    admitted = await admit(access, principal, chosen, {"prompt": "hi"}, exchange)
    call, head = await call_engine(access, chosen, admitted, {}, exchange)
    response = await respond(access, chosen, admitted, call, head, True, exchange)
    assert response.status_code == 400
    assert json.loads(response.body)["error"] == {
        "message": "max_tokens must be at least 1", "type": "invalid_request_error",
        "param": "max_tokens", "code": None}
    # The tenant's own bad request: kept with its status, and no platform fault.
    [record] = records(store)
    assert (record.outcome, record.http_status, record.error_class) == (
        Outcome.ERROR, 400, ErrorClass.CLIENT_ERROR)
    assert not record.is_platform_fault


async def test_an_engine_failure_is_recorded_as_the_platforms_fault(store, access, principal):
    error = {"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}
    chosen = Route("m", Target(reply={"status": 500, "body": error}), {"max_model_len": 64})
    exchange = Exchange("completion", "r1", None)
    admitted = await admit(access, principal, chosen, {"prompt": "hi"}, exchange)
    call, head = await call_engine(access, chosen, admitted, {}, exchange)
    assert (await respond(access, chosen, admitted, call, head, True, exchange)).status_code == 500
    [record] = records(store)
    assert (record.http_status, record.error_class) == (500, ErrorClass.ENGINE_ERROR)
    assert record.is_platform_fault


@pytest.mark.parametrize(("kind", "salted"), [
    ("embedding", True), ("pooling", True), ("score", True), ("rerank", True),
    ("tokenize", False), ("detokenize", False)])
def test_a_pooling_models_prompts_are_salted_per_tenant_too(kind, salted):
    """vLLM caches a pooling model's prompts as it does a generating one's."""
    sent, _ = engine_body({"input": "x"}, None, "acme", kind)
    assert ("cache_salt" in sent) == salted
    if salted:
        assert sent["cache_salt"] == engine_body({}, None, "acme")[0]["cache_salt"]


def test_the_engine_priority_is_the_platforms():
    """Batch lines after interactive requests on vLLM's priority scheduler; a client's own
    `priority` never reaches the engine (check_shape refuses any but 0)."""
    assert engine_body({"priority": 0}, None, "t")[0]["priority"] == INTERACTIVE_PRIORITY
    line = engine_body({}, None, "t", "chat", priority=BATCH_PRIORITY)[0]
    assert line["priority"] == BATCH_PRIORITY > INTERACTIVE_PRIORITY
    assert "priority" not in engine_body({}, None, "t", "tokenize")[0]  # no engine queue



@pytest.mark.parametrize("reply", [
    EndpointUnavailable("no replica woke", retry_after_s=7),
    EndpointOverloaded("queue full"),
    RuntimeError("actor died"),
    {"status": 500, "body": {"error": {"message": "engine dead", "code": 500}}},
])
async def test_a_request_its_sender_resends_is_unserved_and_unrecorded(store, access,
                                                                       principal, reply):
    """A batch line the engines fail: no record, its slot freed; the same request id
    admitted again is recorded once."""
    access_with_slot = Access(store, LocalAdmissionCounters())
    store.set_quota("t", concurrent_requests=1)
    chosen = Route("m", Target(reply=reply), {"max_model_len": 64})
    exchange = Exchange("completion", "r1", None)
    exchange.resend_on_fault = True
    admitted = await admit(access_with_slot, principal, chosen, {"prompt": "hi"}, exchange)
    with pytest.raises(Unserved) as unserved:
        call, head = await call_engine(access_with_slot, chosen, admitted, {}, exchange)
        await respond(access_with_slot, chosen, admitted, call, head, True, exchange)
    assert unserved.value.retry_after_s > 0 and records(store) == []
    served = Route("m", Target(), {"max_model_len": 64})
    again = await admit(access_with_slot, principal, served, {"prompt": "hi"}, exchange)
    call, head = await call_engine(access_with_slot, served, again, {}, exchange)
    await respond(access_with_slot, served, again, call, head, True, exchange)
    assert [(r.request_id, r.outcome) for r in records(store)] == [("r1", Outcome.OK)]


# -- LoRA adapters ---------------------------------------------------------------------------


def _register_adapter(store, name: str, tenant: str, endpoint: str):
    from serving.catalogue.adapter_store import register_adapter
    from serving.catalogue.facts import AdapterFacts, WeightsFacts

    facts = AdapterFacts(
        path=f"/adapters/{name}", files=("adapter_config.json", "adapter_model.safetensors"),
        peft_type="LORA", base_model="demo", base_architecture=None, rank=8, lora_alpha=8,
        target_modules=("q_proj",), weights_file="adapter_model.safetensors",
        weights=WeightsFacts(None, (), (), 0, 0, None), digest=f"sha256:{name}", problems=())
    return register_adapter(store, name=name, tenant=tenant, endpoint=endpoint,
                            path=f"/adapters/{name}", facts=facts)


async def test_an_adapter_routes_to_its_endpoint_and_tells_the_engine_where_it_lies(
        store, access, principal):
    _register_adapter(store, "t-ft", "t", "m")
    target = Target("m")
    chosen = await route({"m": target}, access, principal, {"model": "t-ft"})
    assert chosen.model == "m" and chosen.target is target
    assert chosen.model_label == "t-ft"  # the ledger's and the metrics' model
    body = chosen.engine_body({"model": "t-ft", "prompt": "x"})
    assert body == {"model": "t-ft", "prompt": "x",
                    ADAPTER_FIELD: {"path": "/adapters/t-ft", "digest": "sha256:t-ft"}}
    plain = await route({"m": target}, access, principal, {"model": "m"})
    assert plain.adapter is None and ADAPTER_FIELD not in plain.engine_body({"model": "m"})


async def test_another_tenants_adapter_answers_as_a_missing_model(store, access, principal):
    store.create_endpoint("shared")
    store.grant("shared", "t")
    store.grant("shared", "other")
    _register_adapter(store, "other-ft", "other", "shared")
    endpoints = {"m": Target("m"), "shared": Target("shared")}
    answers = []
    for model in ("other-ft", "never-registered"):
        with pytest.raises(Refusal) as refused:
            await route(endpoints, access, principal, {"model": model})
        status, error = refusal_of(refused)
        answers.append((status, error["code"], error["message"].replace(model, "<m>")))
    assert answers[0] == answers[1] and answers[0][0] == 404


async def test_an_adapter_whose_endpoint_the_tenant_lost_answers_as_missing(store, access,
                                                                          principal):
    store.create_endpoint("shared")
    store.grant("shared", "t")
    _register_adapter(store, "t-ft", "t", "shared")
    store.revoke_grant("shared", "t")
    with pytest.raises(Refusal) as refused:
        await route({"shared": Target("shared")}, access, principal, {"model": "t-ft"})
    assert refusal_of(refused)[0] == 404


def test_a_client_cannot_name_an_adapter_folder_itself():
    bad = bad_shape({"model": "m", "prompt": "x",
                     ADAPTER_FIELD: {"path": "/etc", "digest": "x"}}, RequestLimits())
    assert bad is not None and bad.param == ADAPTER_FIELD
    assert "Unrecognized request argument" in bad.message


async def test_the_ledger_names_the_adapter_a_request_ran_with(store, access, principal):
    """Every record of an adapter request names the adapter (ok, refused when full); one on
    the endpoint's own model names none."""
    _register_adapter(store, "t-ft", "t", "m")
    target = Target("m")
    for model, request_id in (("t-ft", "r-ft"), ("m", "r-base")):
        chosen = await route({"m": target}, access, principal, {"model": model})
        exchange = Exchange("completion", request_id, None)
        admitted = await admit(access, principal, chosen, {"prompt": "hi"}, exchange)
        call, head = await call_engine(access, chosen, admitted, {"prompt": "hi"}, exchange)
        await respond(access, chosen, admitted, call, head, True, exchange)
    full = InFlightBound(1)
    assert full.try_acquire()
    chosen = await route({"m": Target("m", bound=full)}, access, principal, {"model": "t-ft"})
    with pytest.raises(Refusal):
        await refuse_if_full(access, principal, chosen, Exchange("completion", "r-full", None))
    by_id = {r.request_id: r for r in records(store)}
    assert {i: (r.outcome, r.endpoint, r.adapter) for i, r in by_id.items()} == {
        "r-ft": (Outcome.OK, "m", "t-ft"), "r-base": (Outcome.OK, "m", None),
        "r-full": (Outcome.ERROR, "m", "t-ft")}
