"""The shipped Prometheus configuration against the live platform, with a real Prometheus
server (Debian's package): it finds every Ray metrics agent through Ray's service-discovery
file, loads the shipped rules, and every PromQL expression of the rules and the dashboards
parses and, where the platform under test produces its inputs, returns data. A scrape target
that is down is tolerated (it reads as down, nothing else changes)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from observability import metrics
from observability.queries import catalog
from observability.rules.build import RULES_FILE
from tests.e2e.batch_kill import BATCH_LINES, assert_every_line_once, start_batch
from tests.e2e.conftest import openai_client
from tests.e2e.test_batches import ENDPOINT, request_line, upload
from tests.platform_helpers import inside_one_minute_window, kill_serve_replica

SHIPPED = Path(metrics.__file__).parent / "prometheus" / "prometheus.yml"
INTERVAL = "2s"
DEADLINE_S = 120
DOWN_TARGET = "127.0.0.1:9"  # the discard port: nothing listens there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp: Path) -> Path:
    """The shipped configuration, with test-sized intervals, the rules by absolute path, and
    one more service-discovery file listing a target that is down."""
    config = yaml.safe_load(SHIPPED.read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    assert config["rule_files"] == ["../rules/*.yml"]
    config["rule_files"] = [str(RULES_FILE.parent / "*.yml")]
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = INTERVAL
    (sd,) = job["file_sd_configs"]
    assert sd["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    down = tmp / "down.json"
    down.write_text(f'[{{"labels": {{"job": "ray"}}, "targets": ["{DOWN_TARGET}"]}}]')
    sd["files"].append(str(down))
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def prometheus(platform, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    config = _config(tmp)
    binary = shutil.which("prometheus")
    assert binary, "install Debian's prometheus package"
    check = subprocess.run([shutil.which("promtool"), "check", "config", str(config)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    port = _free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.5)
        yield {"url": url, "log": tmp / "prometheus.log"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def query(prom, expr: str) -> dict:
    resp = httpx.get(prom["url"] + "/api/v1/query", params={"query": expr}, timeout=30)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def _send_round(platform, acme, globex) -> None:
    for client, model in ((acme, "demo"), (acme, "demo-remote"), (globex, "demo-remote")):
        for _ in range(2):
            for _ in client.chat.completions.create(
                    model=model, max_tokens=4, stream=True,
                    messages=[{"role": "user", "content": "hello"}]):
                pass
            client.completions.create(model=model, prompt="hello", max_tokens=4)
    # A prompt of several KV blocks, twice per endpoint: the engines' prefix caches are
    # queried and hit (short prompts fill no whole block, so they query nothing).
    shared_prefix = " ".join(f"word{i}" for i in range(80))
    for model in ("demo", "demo-remote"):
        for _ in range(2):
            acme.completions.create(model=model, prompt=shared_prefix, max_tokens=2)


# Series whose rate is a ratio's denominator (`... > 0`): they must be seen to increase.
DENOMINATORS = ('ray_aifactory_slo_requests_total{tenant="acme"}',
                'ray_aifactory_slo_requests_total{tenant="globex"}',
                'ray_aifactory_engine_prefix_cache_queries_total{endpoint="demo"}',
                'ray_aifactory_engine_prefix_cache_queries_total{endpoint="demo-remote"}')


def _one_request_a_minute_tenant(platform, store):
    """A new tenant that may call demo-remote once a minute, and its client."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    store.create_tenant(name)
    store.grant("demo-remote", name)
    store.set_quota(name, requests_per_minute=1)
    return name, openai_client(platform, store.create_key(name).plaintext)


def _until_scraped(prometheus, series) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while missing := [s for s in series if not query(prometheus, s)["result"]]:
        assert time.monotonic() < deadline, f"never scraped: {missing}"
        time.sleep(1)


@pytest.fixture(scope="module")
def traffic(prometheus, platform, store, keys):
    """Two tenants' streamed and plain requests on both endpoints, and one rate-limited
    request, sent while Prometheus scrapes: two rounds, the second once Prometheus holds the
    series the first made. A counter's first sample is no increase to `rate`, and Ray
    exports a process's metrics every few seconds, so one quick round can be born and
    finished within one sample."""
    throttled, throttled_client = _one_request_a_minute_tenant(platform, store)
    # The batch panel's input, lines queued: a batch held by its tenant's limit of one request
    # a minute. The worker samples the store's pending lines every few seconds, and a batch
    # that ends between two samples leaves no series at all. 30 lines at one a minute outlast
    # the module, so the cancel at its end finds the batch running.
    queued, queued_client = _one_request_a_minute_tenant(platform, store)
    held = queued_client.batches.create(
        input_file_id=upload(queued_client, [request_line(f"q{i}") for i in range(30)]),
        endpoint=ENDPOINT, completion_window="24h")
    acme, globex = openai_client(platform, keys["acme"]), openai_client(platform, keys["globex"])
    _send_round(platform, acme, globex)
    _until_scraped(prometheus, DENOMINATORS)
    time.sleep(float(INTERVAL.rstrip("s")))  # and one scrape more of the first round
    _send_round(platform, acme, globex)
    inside_one_minute_window(15)
    throttled_client.completions.create(model="demo-remote", prompt="hi", max_tokens=2)
    refused = httpx.post(platform["url"] + "/v1/completions", timeout=60,
                         headers={"authorization": f"Bearer {throttled_client.api_key}"},
                         json={"model": "demo-remote", "prompt": "hi", "max_tokens": 2})
    assert refused.status_code == 429
    _until_scraped(prometheus, [f'ray_aifactory_batch_lines_pending{{tenant="{queued}"}}'])
    yield {"tenants": {"acme", "globex", throttled}}
    queued_client.batches.cancel(held.id)


def test_prometheus_finds_every_ray_metrics_agent_and_tolerates_one_that_is_down(
        prometheus, traffic):
    deadline = time.monotonic() + DEADLINE_S
    while True:
        targets = query(prometheus, "up")["result"]
        by_instance = {t["metric"]["instance"]: t["value"][1] for t in targets}
        ray_up = [v for i, v in by_instance.items() if i != DOWN_TARGET]
        if ray_up and all(v == "1" for v in ray_up) and DOWN_TARGET in by_instance:
            break
        assert time.monotonic() < deadline, by_instance
        time.sleep(1)
    assert by_instance[DOWN_TARGET] == "0"
    # Every platform series arrived under the ray job, from the agents Ray listed.
    names = {r["metric"]["__name__"] for r in query(prometheus, '{__name__=~"ray_aifactory_.+"}')
             ["result"]}
    assert {"ray_aifactory_requests_total", "ray_aifactory_engine_generation_tokens_total"} <= names


def test_every_rule_and_dashboard_expression_parses_and_returns_data(prometheus, traffic):
    expressions = catalog()
    assert len(expressions) > 20
    # Alerts return series only while they fire (healthy traffic: none). Everything else has
    # its inputs here: two tenants' traffic, a 429, and the partition controller that
    # platform.yaml puts over demo-remote.
    must_return = [e for e in expressions if e.kind != "alert"]
    assert len(must_return) > 15
    deadline = time.monotonic() + DEADLINE_S
    pending = list(expressions)
    while True:
        empty = []
        for e in pending:
            data = query(prometheus, e.expr)  # asserts it parses and evaluates
            if e in must_return and not data["result"]:
                empty.append(e)
        if not empty:
            break
        assert time.monotonic() < deadline, [f"{e.kind} {e.name}: {e.expr}" for e in empty]
        pending = empty
        time.sleep(2)


def test_per_tenant_series_exist_for_the_tenants_that_sent_traffic(prometheus, traffic):
    # The traffic's last requests reach the recorded series after an export, a scrape and a
    # rule evaluation.
    deadline = time.monotonic() + DEADLINE_S
    while not traffic["tenants"] <= (tenants := {
            r["metric"]["tenant"]
            for r in query(prometheus, "tenant:aifactory_requests:rate5m")["result"]}):
        assert time.monotonic() < deadline, (traffic["tenants"], tenants)
        time.sleep(1)
    # A tenant that sent nothing has no series: absent, not a made-up zero.
    assert query(prometheus, 'ray_aifactory_requests_total{tenant="nobody"}')["result"] == []


def test_a_malformed_expression_is_refused_by_prometheus(prometheus):
    resp = httpx.get(prometheus["url"] + "/api/v1/query", params={"query": "sum by (tenant"},
                     timeout=30)
    assert resp.status_code == 400 and resp.json()["errorType"] == "bad_data"


def test_an_engine_restart_mid_batch_loses_no_line_and_keeps_scrapes_and_rules(
        prometheus, platform, store, keys, traffic):
    """Runs last in this module: the engine replica behind demo-remote dies mid-batch and
    Serve replaces it while Prometheus scrapes every 2 s (one engine restart for both
    checks; each costs a minute or two of CI).

    The batch loses no line and duplicates none: the lines the dead replica was answering
    are sent again (under the same request ids, nothing recorded for the failed attempt),
    and the batch completes with every line once in the output and one ok ledger record per
    line. Ray's metrics agents (the targets) stay up, no rule evaluation fails, and the new
    replica's engine series arrive."""
    replicas_before = {r["metric"]["replica"] for r in query(
        prometheus, 'ray_aifactory_engine_generation_tokens_total{endpoint="demo-remote"}')
        ["result"]}
    tenant, batch_client, batch, since = start_batch(platform, store)
    killed_at = time.time()
    kill_serve_replica("aifactory#engine-demo-remote#")
    at_kill = batch_client.batches.retrieve(batch.id)
    assert at_kill.status == "in_progress", at_kill  # else the kill proved nothing
    assert at_kill.request_counts.completed < BATCH_LINES

    # Held by Serve until the replacement is up; or, once the batch's held lines have shown
    # the endpoint's queue standing longer than globex's TTFT target, refused at once with a
    # retry-after (the endpoint's bound), which a client honours.
    client = openai_client(platform, keys["globex"]).with_options(timeout=300)
    deadline = time.monotonic() + 300
    while True:  # served by the replacement, and its series scraped
        try:
            reply = client.completions.create(model="demo-remote", prompt="hello", max_tokens=4,
                                              extra_body={"ignore_eos": True})
        except openai.InternalServerError as refused:
            assert refused.code == "endpoint_overloaded", refused
            assert time.monotonic() < deadline, refused
            time.sleep(float(refused.response.headers["retry-after"]))
            continue
        assert reply.usage.completion_tokens == 4
        replicas = {r["metric"]["replica"] for r in query(
            prometheus, 'ray_aifactory_engine_generation_tokens_total{endpoint="demo-remote"}')
            ["result"]}
        if replicas - replicas_before:
            break
        assert time.monotonic() < deadline, (replicas_before, replicas)
        time.sleep(2)

    window = f"{int(time.time() - killed_at) + 5}s"
    ray_targets = query(prometheus, f'min_over_time(up{{instance!="{DOWN_TARGET}"}}[{window}])')
    assert ray_targets["result"] and all(r["value"][1] == "1" for r in ray_targets["result"])
    # Prometheus's own counters (its /metrics; it does not scrape itself here).
    own = httpx.get(prometheus["url"] + "/metrics", timeout=30).text
    failures = [line for line in own.splitlines()
                if line.startswith("prometheus_rule_evaluation_failures_total")]
    assert failures and all(line.split()[-1] == "0" for line in failures), failures
    # The rules still evaluate to data after the restart.
    assert query(prometheus, "tenant:aifactory_requests:rate5m")["result"]

    assert_every_line_once(batch_client, store, tenant, batch, since)
