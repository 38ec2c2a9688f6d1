"""Attack: carry data out through errors, refusals and the worker's own protocol."""

from __future__ import annotations

from datasites.data import private_dir
from synthetic_data import load_synthea

from .conftest import audited


def leak_in_an_exception(patients):
    raise ValueError("rows: " + patients.head(3).to_json())


def leak_in_a_failing_conversion(patients):
    return int(patients["FIRST"].iloc[0])  # ValueError: invalid literal for int() with base 10: '<a name>'


def leak_as_a_site_refusal(patients):
    from datasites.jobs.site import Refused
    raise Refused("budget exhausted; ids " + ",".join(patients["Id"].head(5)))


def leak_in_a_forged_reply(patients):
    """Speak the worker protocol directly: claim the site refused, with data as the reason."""
    from datasites.jobs import wire
    from datasites.jobs.site import hospital

    names = ",".join(patients["FIRST"].head(5))
    wire.send(hospital().sock, wire.dumps({"op": "refused", "message": names}))
    return None


def break_the_protocol(patients):
    from datasites.jobs import wire
    from datasites.jobs.site import hospital

    wire.send(hospital().sock, b"\x00\x00\x00\x10not json" + patients["SSN"].head(3).str.cat().encode())
    return None


def test_errors_and_refusals_from_submitted_code_carry_no_data(attacker):
    site = attacker.site
    patients = load_synthea(private_dir(site.site_dir.parent, site.spec.name))["patients"]
    secrets = set(patients["FIRST"].head(5)) | set(patients["Id"].head(5)) | set(patients["SSN"].head(3))
    for attack in (leak_in_an_exception, leak_in_a_failing_conversion, leak_as_a_site_refusal,
                   leak_in_a_forged_reply, break_the_protocol):
        outcome, message = attacker.attack(attack)
        assert outcome == "refused", (attack.__name__, message)
        assert "error id" in message, (attack.__name__, message)
        assert not any(s in message for s in secrets), (attack.__name__, message)
        (entry,) = audited(site, attacker.names[attack])
        assert entry["outcome"] in ("error", "crashed") and entry["error_id"] in message
        assert not any(s in str(entry) for s in secrets)  # nor in the audit log
    log = (site.site_dir / "logs" / "executions.log").read_text()
    assert "invalid literal" in log  # the detail is the hospital's, in its own log


def read_another_study(cohort):
    from datasites.jobs.site import hospital

    site = hospital()
    out = {}
    for name, ask in (("load", lambda: site.load("victim-study", "state")),
                      ("save", lambda: site.save("victim-study", "state", {"rounds_done": 0, "epsilon": 0.0})),
                      ("sign", lambda: site.sign(b"a contribution the site never made")),
                      ("negative debit", lambda: site.debit(-5.0, reference="refund")),
                      ("nan debit", lambda: site.debit(float("nan"), reference="nothing")),
                      ("path escape", lambda: site.load("../../db", "state"))):
        try:
            out[name] = repr(ask())[:40]
        except Exception as exc:  # noqa: BLE001
            out[name] = type(exc).__name__
    return out


def test_custom_code_gets_no_study_state_signatures_or_refunds(attacker):
    outcome, asked = attacker.attack(read_another_study)
    assert outcome == "released"
    assert set(asked.values()) <= {"Refused", "ValueError"}, asked
