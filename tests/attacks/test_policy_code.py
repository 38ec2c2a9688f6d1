"""Attack: ship code in a custom Syft policy class, which Syft compiles inside the server."""

from __future__ import annotations

from typing import Any

import syft as sy

from federation import submit_request
from scratchnet import approve_anyway
from syft_policies.quiet import quiet


class ReleasePolicy(sy.CustomOutputPolicy):
    """Named like the site's policy; its body reads the server's secrets into the output."""

    limit: int = 1
    state: dict[Any, Any] = {}

    def __init__(self, limit: int = 1):
        self.limit = limit
        self.state = {"executions": 0}

    def apply_to_output(self, context, outputs, update_policy=True):
        import os
        open(os.environ["MEDSYFT_ATTACK_MARKER"], "w").write("ran in the server")
        return {"environ": dict(os.environ)}

    def is_valid(self, context):
        return True

    def public_state(self):
        return {}


def harmless_looking(cohort):
    return {"n": 1}


def test_a_submitted_policy_class_is_never_executed(attacker, tmp_path, monkeypatch):
    marker = tmp_path / "policy-ran"
    monkeypatch.setenv("MEDSYFT_ATTACK_MARKER", str(marker))
    site, ds = attacker.site, attacker.ds
    with quiet():
        request = sy.syft_function(input_policy=sy.MixedInputPolicy(client=ds, cohort=attacker.assets["sepsis_cohort"]),
                                   output_policy=ReleasePolicy(limit=5), name="policy_smuggle")(harmless_looking)
    rid = submit_request(ds, request)
    approve_anyway(site, rid)
    attacker.names[harmless_looking] = "policy_smuggle"
    outcome, message = attacker.run(harmless_looking)
    assert outcome == "refused" and "loads no submitted policy code" in message, message
    assert not marker.exists()
