"""Overload: the platform flooded at ten times what its engines take at once.

Starts the platform of the end-to-end tests (tests/e2e/platform.yaml: the colocated `demo`
endpoint and the `demo-remote` engine deployment, each with bounded queues), then floods
both for --seconds, --rounds times, with 10 x max_ongoing_requests clients per endpoint that
stream short completions and retry as soon as Retry-After allows (tests/flood.py, the
overload test's load generator). The load generator shares this machine with the platform.

Prints per endpoint and round: requests served and refused, refusal latency, served TTFT as
the clients saw it, the share of served requests within the default SLO's targets (TTFT and
ITL) as the clients saw it (`within_slo`) and as the platform's SLA report judges the round
from the ledger (`sla_compliance`, TTFT measured in the gateway); then how long after the
flood each endpoint answered a normal request. `--json` prints one object.
Usage: python benchmarks/overload.py [--rounds N] [--seconds S] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import yaml  # noqa: E402

from observability.sla import sla_report  # noqa: E402
from observability.slo import DEFAULT_SLO  # noqa: E402
from serving.tenancy import Store, default_database_url  # noqa: E402
from tests.flood import BODY, flood, summary  # noqa: E402
from tests.platform_helpers import running_platform  # noqa: E402

CONFIG = HERE.parent / "tests" / "e2e" / "platform.yaml"


def _free_port() -> int:
    """A port in 18100-18199 that is free with the next one (the gateway's direct-ingress
    range is [port, port + 2)), below the kernel's ephemeral range."""
    for port in range(18100, 18200, 2):
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free ports in 18100-18199")


def _normal_request_s(url: str, key: str, model: str) -> float:
    """Seconds until one normal request to model is served (retrying refusals)."""
    began = time.monotonic()
    request = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps({"model": model, **BODY}).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                if resp.status == 200:
                    return time.monotonic() - began
        except OSError:
            time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    config = yaml.safe_load(args.config.read_text())
    # A port of its own: closed connections of a flood linger in TIME_WAIT on the server's
    # port for a minute, and Serve then blocks that port for the next gateway started there
    # (a test platform right after this benchmark, or the other way round).
    server = config.setdefault("server", {})
    server["port"] = _free_port()
    url = f"http://{server.get('host', '127.0.0.1')}:{server['port']}"
    # Completion endpoints only: an embedding endpoint (vLLM's pooling runner) takes none.
    config["endpoints"] = [e for e in config["endpoints"]
                           if e.get("engine", {}).get("extra_args", {}).get("runner")
                           != "pooling"]
    bounds = {e["name"]: e.get("max_ongoing_requests", 256) for e in config["endpoints"]}
    owners = {e["name"]: e.get("owner") for e in config["endpoints"]}
    home = tempfile.mkdtemp(prefix="aifactory-overload-")
    env = {**os.environ, "AIFACTORY_HOME": home,
           "AIFACTORY_REDIS_URL": os.environ.get("AIFACTORY_REDIS_URL",
                                                 "redis://127.0.0.1:6379/0"),
           "AIFACTORY_REDIS_PREFIX": f"aifactory-overload-{uuid.uuid4().hex[:8]}"}
    env.pop("AIFACTORY_DATABASE_URL", None)

    config_file = Path(home) / "platform.yaml"
    config_file.write_text(yaml.safe_dump(config))
    platform = running_platform(config_file, env, url)
    next(platform)
    try:
        store = Store(default_database_url(Path(home)))
        keys, tenants = {}, {}
        for endpoint in bounds:  # the owner's key, or a new tenant granted a shared endpoint
            tenant = owners[endpoint]
            if tenant is None:
                tenant = f"overload-{endpoint}"
                store.create_tenant(tenant)
                store.grant(endpoint, tenant)
            keys[endpoint], tenants[endpoint] = store.create_key(tenant).plaintext, tenant
        for endpoint, key in keys.items():  # warm
            _normal_request_s(url, key, endpoint)

        rounds = []
        for number in range(args.rounds):
            until = time.monotonic() + args.seconds

            async def both(until: float = until) -> list:
                return await asyncio.gather(*(flood(url, keys[e], e, 10 * bounds[e], until)
                                              for e in bounds))

            since = datetime.now(UTC)
            results = asyncio.run(both())
            row = {e: {"clients": 10 * bounds[e], **summary(r, args.seconds)}
                   for e, r in zip(bounds, results)}
            for endpoint in bounds:  # as the platform's own SLA report judges the round
                records = [r for r in store.usage_records(
                    tenants[endpoint], since, datetime.now(UTC) + timedelta(minutes=1))
                    if r.endpoint == endpoint]
                sla = sla_report(records, tenant=tenants[endpoint], targets=DEFAULT_SLO,
                                 since=since, until=datetime.now(UTC) + timedelta(minutes=1))
                row[endpoint]["sla_compliance"] = (None if sla.compliance is None
                                                   else round(sla.compliance, 4))
            for endpoint, key in keys.items():
                row[endpoint]["recovered_s"] = round(_normal_request_s(url, key, endpoint), 2)
            rounds.append(row)
            time.sleep(3)  # the rounds' tails apart
        store.close()
    finally:
        next(platform, None)

    result = {"config": str(args.config), "seconds": args.seconds,
              "ttft_target_s": DEFAULT_SLO.ttft_p95_s, "itl_target_s": DEFAULT_SLO.itl_p95_s,
              "rounds": rounds}
    if args.json:
        print(json.dumps(result))
        return
    print(f"overload: 10 x max_ongoing_requests clients per endpoint for {args.seconds:g} s; "
          f"SLO: TTFT {DEFAULT_SLO.ttft_p95_s:g} s, ITL {DEFAULT_SLO.itl_p95_s:g} s")
    columns = ["clients", "served", "refused", "errors", "served_per_s", "refusal_p50_ms",
               "refusal_p95_ms", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "within_slo",
               "missed_ttft", "missed_itl", "sla_compliance", "recovered_s"]
    print(f"{'round':>5} {'endpoint':>12} " + " ".join(f"{c:>18}" for c in columns))
    for number, row in enumerate(rounds):
        for endpoint, cells in row.items():
            print(f"{number:>5} {endpoint:>12} "
                  + " ".join(f"{str(cells.get(c, '-')):>18}" for c in columns))


if __name__ == "__main__":
    main()
