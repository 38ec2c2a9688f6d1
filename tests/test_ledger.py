"""The privacy-budget ledger: atomic under parallel processes, persistent, clear refusals."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from syft_policies.ledger import BudgetExceeded, BudgetLedger


def _spend(path, i):
    try:
        BudgetLedger(path).debit("icu", 1.0, reference=f"run-{i}")
        return True
    except BudgetExceeded:
        return False


def test_eight_parallel_executions_never_spend_more_than_the_budget(tmp_path):
    path = tmp_path / "ledger.sqlite"
    BudgetLedger(path).set_budget("icu", 5.0)
    with ProcessPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(_spend, [path] * 8, range(8)))
    ledger = BudgetLedger(path)
    assert sum(outcomes) == 5 and ledger.spent("icu") == pytest.approx(5.0)
    assert ledger.remaining("icu") == pytest.approx(0.0)
    with pytest.raises(BudgetExceeded, match="only 0.000 of 'icu'"):
        ledger.debit("icu", 0.01, reference="one more")


def test_ledger_persists_and_tracks_researchers(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = BudgetLedger(path)
    ledger.set_budget("icu", 10.0)
    ledger.set_budget("icu", 3.0, researcher="ada@x.example")
    ledger.debit("icu", 2.5, reference="a", researcher="ada@x.example")
    with pytest.raises(BudgetExceeded):
        ledger.debit("icu", 1.0, reference="b", researcher="ada@x.example")  # her cap, not the dataset's
    ledger.debit("icu", 4.0, reference="c", researcher="bob@x.example")
    again = BudgetLedger(path)  # a restart: same file, same balances
    assert again.remaining("icu") == pytest.approx(3.5)
    assert again.remaining("icu", researcher="ada@x.example") == pytest.approx(0.5)
    assert [d["reference"] for d in again.history("icu")] == ["a", "c"]
    again.ensure_budget("icu", 99.0)  # provisioning again does not reset a budget
    assert again.budget("icu") == 10.0
    with pytest.raises(BudgetExceeded, match="no privacy budget is set"):
        again.remaining("other")
    with pytest.raises(ValueError):
        again.debit("icu", -1.0, reference="refund")


def test_a_release_reference_is_paid_once(tmp_path):
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    ledger.set_budget("icu", 5.0)
    assert ledger.debit("icu", 1.0, reference="s/round-1 (request ab)", researcher="ada", once=True) == 4.0
    assert ledger.debit("icu", 1.0, reference="s/round-1 (request ab)", researcher="ada", once=True) == 4.0
    assert ledger.repeated and ledger.spent("icu") == 1.0
    ledger.debit("icu", 1.0, reference="s/round-1 (request ab)", researcher="bob", once=True)  # another's study
    ledger.debit("icu", 1.0, reference="s/query (request cd)", researcher="ada")  # repeated queries each pay
    ledger.debit("icu", 1.0, reference="s/query (request cd)", researcher="ada")
    assert ledger.spent("icu") == 4.0


def test_a_debit_without_its_audit_entry_is_recorded_at_start_up(tmp_path):
    """A crash between the ledger's commit and the audit entry leaves a paid, unrecorded
    debit; reconciling writes its entry (marked reconciled) and the chain still verifies."""
    from syft_policies.audit import AuditLog
    from syft_policies.reconcile import reconcile_debits

    ledger, audit = BudgetLedger(tmp_path / "ledger.sqlite"), AuditLog(tmp_path / "audit.jsonl")
    ledger.set_budget("icu", 5.0)
    ledger.debit("icu", 0.5, reference="s/round-1 (request ab)", researcher="ada", once=True)
    audit.append("debited", epsilon=0.5, reference="s/round-1 (request ab)", debits=ledger.debit_ids)
    ledger.debit("icu", 0.7, reference="s/round-2 (request ab)", researcher="ada", once=True)  # then: crash
    ledger.debit("icu", 0.1, reference="an experiment")  # not an execution's: left alone
    assert reconcile_debits(ledger, audit) == [2]
    assert reconcile_debits(ledger, audit) == []  # once
    entry = audit.entries()[-1]
    assert entry["reconciled"] and entry["epsilon"] == 0.7 and audit.verify().ok
    recorded = sum(e["epsilon"] for e in audit.entries() if e["event"] == "debited")
    assert recorded == pytest.approx(sum(d["epsilon"] for d in ledger.history() if "(request " in d["reference"]))
