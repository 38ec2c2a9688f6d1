"""``Study.wait_for_approvals`` on a real in-process datasite: it names the request ids the
researcher sends to the compliance officer, then follows the decisions as they arrive."""

from __future__ import annotations

import io
import threading
import time

import pytest

from federation import Study, StudyPlan, StudyStopped
from federation.study import _StatusLine
from syft_policies import approve_request, deny_request, list_requests


def _study(site, tmp_path, name: str, echo) -> Study:
    plan = StudyPlan(study=name, sites=[site.spec.name], model="mlp", rounds=1, epsilon=1.0, evaluate_every=0,
                     final_eval_epsilon=0.5)
    study = Study(plan, {site.spec.name: site.researcher()}, directory=tmp_path / name, echo=echo, progress=False)
    study.submit()
    return study


def _queue(site, study: Study) -> dict[str, str]:
    """The officer's view: function -> request id of this study's pending requests."""
    return {r.function: r.id for r in list_requests(site.officer())
            if r.function in (study.train_function, study.evaluate_function)}


def test_prints_the_real_request_ids_then_a_line_per_decision(site, tmp_path):
    lines: list[str] = []
    study = _study(site, tmp_path, "wait-ids", lines.append)
    queue = _queue(site, study)
    assert set(queue) == {study.train_function, study.evaluate_function}
    polls = []
    decisions = study._decisions
    study._decisions = lambda: polls.append(1) or decisions()

    def officer():  # decides a little later, one request at a time
        officer = site.officer()
        for function in (study.train_function, study.evaluate_function):
            time.sleep(1.5)
            approve_request(officer, queue[function])

    thread = threading.Thread(target=officer)
    thread.start()
    try:
        assert study.wait_for_approvals(timeout=120, poll=0.2) == [site.spec.name]
    finally:
        thread.join()
    assert "compliance officer" in lines[0]
    printed = {tuple(line.split()) for line in lines[1:3]}
    assert printed == {(site.spec.name, rid[:8], function, rid) for function, rid in queue.items()}
    status = [line for line in lines if "waiting" in line]
    assert [s.split(": ", 1)[1] for s in status] == [f"{site.spec.name} pending (0/2 approved)",
                                                     f"{site.spec.name} pending (1/2 approved)",
                                                     f"{site.spec.name} approved"]
    assert len(polls) >= len(status)  # a line per change, not per poll (how often it polls depends on the load)
    assert lines[-1].split() == [site.spec.name, "approved"]
    lines.clear()  # decided already: nothing to send, no status line
    assert study.wait_for_approvals(timeout=5, poll=0.2) == [site.spec.name] and len(lines) == 1


def test_timeout_and_denial_keep_their_errors(site, tmp_path):
    lines: list[str] = []
    study = _study(site, tmp_path, "wait-deny", lines.append)
    queue = _queue(site, study)
    with pytest.raises(StudyStopped, match="no decision after"):
        study.wait_for_approvals(timeout=0.5, poll=0.2)
    assert lines[-1].split()[-2:] == ["still", "pending"]
    officer = site.officer()
    for rid in queue.values():  # leave nothing pending on the shared site
        deny_request(officer, rid, reason="not this quarter")
    with pytest.raises(StudyStopped, match="not this quarter"):
        study.wait_for_approvals(timeout=5, poll=0.2)


def test_status_line_is_rewritten_in_place_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    line = _StatusLine(print)
    line.show("a pending (0/2 approved)", 3)
    line.show("a approved", 65)
    line.close()
    text = screen.getvalue()
    assert text.startswith("\r  waiting 0m03s: a pending") and "\r  waiting 1m05s: a approved" in text
    assert text.endswith("\n") and text.count("\n") == 1
    assert len(text.split("\r")[2].rstrip("\n")) == len(text.split("\r")[1])  # the longer line fully overwritten
