"""Endpoints created through the admin API with an autoscaling block, and changes to it,
over real HTTP on SQLite and PostgreSQL: the platform's own checks (its deployer, with Ray
left out), admission by guarantees, and hostile input refused with the store left as it
was and nothing deployed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aifactory_sdk import AsyncClient, Client, ConflictError
from fastapi import FastAPI

from deployments.admin_endpoints import DeployerSettings, ServeEndpointDeployer
from serving.admin import build_admin_router, build_tenant_router, ensure_admin_tenant
from serving.targets.registry import EndpointTargets
from serving.tenancy import KeyScope, audit
from tests.admin.conftest import Api
from tests.admin.test_api import error_of
from tests.admin.test_cli import aifactory

ENGINE = {"max_model_len": 512}
# Four slots: the config holds `fixed` (1 replica) and `chat` (guaranteed 1, may grow to 4):
# 2 of 4 are guaranteed, while max_replicas alone would promise 5 of 4.
PARTITION = {"accelerator": "cpu", "count": 4}
CONFIGURED = [
    {"name": "fixed", "model": "builtin:demo", "replicas": 1, "engine": ENGINE},
    {"name": "chat", "model": "builtin:demo", "replicas": 1, "engine": ENGINE,
     "autoscaling": {"max_replicas": 4, "guaranteed_replicas": 1}},
]


def scaled(**autoscaling: Any) -> dict[str, Any]:
    return {"model": "builtin:demo", "engine": ENGINE,
            "autoscaling": {"max_replicas": 4, **autoscaling}}


class RayLessDeployer(ServeEndpointDeployer):
    """The platform's deployer with every check it makes, recording what it would deploy,
    update and remove instead of calling Ray."""

    def __init__(self, store) -> None:
        super().__init__(DeployerSettings(partition=PARTITION, configured=CONFIGURED,
                                          builtin_models={"builtin:demo": "/models/demo"},
                                          link_secret="00"),
                         store, EndpointTargets({}), links=None)
        self.calls: list[tuple] = []

    async def deploy(self, name: str, deployment: dict[str, Any]) -> None:
        self.calls.append(("deploy", name))

    async def update(self, name: str, deployment: dict[str, Any]) -> None:
        self.calls.append(("update", name, deployment["autoscaling"]))

    async def remove(self, name: str) -> None:
        self.calls.append(("remove", name))


@pytest.fixture(scope="module")
def apps() -> dict:
    """The app over each backend's store, built once (building it costs more than a test)."""
    return {}


@pytest.fixture
def deploying(live_server, backend, store, clock, apps) -> Iterator[tuple[Api, RayLessDeployer]]:
    """The admin API of `api`, served with the platform's deployer."""
    import httpx

    if backend.database_url not in apps:
        deployer = RayLessDeployer(store)
        app = FastAPI()
        app.include_router(build_admin_router(store, clock=clock, deployer=deployer),
                           prefix="/admin/v1")
        app.include_router(build_tenant_router(store, clock=clock), prefix="/tenant/v1")
        apps[backend.database_url] = app, deployer
    app, deployer = apps[backend.database_url]
    deployer.calls.clear()
    live_server.app = app
    ensure_admin_tenant(store)
    for name in ("acme", "beta"):
        store.create_tenant(name)
    for endpoint in CONFIGURED:  # as `aifactory up` applies the config: registered only
        store.create_endpoint(endpoint["name"])
    admin_key = store.create_key("admin", scope=KeyScope.ADMIN).plaintext
    with httpx.Client(base_url=f"{live_server.url}/admin/v1", timeout=10,
                      headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield Api(live_server.url, store, clock, admin_key, client), deployer
    live_server.app = None


def test_an_oversubscribed_partition_admits_an_autoscaled_endpoint_by_its_guarantee(
        deploying):
    api, deployer = deploying
    created = api.client.post("/endpoints", json={
        "name": "popup", "owner": "acme",
        "deployment": {**scaled(guaranteed_replicas=1, priority=2,
                                slo={"ttft_p95_ms": 800}), "replicas": 0}})
    assert created.status_code == 201, created.text
    block = created.json()["deployment"]["autoscaling"]
    # Stored as it runs: the defaults filled in.
    assert block == {"min_replicas": 0, "max_replicas": 4, "guaranteed_replicas": 1,
                     "priority": 2, "slo": {"ttft_p95_ms": 800, "itl_p95_ms": 200},
                     "target_ongoing_per_replica": 16.0, "idle_to_zero_s": 600.0}
    assert api.client.get("/endpoints/popup").json()["deployment"]["autoscaling"] == block
    # 3 of 4 guaranteed now; a borrower without a guarantee still fits, max_replicas 4 each.
    assert api.client.post("/endpoints", json={"name": "spare",
                                               "deployment": scaled()}).status_code == 201
    assert deployer.calls == [("deploy", "popup"), ("deploy", "spare")]


def test_a_change_merges_into_the_block_and_is_audited(deploying):
    api, deployer = deploying
    api.client.post("/endpoints", json={"name": "popup", "deployment": scaled(
        slo={"ttft_p95_ms": 800, "itl_p95_ms": 50})}).raise_for_status()
    changed = api.client.patch("/endpoints/popup/autoscaling", json={
        "max_replicas": 2, "guaranteed_replicas": 2, "min_replicas": 1,
        "slo": {"itl_p95_ms": 80}, "idle_to_zero_s": None})
    assert changed.status_code == 200, changed.text
    block = changed.json()["deployment"]["autoscaling"]
    assert (block["min_replicas"], block["max_replicas"], block["guaranteed_replicas"]) == (
        1, 2, 2)
    assert block["slo"] == {"ttft_p95_ms": 800, "itl_p95_ms": 80}
    assert block["idle_to_zero_s"] is None  # null: keep one replica warm
    assert changed.json()["deployment"]["replicas"] == 1  # Serve's deployment is left alone
    assert deployer.calls[-1] == ("update", "popup", block)
    entries = audit.read(api.store.engine, audit.AuditQuery(limit=audit.MAX_LIMIT)).entries
    updates = [e for e in entries if e.action == "endpoint.update"]
    assert [e.target for e in updates] == ["endpoint/popup"]
    # Left out keeps: an empty change changes nothing.
    again = api.client.patch("/endpoints/popup/autoscaling", json={})
    assert again.json()["deployment"]["autoscaling"] == block


def test_a_guarantee_beyond_the_partition_is_refused_naming_numbers_only(deploying):
    api, deployer = deploying
    api.client.post("/endpoints", json={"name": "popup", "owner": "beta",
                                        "deployment": scaled(guaranteed_replicas=1)})
    before = api.snapshot()
    refused = error_of(api.client.post("/endpoints", json={
        "name": "greedy", "owner": "acme", "deployment": scaled(guaranteed_replicas=2)}), 409)
    assert refused["message"] == ("deployment: a guarantee of 2 x 1 cpu slots does not fit "
                                  "the partition: 3 of 4 are guaranteed to other endpoints")
    grow = error_of(api.client.patch("/endpoints/popup/autoscaling",
                                     json={"guaranteed_replicas": 3}), 409)
    # Its own guarantee is not counted twice: 2 others + 3 > 4.
    assert grow["message"].startswith("autoscaling: a guarantee of 3 x 1 cpu slots does not "
                                      "fit the partition: 2 of 4 are guaranteed")
    for message in (refused["message"], grow["message"]):
        assert not any(name in message for name in ("chat", "fixed", "beta", "popup"))
    assert api.snapshot() == before and deployer.calls == [("deploy", "popup")]
    # Exactly up to the last slot is fine.
    assert api.client.patch("/endpoints/popup/autoscaling",
                            json={"guaranteed_replicas": 2}).status_code == 200


HOSTILE_CHANGES = [
    # (body, status, param or None, words)
    ({"max_replicas": "2"}, 400, "max_replicas", "valid integer"),
    ({"max_replicas": True}, 400, "max_replicas", "valid integer"),
    ({"max_replicas": 2.5}, 400, "max_replicas", "valid integer"),
    ({"max_replicas": 0}, 400, "autoscaling.max_replicas", "greater than 0"),
    ({"max_replicas": -3}, 400, "autoscaling.max_replicas", "greater than 0"),
    ({"max_replicas": None}, 400, "autoscaling.max_replicas", "valid integer"),
    ({"min_replicas": 3, "max_replicas": 2}, 400, "autoscaling", "min_replicas 3 > max_replicas 2"),
    ({"guaranteed_replicas": 5}, 400, "autoscaling", "guaranteed_replicas 5 > max_replicas 4"),
    ({"min_replicas": 1}, 400, "autoscaling", "replicas kept at rest must be guaranteed"),
    ({"guaranteed_replicas": 10**30, "max_replicas": 10**30}, 409, None, "does not fit"),
    ({"surge": 1}, 400, "surge", "Extra inputs"),
    ({"slo": {"ttft_p95_ms": 500, "p99": 1}}, 400, "slo.p99", "Extra inputs"),
    ({"slo": {"ttft_p95_ms": 0}}, 400, "autoscaling.slo.ttft_p95_ms", "greater than"),
    ({"slo": "fast"}, 400, "slo", "valid dictionary"),
    ({"target_ongoing_per_replica": 0}, 400, "autoscaling.target_ongoing_per_replica",
     "greater than 0"),
    ({"idle_to_zero_s": -1}, 400, "autoscaling.idle_to_zero_s", "greater than 0"),
    (b'{"idle_to_zero_s": Infinity}', 400, "autoscaling.idle_to_zero_s", "finite"),
    (b'{"target_ongoing_per_replica": NaN}', 400, "autoscaling.target_ongoing_per_replica",
     "greater than 0"),
    ({"priority": "high"}, 400, "priority", "valid integer"),
    (b"[1, 2]", 400, None, "must be a JSON object"),
    (b"{", 400, None, "JSON"),
]


def test_hostile_changes_are_refused_and_change_nothing(deploying):
    """Every row of HOSTILE_CHANGES against one store: each refusal must leave it as it was
    and deploy nothing, so the rows can share their setup."""
    api, deployer = deploying
    api.client.post("/endpoints", json={"name": "popup", "deployment": scaled()})
    before = api.snapshot()
    failures = []
    for body, status, param, words in HOSTILE_CHANGES:
        if isinstance(body, bytes):
            response = api.client.patch("/endpoints/popup/autoscaling", content=body,
                                        headers={"content-type": "application/json"})
        else:
            response = api.client.patch("/endpoints/popup/autoscaling", json=body)
        try:
            error = error_of(response, status)
            assert words in error["message"], error["message"]
            assert param is None or error["param"] == param, error
            assert len(error["message"]) < 400
            assert api.snapshot() == before, "the store changed"
            assert deployer.calls == [("deploy", "popup")], deployer.calls
        except AssertionError as exc:
            failures.append(f"{body!r:.60}: {exc}")
    assert not failures, "\n".join(failures)


HOSTILE_BLOCKS = [
    ({"max_replicas": "4"}, "deployment.autoscaling.max_replicas", "valid integer"),
    ({"max_replicas": 4, "burst": 9}, "deployment.autoscaling.burst", "Extra inputs"),
    ({"max_replicas": 1, "min_replicas": 2}, "deployment.autoscaling", "min_replicas 2 >"),
    ({"max_replicas": 4, "guaranteed_replicas": 1, "min_replicas": 1}, "deployment.autoscaling",
     "starts with 0 replicas"),
    ({"min_replicas": 0}, "deployment.autoscaling.max_replicas", "Field required"),
    ([4], "deployment.autoscaling", "valid dictionary"),
]


def test_hostile_blocks_at_creation_are_refused(deploying):
    api, deployer = deploying
    before = api.snapshot()
    for autoscaling, param, words in HOSTILE_BLOCKS:
        error = error_of(api.client.post("/endpoints", json={"name": "popup", "deployment": {
            "model": "builtin:demo", "engine": ENGINE, "replicas": 0,
            "autoscaling": autoscaling}}), 400)
        assert (error["param"], words in error["message"]) == (param, True), error
    assert api.snapshot() == before and deployer.calls == []


@pytest.mark.parametrize(("name", "words"), [
    ("chat", "not deployed through the admin API"),    # the config's: sized in the config
    ("pinned", "runs a fixed replica count"),
    ("ghost", "no endpoint named 'ghost'"),
])
def test_only_a_created_autoscaled_endpoint_has_a_block_to_change(deploying, name, words):
    api, _deployer = deploying
    api.client.post("/endpoints", json={"name": "pinned", "deployment": {
        "model": "builtin:demo", "engine": ENGINE}}).raise_for_status()
    before = api.snapshot()
    response = api.client.patch(f"/endpoints/{name}/autoscaling", json={"max_replicas": 2})
    error = error_of(response, 404 if name == "ghost" else 409)
    assert words in error["message"], error["message"]
    assert api.snapshot() == before


def test_no_tenant_changes_an_endpoints_autoscaling(deploying):
    """Only the platform's operators size endpoints: a tenant's admin key is refused on the
    endpoint it owns as on another tenant's, and self-service has no such route."""
    api, _deployer = deploying
    for name, owner in (("acme-chat", "acme"), ("beta-chat", "beta")):
        api.client.post("/endpoints", json={"name": name, "owner": owner,
                                            "deployment": scaled()}).raise_for_status()
    acme_admin = api.store.create_key("acme", scope=KeyScope.ADMIN).plaintext
    before = api.snapshot()
    with api.as_key(acme_admin) as acme:
        for name in ("acme-chat", "beta-chat"):
            refused = acme.patch(f"/endpoints/{name}/autoscaling",
                                 json={"guaranteed_replicas": 2})
            assert error_of(refused, 403)["type"] == "permission_error"
        self_service = acme.patch(f"{api.url}/tenant/v1/endpoints/beta-chat/autoscaling",
                                  json={"guaranteed_replicas": 2})
        assert self_service.status_code in (404, 405)
        mine = acme.get(f"{api.url}/tenant/v1/endpoints").json()["data"]
        assert [e["name"] for e in mine] == ["acme-chat"]  # nothing of beta's shown
    assert api.snapshot() == before


def test_the_cli_creates_and_changes_an_autoscaled_endpoint(deploying, capsys):
    api, _deployer = deploying

    def cli(*argv: str) -> tuple[int, str, str]:
        return aifactory(capsys, *argv, "--url", api.url, "--admin-key", api.admin_key)

    code, out, err = cli("endpoint", "create", "popup", "--model", "builtin:demo",
                         "--max-model-len", "512", "--replicas", "0", "--max-replicas", "3",
                         "--guaranteed", "1", "--idle-to-zero", "never", "--ttft-p95-ms",
                         "900", "--json")
    assert code == 0, err
    block = json.loads(out)["deployment"]["autoscaling"]
    assert (block["max_replicas"], block["guaranteed_replicas"], block["idle_to_zero_s"],
            block["slo"]["ttft_p95_ms"]) == (3, 1, None, 900)
    code, out, _ = cli("endpoint", "autoscale", "popup", "--max-replicas", "2",
                       "--idle-to-zero", "30", "--json")
    block = json.loads(out)["deployment"]["autoscaling"]
    assert (code, block["max_replicas"], block["idle_to_zero_s"],
            block["guaranteed_replicas"]) == (0, 2, 30.0, 1)
    code, _, err = cli("endpoint", "autoscale", "popup", "--guaranteed", "3",
                       "--max-replicas", "3")
    assert code == 2 and "2 of 4 are guaranteed to other endpoints" in err, err
    assert cli("endpoint", "autoscale", "popup")[0] == 2  # nothing to change
    code, _, err = cli("endpoint", "create", "bare", "--max-replicas", "2")
    assert code == 2 and "autoscaling needs --model" in err
    with pytest.raises(SystemExit):  # argparse's own check
        cli("endpoint", "autoscale", "popup", "--idle-to-zero", "soon")


async def test_the_sdk_changes_an_autoscaled_endpoint(deploying):
    api, _deployer = deploying
    api.client.post("/endpoints", json={"name": "popup", "deployment": scaled()})
    client = Client(api_key=api.admin_key, base_url=api.url)
    changed = client.admin.endpoints.update_autoscaling("popup", priority=3,
                                                        slo={"itl_p95_ms": 90},
                                                        idle_to_zero_s=None)
    block = changed.deployment["autoscaling"]
    assert (block["priority"], block["slo"]["itl_p95_ms"], block["idle_to_zero_s"]) == (
        3, 90, None)
    with pytest.raises(ConflictError, match="does not fit the partition"):
        client.admin.endpoints.update_autoscaling("popup", guaranteed_replicas=4)
    async with AsyncClient(api_key=api.admin_key, base_url=api.url) as async_client:
        changed = await async_client.admin.endpoints.update_autoscaling("popup",
                                                                        max_replicas=2)
    assert changed.deployment["autoscaling"]["max_replicas"] == 2
    client.close()


def test_a_long_name_a_deep_body_and_a_huge_body_get_a_clear_4xx(deploying):
    api, _deployer = deploying
    api.client.post("/endpoints", json={"name": "popup", "deployment": scaled()})
    before = api.snapshot()
    long_name = "a" * 5000
    error = error_of(api.client.patch(f"/endpoints/{long_name}/autoscaling",
                                      json={"max_replicas": 2}), 400)
    assert len(error["message"]) < 400
    deep = b'{"slo": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    response = api.client.patch("/endpoints/popup/autoscaling", content=deep,
                                headers={"content-type": "application/json"})
    assert error_of(response, 400)["message"] == "There was an error parsing the body"
    # The same for every admin route (AdminRoute's handling, not this route's).
    response = api.client.post("/endpoints", content=deep,
                               headers={"content-type": "application/json"})
    assert error_of(response, 400)["message"] == "There was an error parsing the body"
    huge = b'{"surge": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    response = api.client.patch("/endpoints/popup/autoscaling", content=huge,
                                headers={"content-type": "application/json"})
    assert response.status_code in (400, 413), response.text[:200]
    assert api.snapshot() == before
