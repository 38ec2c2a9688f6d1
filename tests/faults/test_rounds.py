"""Studies on a real network of HTTP datasites, each its own process, that die and hang.

- kill -9 one of three hospitals in the middle of a round (``min_sites=2``): the round
  finishes with the other two, the dead hospital's ledger equals its accountant, and after
  it returns the next round takes it back;
- kill -9 a hospital right after its debit commits (before the audit entry): the study
  stops (every site is needed), the hospital restarts, its start-up records the debit in
  the audit log, and the resumed round is not paid twice;
- freeze a hospital (SIGSTOP) past the plan's deadline: the round finishes without it and
  says so;
- put a fault-injecting proxy between the researcher and every hospital (100 ms on every
  chunk, 5% of connections reset): the study completes with every hospital in every round.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest

from datasites import load_spec, start_site
from datasites.isolation.mediator import FAULT_ENV, StudyStore
from datasites.spec import SPEC_DIR
from federation import Study, StudyPlan, StudyStopped
from syft_policies import approve_request, list_requests

COMMON = dict(rounds=3, epsilon=3.0, model="mlp", sample_rate=0.1, retries=1, evaluate_every=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory, network_home, specs):
    """Three HTTP datasites on their own ports, each in its own process."""
    root = tmp_path_factory.mktemp("faults")
    (root / "specs").mkdir()
    home = root / "home"
    out = {}
    for spec in specs:
        path = SPEC_DIR / f"{spec.name}.toml"
        text = path.read_text().replace(f"port = {spec.port}", f"port = {_free_port()}")
        (root / "specs" / path.name).write_text(text)
        out[spec.name] = load_spec(root / "specs" / path.name)
        shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    handles = {name: start_site(spec, home, mode="http") for name, spec in out.items()}
    for handle in handles.values():
        handle.ledger().set_budget(handle.spec.dataset_name, 100.0)
    yield home, handles
    for handle in handles.values():
        _resume_process(handle)
        handle.stop()


def _resume_process(handle) -> None:
    try:
        os.kill(_pid(handle), signal.SIGCONT)
    except (ProcessLookupError, FileNotFoundError, TypeError):
        pass


def _pid(handle) -> int:
    import json

    return int(json.loads((handle.site_dir / "server.json").read_text())["pid"])


def _restart(home, handle):
    return start_site(handle.spec, home, mode="http")


def _study(handles, directory, study, clients=None, **options):
    plan = StudyPlan(study=study, sites=sorted(handles), **{**COMMON, **options})
    clients = clients or {n: h.researcher() for n, h in handles.items()}
    s = Study(plan, clients, directory=directory, echo=print, progress=False)
    s.submit()
    prefix = study.replace("-", "_")
    for handle in handles.values():
        officer = handle.officer()
        for request in list_requests(officer, status="pending"):
            if request.function.startswith(prefix):
                approve_request(officer, request.id)
    s.wait_for_approvals()
    return s


def _accountant_epsilon(handle, study) -> float:
    state = StudyStore(handle.site_dir, handle.spec.researchers[0].email).load(study, "state") or {}
    return float(state.get("epsilon", 0.0))


def _paid(handle, study) -> float:
    return sum(d["epsilon"] for d in handle.ledger().history(handle.spec.dataset_name)
               if d["reference"].startswith(f"{study}/round-"))


class _KillsBeforeRound:
    """The researcher's client of one hospital; the hospital's server is killed (-9) just
    before the call of ``round_no``, in the middle of that round."""

    def __init__(self, client, handle, round_no):
        self._client, self._handle, self._round = client, handle, round_no

    def __getattr__(self, name):
        return getattr(self._client, name)

    @property
    def code(self):
        outer = self

        class Code:
            def __getattr__(self, function):
                call = getattr(outer._client.code, function)

                def run(*args, **inputs):
                    if (inputs.get("weights") or {}).get("~round") == outer._round:
                        os.kill(_pid(outer._handle), signal.SIGKILL)
                        time.sleep(0.5)
                    return call(*args, **inputs)
                return run
        return Code()


def test_a_site_killed_mid_round_is_left_out_and_rejoins(hospitals, tmp_path, capsys):
    home, handles = hospitals
    names = sorted(handles)
    victim = names[2]
    study = _study(handles, tmp_path / "dropout", "fault-dropout", min_sites=2)
    study.clients[victim] = _KillsBeforeRound(study.clients[victim], handles[victim], 2)
    first = study.run(rounds=2)
    assert [h["sites"] for h in first.history] == [names, names[:2]]
    assert victim in first.history[1]["dropped"] and first.history[1]["auroc"] is not None
    assert f"{victim} left out of round 2" in capsys.readouterr().out
    # the dead hospital paid for round 1 only, exactly what its accountant says
    assert _paid(handles[victim], "fault-dropout") == pytest.approx(_accountant_epsilon(handles[victim],
                                                                                        "fault-dropout"))
    handles[victim] = _restart(home, handles[victim])
    resumed = Study.resume(tmp_path / "dropout", {n: h.researcher() for n, h in handles.items()}, echo=print,
                           progress=False)
    result = resumed.run()
    assert result.history[-1]["round"] == 3 and result.history[-1]["sites"] == names  # back in round 3
    for name in names:
        assert _paid(handles[name], "fault-dropout") == pytest.approx(
            _accountant_epsilon(handles[name], "fault-dropout"))
        assert handles[name].audit().verify().ok


def test_a_crash_right_after_the_debit_is_not_paid_twice(hospitals, tmp_path, monkeypatch):
    home, handles = hospitals
    names = sorted(handles)
    victim = names[0]
    study = _study(handles, tmp_path / "crash", "fault-crash", rounds=2)
    handles[victim].stop()
    monkeypatch.setenv(FAULT_ENV, "crash-after-debit")
    handles[victim] = _restart(home, handles[victim])
    monkeypatch.delenv(FAULT_ENV)
    study.clients[victim] = handles[victim].researcher()
    with pytest.raises(StudyStopped, match="round 1 stopped"):
        study.run()
    paid = _paid(handles[victim], "fault-crash")
    assert paid > 0 and _accountant_epsilon(handles[victim], "fault-crash") == 0  # paid, never trained
    handles[victim] = _restart(home, handles[victim])  # start-up records the debit the crash left unaudited
    entries = [e for e in handles[victim].audit().entries() if e["event"] == "debited"
               and e.get("reference", "").startswith("fault-crash/round-1")]
    assert len(entries) == 1 and entries[0]["reconciled"] and handles[victim].audit().verify().ok
    resumed = Study.resume(tmp_path / "crash", {n: h.researcher() for n, h in handles.items()}, echo=print,
                           progress=False)
    result = resumed.run()
    assert [h["sites"] for h in result.history] == [names, names]
    for name in names:  # the crashed round was paid once: ledger and accountant agree everywhere
        assert _paid(handles[name], "fault-crash") == pytest.approx(_accountant_epsilon(handles[name], "fault-crash"))
    assert _paid(handles[victim], "fault-crash") == pytest.approx(_paid(handles[names[1]], "fault-crash"))


def test_a_frozen_site_misses_its_heartbeat_and_the_round_goes_on(hospitals, tmp_path, monkeypatch):
    import federation.study

    home, handles = hospitals
    names = sorted(handles)
    victim = names[1]
    monkeypatch.setattr(federation.study, "HEARTBEAT_SECONDS", 5.0)  # found in 5 s, not after the 600 s deadline
    study = _study(handles, tmp_path / "frozen", "fault-frozen", rounds=1, min_sites=2, deadline=600.0, retries=0)
    os.kill(_pid(handles[victim]), signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = study.run()
        took = time.monotonic() - started
    finally:
        os.kill(_pid(handles[victim]), signal.SIGCONT)
    assert result.history[0]["sites"] == [n for n in names if n != victim]
    assert f"{victim} did not answer a heartbeat in 5 s" in result.history[0]["dropped"][victim]
    assert took < 600  # the others' work and one heartbeat, not the call's deadline


def _login_through(handle, port: int, tries: int = 5):
    """The researcher's session to ``handle`` through the proxy on ``port`` (a login can meet a reset too)."""
    import dataclasses

    for attempt in range(tries):
        try:
            return dataclasses.replace(handle, port=port).researcher()
        except Exception:  # noqa: BLE001 - a reset connection during login: log in again
            if attempt == tries - 1:
                raise
            time.sleep(1)


def test_a_study_through_a_slow_lossy_network_completes_with_every_site(hospitals, tmp_path):
    from .proxy import FaultProxy

    _, handles = hospitals
    names = sorted(handles)
    proxies = {n: FaultProxy(handles[n].port, seed=i).start() for i, n in enumerate(names)}
    try:
        clients = {n: _login_through(handles[n], proxies[n].port) for n in names}
        for proxy in proxies.values():
            proxy.latency = 0.1
        started = time.monotonic()
        study = _study(handles, tmp_path / "lossy", "fault-lossy", clients=clients, rounds=1, retries=5)
        for proxy in proxies.values():  # resets during the rounds (a submission opens ~20 connections)
            proxy.reset_rate = 0.05
        result = study.run()
        took = time.monotonic() - started
    finally:
        for proxy in proxies.values():
            proxy.stop()
    assert [h["sites"] for h in result.history] == [names]
    assert all(h["dropped"] == {} for h in result.history) and result.auroc is not None
    connections = sum(p.connections for p in proxies.values())
    print(f"lossy network: {took:.0f} s, {connections} connections, {sum(p.resets for p in proxies.values())} reset")
    assert connections > 0
