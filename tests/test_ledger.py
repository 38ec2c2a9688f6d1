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
