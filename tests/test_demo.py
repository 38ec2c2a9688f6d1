"""The demo end to end (in-process): three hospitals, one approval and one denial each shown."""

from federation.demo import DENIAL_REASON, format_outcome, run_demo


def test_demo_walks_the_approval_loop(tmp_path):
    outcome = run_demo(tmp_path, n_patients=600, seed=3, echo=lambda *_: None)
    assert len(outcome["hospitals"]) == 3
    assert {h["region"] for h in outcome["hospitals"].values()} == {"EU", "US"}
    for name, approved in outcome["approved"].items():
        assert approved["result"]["icu_patients"] == outcome["hospitals"][name]["patients"]
    (denied,) = outcome["denied"].values()
    assert denied["status"] == "denied" and denied["reason"] == DENIAL_REASON
    text = format_outcome(outcome)
    assert "Denied request" in text and DENIAL_REASON in text
    again = run_demo(tmp_path, n_patients=600, seed=3, echo=lambda *_: None)  # re-runnable on the same home
    assert again["approved"] == outcome["approved"]
