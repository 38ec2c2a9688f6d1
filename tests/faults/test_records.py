"""The ledger and the audit log: nothing runs while either is missing, unwritable or does
not verify, a deleted ledger is never recreated empty, and deleting the log with its head
does not verify as a fresh log."""

from __future__ import annotations

import shutil

import pytest

from datasites import start_site
from federation import DPQuery
from syft_policies import approve_request, list_requests

PLAN = {"study": "records", "queries": [{"name": "n", "kind": "count", "epsilon": 0.1}]}


@pytest.fixture(scope="module")
def hospital(tmp_path_factory, network_home, specs):
    home = tmp_path_factory.mktemp("records")
    spec = specs[1]
    shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    current = {"handle": start_site(spec, home)}  # a test that restarts the site puts the new handle here
    yield home, current
    current["handle"].stop()


def _query(handle, calls: int) -> DPQuery:
    query = DPQuery(PLAN, {handle.spec.name: handle.researcher()}, calls=calls, name="records_query")
    query.submit()
    officer = handle.officer()
    for request in list_requests(officer, status="pending"):
        if request.function == "records_query":
            approve_request(officer, request.id)
    return query


def _refused(query) -> str:
    with pytest.raises(RuntimeError) as caught:
        query.run()
    return str(caught.value)


def test_a_missing_ledger_stops_every_execution_and_is_not_recreated_by_a_restart(hospital):
    home, current = hospital
    handle = current["handle"]
    query = _query(handle, calls=4)
    query.run()  # the records are sound: it runs and pays
    ledger_file = handle.site_dir / "ledger.sqlite"
    spent = handle.ledger().spent(handle.spec.dataset_name)
    saved = ledger_file.read_bytes()
    ledger_file.unlink()
    message = _refused(query)
    assert "repairs its privacy records" in message and str(handle.site_dir) not in message
    assert not ledger_file.exists()  # the refusal did not recreate it empty
    handle.stop()
    handle = current["handle"] = start_site(handle.spec, home)  # provisioning does not either: it has a history
    assert not ledger_file.exists()
    assert "repairs its privacy records" in _refused(DPQuery(PLAN, {handle.spec.name: handle.researcher()},
                                                             name="records_query"))
    ledger_file.write_bytes(saved)  # restored from a backup: the history is back and code runs again
    assert handle.ledger().spent(handle.spec.dataset_name) == pytest.approx(spent)
    DPQuery(PLAN, {handle.spec.name: handle.researcher()}, name="records_query").run()
    assert handle.ledger().spent(handle.spec.dataset_name) == pytest.approx(spent + 0.1)


def test_an_unwritable_or_replaced_audit_log_stops_every_execution_before_any_debit(hospital):
    handle = hospital[1]["handle"]
    query = DPQuery(PLAN, {handle.spec.name: handle.researcher()}, name="records_query")
    audit, head = handle.site_dir / "audit.jsonl", handle.site_dir / "audit.head"
    spent = handle.ledger().spent(handle.spec.dataset_name)
    saved = audit.read_bytes(), head.read_bytes()
    audit.unlink()
    audit.mkdir()  # not a file one can append to (chmod alone does not stop root)
    assert "repairs its privacy records" in _refused(query)
    audit.rmdir()
    head.unlink()  # the log and its head both gone: the ledger's anchor still knows the log
    verdict = handle.audit().verify()
    assert not verdict.ok and "anchor" in verdict.problem
    assert "repairs its privacy records" in _refused(query)
    assert handle.ledger().spent(handle.spec.dataset_name) == pytest.approx(spent)  # nothing was paid
    audit.write_bytes(saved[0])
    head.write_bytes(saved[1])
    assert handle.audit().verify().ok
    query.run()
