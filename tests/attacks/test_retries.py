"""Attack: probe the release policy and the error path in a loop (blocked runs used to be free)."""

from __future__ import annotations

import re

from .conftest import audited


def probe_one_row(cohort, row):
    """Ask for one patient's record at a time; blocked each time, the attacker tries again."""
    return cohort.iloc[row["i"]:row["i"] + 1]


def test_blocked_attempts_count_and_back_off(attacker, monkeypatch):
    """Two blocked tries are free, then the site makes the attacker wait, twice as long after
    each further failure. (The waits are set long here, so a slow machine cannot let an
    attempt slip through between two calls.)"""
    from datasites.isolation import attempts as policy

    site = attacker.site
    monkeypatch.setattr(policy, "FIRST_WAIT", 30.0)
    attacker.submit(probe_one_row, limit=50)
    outcomes = [attacker.run(probe_one_row, row={"i": i}) for i in range(8)]
    name = attacker.names[probe_one_row]
    ran = audited(site, name)
    refused = audited(site, name, "refused")
    assert all(kind == "refused" for kind, _ in outcomes)
    assert len(ran) == 2 and all(e["outcome"] == "blocked" for e in ran)  # two free tries, then back off
    assert len(refused) == 6 and all("try again in" in e["reason"] for e in refused)
    assert all("release policy" in message for _, message in outcomes[:2])
    assert all("blocked or failed attempts in a row" in message for _, message in outcomes[2:])
    monkeypatch.setattr(policy, "FIRST_WAIT", 0.01)  # the wait is over: one more attempt runs (blocked)
    assert "release policy" in attacker.run(probe_one_row, row={"i": 9})[1]
    monkeypatch.setattr(policy, "FIRST_WAIT", 30.0)  # a third failure in a row: the wait doubles to 60 s
    assert re.search(r"try again in (5\d|60) s", attacker.run(probe_one_row, row={"i": 10})[1])
    attempts = site.executions().attempts(ran[0]["code"])
    assert [a["outcome"] for a in attempts] == ["blocked"] * 3  # refused ones never reached a worker


def fail_on_purpose(cohort):
    raise RuntimeError("does this cost anything?")


def test_failed_and_blocked_attempts_use_up_the_execution_limit(attacker):
    attacker.submit(fail_on_purpose, limit=2)
    first = attacker.run(fail_on_purpose)
    second = attacker.run(fail_on_purpose)
    third = attacker.run(fail_on_purpose)
    assert "error id" in first[1] and "error id" in second[1]
    assert "allows 2 execution(s) and all are used" in third[1]
