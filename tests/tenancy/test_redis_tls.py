"""Shared counters on a Redis that wants TLS and a password (M6): the gateway's settings take
a `rediss://:password@host/db?ssl_ca_certs=...` URL as redis-py reads it, admission works
through it, and a wrong password or a plain connection is refused, never treated as empty
counters. A real redis-server with TLS, started for the test on a free port."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from deployments.app import TenancySettings
from serving.tenancy import Outcome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("redis-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    password, port = secrets.token_hex(16), free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
         "--tls-auth-clients", "no", "--requirepass", password, "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield {"url": url, "port": port, "password": password, "cert": cert, "client": client}
    server.terminate()
    server.wait(10)


def settings(database_url: str, redis_url: str) -> TenancySettings:
    return TenancySettings(database_url=database_url, redis_url=redis_url,
                           redis_prefix=f"tls-test:{secrets.token_hex(4)}")


async def test_admission_counts_on_a_tls_redis_with_a_password(tls_redis, tmp_path,
                                                               migrated_sqlite):
    path = tmp_path / "aifactory.db"
    shutil.copy(migrated_sqlite, path)
    tenancy = settings(f"sqlite:///{path}", tls_redis["url"])
    access = tenancy.connect()
    access.store.create_tenant("acme")
    access.store.create_endpoint("demo", owner="acme")
    access.store.set_quota("acme", requests_per_minute=2)
    principal = await access.authenticate(f"Bearer {access.store.create_key('acme').plaintext}")
    decisions = []
    for n in range(3):
        admitted = await access.admit(principal, "demo", f"r{n}", {"prompt": "hi"}, 64)
        decisions.append(admitted.decision.admitted)
        await access.finish(admitted, Outcome.OK if admitted.decision.admitted
                            else Outcome.REJECTED, 1, 1)
    assert decisions == [True, True, False]  # the window's count lives in the TLS Redis
    assert tls_redis["client"].keys(tenancy.redis_prefix + "*")


@pytest.mark.parametrize("wrong", ["password", "plain"])
async def test_a_wrong_password_or_no_tls_is_refused_not_read_as_empty(
        tls_redis, tmp_path, migrated_sqlite, wrong):
    path = tmp_path / "aifactory.db"
    shutil.copy(migrated_sqlite, path)
    url = (tls_redis["url"].replace(tls_redis["password"], "not-it") if wrong == "password"
           else f"redis://:{tls_redis['password']}@127.0.0.1:{tls_redis['port']}/0")
    access = settings(f"sqlite:///{path}", url).connect()
    access.store.create_tenant("acme")
    access.store.create_endpoint("demo", owner="acme")
    principal = await access.authenticate(f"Bearer {access.store.create_key('acme').plaintext}")
    with pytest.raises(redis.RedisError):
        await access.admit(principal, "demo", "r1", {"prompt": "hi"}, 64)
