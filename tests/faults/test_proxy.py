"""The fault-injecting proxy: against a trivial HTTP server, then against a real HTTP datasite."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
import time

import pytest

from .proxy import FaultProxy

BODY = b"hello through the proxy\n" * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web():
    """A trivial HTTP server on loopback that counts the requests it served."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hits = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    out = fn(*args, **kwargs)
    return out, time.monotonic() - started


def test_passes_bytes_through_and_counts_them(web):
    with FaultProxy(web.server_port) as proxy:
        assert proxy.address == ("127.0.0.1", proxy.port) and proxy.url == f"http://127.0.0.1:{proxy.port}"
        assert _get(proxy.port) == (200, BODY)
        assert proxy.connections == 1 and proxy.bytes_down > len(BODY) and proxy.bytes_up > 0
        assert proxy.resets == 0 and proxy.dropped == 0
    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens any more
        _get(proxy.port, timeout=2)


def test_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        FaultProxy(80, target_host="10.0.0.1")
    with pytest.raises(RuntimeError, match="not running"):
        FaultProxy(80).partition = "hang"


def test_latency_per_chunk_and_per_connection_changes_while_running(web):
    with FaultProxy(web.server_port) as proxy:
        assert _timed(_get, proxy.port)[1] < 0.5
        proxy.latency = 0.3  # the request and at least one reply chunk each wait
        (status, body), took = _timed(_get, proxy.port)
        assert (status, body) == (200, BODY) and took >= 0.6
        proxy.latency = 0.0
        proxy.connect_latency = 0.5
        assert _timed(_get, proxy.port)[1] >= 0.5
        proxy.heal()
        assert _timed(_get, proxy.port)[1] < 0.5


def test_resets_before_the_request_or_after_the_work(web):
    with FaultProxy(web.server_port, seed=1) as proxy:
        proxy.reset_rate = 1.0
        hits = web.hits
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            _get(proxy.port)
        assert web.hits == hits and proxy.resets == 1  # the request never reached the server

        proxy.reset_on = "response"
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            _get(proxy.port)
        time.sleep(0.2)
        assert web.hits == hits + 1 and proxy.resets == 2  # the server did the work; the reply was lost

        proxy.reset_rate = 0.5
        outcomes = []
        for _ in range(40):
            try:
                outcomes.append(_get(proxy.port) == (200, BODY))
            except (ConnectionResetError, http.client.RemoteDisconnected):
                outcomes.append(False)
        assert 5 < outcomes.count(False) < 35 and outcomes.count(False) == proxy.resets - 2
        with pytest.raises(ValueError):
            proxy.reset_on = "sometimes"


def test_partition_refuse_then_heal_on_the_same_port(web):
    with FaultProxy(web.server_port) as proxy:
        port = proxy.port
        proxy.partition = "refuse"
        assert proxy.address is None
        with pytest.raises(ConnectionRefusedError):
            _get(port, timeout=2)
        proxy.partition = None
        assert proxy.port == port and _get(port) == (200, BODY)


def test_partition_hang_is_a_black_hole_until_it_heals(web):
    with FaultProxy(web.server_port) as proxy:
        proxy.partition = "hang"
        hits = web.hits
        with pytest.raises((socket.timeout, TimeoutError)):
            _get(proxy.port, timeout=0.8)  # connected, never answered
        assert web.hits == hits and proxy.dropped > 0
        proxy.partition = None
        assert _get(proxy.port) == (200, BODY)


def test_freeze_holds_the_bytes_and_delivers_them_on_thaw(web):
    with FaultProxy(web.server_port) as proxy:
        proxy.freeze = True
        got = {}
        worker = threading.Thread(target=lambda: got.update(reply=_get(proxy.port, timeout=20)))
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not got  # held, not lost
        proxy.freeze = False
        worker.join(10)
        assert got["reply"] == (200, BODY) and proxy.dropped == 0


# --- a real datasite behind the proxy ----------------------------------------------------------


def _metadata(port: int, timeout: float) -> dict:
    status, body = _get(port, "/api/v2/metadata", timeout=timeout)
    assert status == 200
    return json.loads(body)


def test_a_real_datasite_through_the_proxy(datasite):
    import syft as sy

    from datasites.credentials import site_passwords
    from syft_policies.quiet import quiet

    spec = datasite.spec
    email = spec.researchers[0].email
    password = site_passwords(spec, datasite.site_dir)[email]
    with FaultProxy(datasite.port) as proxy:
        proxy.latency = 0.02
        with quiet():
            ds = sy.login(url="http://127.0.0.1", port=proxy.port, email=email, password=password)
            assert [d.name for d in ds.datasets] == [spec.dataset_name]
        assert proxy.connections >= 1 and proxy.bytes_down > 1000
        assert _metadata(proxy.port, 5)["name"] == spec.name

        proxy.freeze = True  # a frozen link: the metadata request times out, the bytes wait
        with pytest.raises((socket.timeout, TimeoutError)):
            _metadata(proxy.port, 1.0)
        got = {}
        worker = threading.Thread(target=lambda: got.update(names=[d.name for d in ds.datasets]))
        with quiet():
            worker.start()
            worker.join(1.5)
            assert worker.is_alive()
            proxy.freeze = False
            worker.join(30)
        assert got["names"] == [spec.dataset_name]  # nothing lost: it just took longer

        proxy.partition = "refuse"  # the site is cut off: a new login fails fast, with a connection error
        with quiet(), pytest.raises(Exception) as caught:
            sy.login(url="http://127.0.0.1", port=proxy.port, email=email, password=password)
        assert "onnection" in f"{type(caught.value).__name__} {caught.value}"
        proxy.partition = None
        with quiet():
            assert [d.name for d in ds.datasets] == [spec.dataset_name]  # healed: the same client works

        proxy.reset_rate, proxy.reset_on = 1.0, "response"  # every reply lost after the site did the work
        with pytest.raises((socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException)):
            _metadata(proxy.port, 5)
        proxy.heal()
        assert _metadata(proxy.port, 5)["name"] == spec.name
