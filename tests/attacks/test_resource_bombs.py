"""Attack: take the hospital down with a fork bomb, an endless loop or a memory bomb."""

from __future__ import annotations

import time

import pytest

from syft_policies.templates import medsyft_dp_prevalence

from .conftest import LIMITS, audited


def fork_bomb(cohort):
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass


def endless_loop(cohort):
    n = 0
    while True:
        n += 1


def memory_bomb(cohort):
    hoard = []
    while True:
        hoard.append(bytearray(64 * 2**20))


def one_huge_allocation(cohort):
    return len(bytearray(64 * 2**30))


def kill_the_worker(cohort):
    import os
    import signal
    os.kill(os.getppid(), signal.SIGKILL)  # the process that forks every execution
    os.kill(-1, signal.SIGKILL)


@pytest.mark.parametrize("bomb, expect", [(fork_bomb, "time limit"), (endless_loop, "time limit"),
                                          (memory_bomb, "memory, CPU or process limit"),
                                          (one_huge_allocation, "memory, CPU or process limit")])
def test_a_bomb_is_killed_and_the_site_keeps_serving(attacker, bomb, expect):
    site = attacker.site
    started = time.monotonic()
    outcome, message = attacker.attack(bomb)
    took = time.monotonic() - started
    assert outcome == "refused" and expect in message and "error id" in message, message
    assert took < LIMITS["wall_seconds"] + 30
    (entry,) = audited(site, attacker.names[bomb])
    assert entry["outcome"] in ("timeout", "limit")
    _site_still_runs_its_jobs(attacker)


def test_killing_the_worker_only_costs_a_restart(attacker):
    outcome, value = attacker.attack(kill_the_worker)
    assert (outcome, value) == ("released", None) or outcome == "refused"  # it got nothing either way
    _site_still_runs_its_jobs(attacker)
    _site_still_runs_its_jobs(attacker)


def _site_still_runs_its_jobs(attacker):
    site = attacker.site
    dataset = site.spec.dataset_name
    attacker.submit(medsyft_dp_prevalence, limit=1, plan={"study": "after-bomb", "dataset": dataset, "epsilon": 0.5})
    outcome, reply = attacker.run(medsyft_dp_prevalence)
    assert outcome == "released" and reply["epsilon"] == 0.5
