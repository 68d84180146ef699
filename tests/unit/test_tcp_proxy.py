"""The store-outage test's relay: once cut, it takes no connection at all (an accept() already
waiting must not take one more), and restored it relays again."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.tcp_proxy import CuttableProxy


@pytest.fixture
def echo_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda: [conn.sendall(d) for d in
                                             iter(lambda: conn.recv(100), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()
    server.close()


def echoed(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(data)
        return conn.recv(100)


def test_cut_refuses_and_breaks_connections_and_restore_relays_again(echo_server):
    proxy = CuttableProxy(echo_server)
    open_before = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    open_before.sendall(b"a")
    assert open_before.recv(100) == b"a"
    time.sleep(0.1)  # the relay's accept thread is waiting again

    proxy.cut()
    assert open_before.recv(100) == b""  # broken
    with pytest.raises(OSError):
        echoed(proxy.port, b"b")

    proxy.restore()
    assert echoed(proxy.port, b"c") == b"c"
    proxy.cut()
