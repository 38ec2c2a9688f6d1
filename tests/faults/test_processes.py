"""One server per site, and `medsyft sites up / down / status` telling the truth about it.

Real HTTP datasites in their own processes, driven through the real `medsyft` command (each
call its own process): two racing `sites up`, a second `up` on a running site, a second
server on a served folder, a port another site already uses, a frozen server (SIGSTOP) and a
killed one (SIGKILL). The tests share one hospital and run in order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasites import site_status, start_site, stop_site

MEDSYFT = [sys.executable, "-m", "federation.cli"]
REPO = Path(__file__).resolve().parents[2]


def medsyft(*args: str, env: dict, code: int = 0) -> str:
    """Run the real command; everything it printed (stdout then stderr)."""
    done = subprocess.run([*MEDSYFT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == code, f"medsyft {' '.join(args)} exited {done.returncode}:\n{out}"
    assert "Traceback" not in out
    return out


def servers(home: Path) -> list[int]:
    """Pids of the live `datasites.serve` processes serving ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"datasites.serve" in args and str(Path(home).resolve()).encode() in args and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def answering(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def server_pid(home: Path, site: str) -> int:
    return json.loads((home / site / "server.json").read_text())["pid"]


def _cleanup(spec, home) -> None:
    for pid in servers(home):  # a frozen one must be able to stop
        os.kill(pid, signal.SIGCONT)
    try:
        stop_site(spec, home)
    finally:
        for pid in servers(home):  # only ever processes these tests started
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def boston(make_home):
    spec, home, env = make_home("boston-general")
    yield spec, home, env
    _cleanup(spec, home)


@pytest.fixture(scope="module")
def lyon_on_bostons_port(make_home, boston):
    """Another hospital, in its own home, whose spec names the port boston-general serves on."""
    spec, home, env = make_home("lyon-chu", port=boston[0].port)
    yield spec, home, env
    _cleanup(spec, home)


def test_two_racing_ups_start_exactly_one_server(boston):
    spec, home, env = boston
    racers = [subprocess.Popen([*MEDSYFT, "sites", "up"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [r.communicate(timeout=300)[0] for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outs
    started = [o for o in outs if re.search(rf"{spec.name} +started at http://127.0.0.1:{spec.port} \(pid \d+;", o)]
    already = [o for o in outs if re.search(rf"{spec.name} +already running at http://127.0.0.1:{spec.port} "
                                            rf"\(pid \d+\)", o)]
    assert len(started) == 1 and len(already) == 1, outs
    pids = {int(re.search(r"\(pid (\d+)", o).group(1)) for o in outs}
    assert pids == set(servers(home)) and len(pids) == 1  # both name the one server there is
    pid = pids.pop()
    assert server_pid(home, spec.name) == pid
    status = medsyft("sites", "status", env=env)
    assert re.search(rf"{spec.name} +US/HIPAA +running +http://127.0.0.1:{spec.port} \(pid {pid}\)", status), status


def test_a_second_up_reports_the_running_server(boston):
    spec, home, env = boston
    [pid] = servers(home)
    out = medsyft("sites", "up", env=env)
    assert f"already running at http://127.0.0.1:{spec.port} (pid {pid})" in out
    assert servers(home) == [pid]


def test_a_second_server_on_the_same_folder_refuses_to_start(boston, make_home):
    spec, home, env = boston
    [pid] = servers(home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other_port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "datasites.serve", "--spec", str(spec.path), "--home", str(home),
                           "--port", str(other_port)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 3 and len(lines) == 1, lines
    assert f"already served by pid {pid}" in lines[0] and f"medsyft sites down --site {spec.name}" in lines[0]
    assert not answering(other_port) and servers(home) == [pid]
    with pytest.raises(RuntimeError, match=f"served over HTTP by pid {pid}"):  # nor in-process on the same folder
        start_site(spec, home)
    assert site_status(spec, home)["state"] == "running"


def test_a_port_used_by_another_site_is_reported_as_such(boston, lyon_on_bostons_port):
    spec, home, env = boston
    lyon, lyon_home, lyon_env = lyon_on_bostons_port
    port = spec.port
    taken = f"port {port} is used by another server (datasite {spec.name} (id "
    status = medsyft("sites", "status", env=lyon_env)
    assert re.search(rf"{lyon.name} +EU/GDPR +port taken +{re.escape(taken)}", status), status
    assert "running" not in status
    out = medsyft("sites", "up", env=lyon_env, code=1)
    assert len(out.strip().splitlines()) == 1 and f"{lyon.name}" in out and "error:" in out and taken in out, out
    # its server itself takes the port before provisioning: it gives up at once, naming the port
    done = subprocess.run([sys.executable, "-m", "datasites.serve", "--spec", str(lyon.path), "--home", str(lyon_home),
                           "--port", str(port)], env=lyon_env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and f"cannot listen on port {port}" in done.stderr, done.stderr
    assert not (lyon_home / lyon.name / "site.json").exists() and not (lyon_home / lyon.name / "server.json").exists()
    assert servers(lyon_home) == [] and site_status(spec, home)["state"] == "running"
    # the same hospital's name in another home is not this site either: the id differs
    same_name = site_status(spec, lyon_home.parent / "elsewhere")
    assert same_name["state"] == "port-taken" and spec.name in same_name["message"]


def test_down_stops_the_server_and_frees_the_port(boston):
    spec, home, env = boston
    [pid] = servers(home)
    out = medsyft("sites", "down", env=env)
    assert re.search(rf"{spec.name} +stopped \(pid {pid}\); port {spec.port} is free", out), out
    assert servers(home) == [] and not answering(spec.port) and not (home / spec.name / "server.json").exists()
    assert re.search(rf"{spec.name} +US/HIPAA +not running +-", medsyft("sites", "status", env=env))
    assert "was not running" in medsyft("sites", "down", env=env)
    assert "started at" in medsyft("sites", "up", env=env)  # for the next tests


def test_a_frozen_server_is_unresponsive_and_the_advice_works(boston):
    spec, home, env = boston
    [pid] = servers(home)
    advice = f"`medsyft sites down --site {spec.name}` then `medsyft sites up --site {spec.name}`"
    os.kill(pid, signal.SIGSTOP)
    try:
        status = medsyft("sites", "status", env=env)
        assert re.search(rf"{spec.name} +US/HIPAA +unresponsive +\(pid {pid}; no answer on port {spec.port} "
                         rf"within 3 s\): {re.escape(advice)}", status), status
        out = medsyft("sites", "up", env=env, code=1)  # never a second server on the same state
        assert f"unresponsive (pid {pid}" in out and advice in out and servers(home) == [pid]
        out = medsyft("review", "list", "--site", spec.name, env=env, code=1)
        assert advice in out and "not running" not in out
        out = medsyft("sites", "down", env=env)  # what the advice says, on the frozen server itself
    finally:
        if pid in servers(home):
            os.kill(pid, signal.SIGCONT)
    assert re.search(rf"{spec.name} +stopped \(pid {pid}(, killed after \d+ s)?\); port {spec.port} is free", out), out
    assert servers(home) == [] and not answering(spec.port)
    out = medsyft("sites", "up", env=env)
    assert "started at" in out and f"pid {pid}" not in out


def test_a_killed_server_is_not_running_and_cleaned(boston):
    spec, home, env = boston
    [pid] = servers(home)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while servers(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (home / spec.name / "server.json").exists()  # left behind
    status = medsyft("sites", "status", env=env)
    assert re.search(rf"{spec.name} +US/HIPAA +not running +\(removed the server.json left by pid {pid}\)",
                     status), status
    assert not (home / spec.name / "server.json").exists() and not answering(spec.port)
    assert re.search(rf"{spec.name} +US/HIPAA +not running +-", medsyft("sites", "status", env=env))
    assert "was not running" in medsyft("sites", "down", env=env)
