"""A hospital under attack: one in-process datasite, a hostile researcher, careless officers.

Every attack here is custom code that two officers approved anyway (``approve_anyway``):
the point is what the *structure* (isolation, the release policy, the ledger, attempt
limits) stops after review has failed. The site runs with tight limits so that bombs
end in seconds.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import shutil

import pytest
import syft as sy

from federation import fetch_result, submit_request
from scratchnet import approve_anyway
from syft_policies.quiet import quiet
from syft_policies.release import ReleasePolicy

LIMITS = {"wall_seconds": 8.0, "cpu_seconds": 20, "memory_mb": 1024, "processes": 48}
_COUNT = itertools.count(1)


class Attacker:
    """The researcher's side: submit a function, have it approved, run it, see what came back."""

    def __init__(self, site):
        self.site = site
        self.ds = site.researcher()
        self.assets = {a.name: a for a in self.ds.datasets[site.spec.dataset_name].assets}
        self.cohort = self.assets.get("sepsis_cohort") or self.assets["axial_slices"]  # what a study reads
        self.names: dict[object, str] = {}  # each submission gets its own name (Syft refuses repeats)

    def submit(self, fn, *, limit: int = 3, approve: bool = True, **constants) -> str:
        params = list(inspect.signature(fn).parameters)
        bound = {}
        for p in params:
            if p in constants:
                bound[p] = sy.Constant(val=constants[p])
            elif p in self.assets:
                bound[p] = self.assets[p]
            elif p == "cohort":
                bound[p] = self.cohort
            else:
                bound[p] = dict
        self.names[fn] = f"{fn.__name__}_{next(_COUNT)}"
        with quiet():
            request = sy.syft_function(input_policy=sy.MixedInputPolicy(client=self.ds, **bound),
                                       output_policy=ReleasePolicy(limit=limit), name=self.names[fn])(fn)
        rid = submit_request(self.ds, request)
        if approve:
            approve_anyway(self.site, rid)
        return rid

    def inputs(self, fn, **values) -> dict:
        out = {}
        for p in inspect.signature(fn).parameters:
            if p in values:
                out[p] = values[p]
            elif p in self.assets:
                out[p] = self.assets[p]
            elif p == "cohort":
                out[p] = self.cohort
        return out

    def run(self, fn, **values):
        """``("released", value)`` or ``("refused", message)``."""
        try:
            return "released", fetch_result(self.ds, self.names[fn], **self.inputs(fn, **values))
        except RuntimeError as exc:
            return "refused", str(exc)

    def attack(self, fn, *, limit: int = 3, values: dict | None = None, **constants):
        self.submit(fn, limit=limit, **constants)
        return self.run(fn, **(values or {}))


@pytest.fixture(scope="session")
def hostile_site(tmp_path_factory, network_home, specs):
    from datasites import start_site

    spec = dataclasses.replace(specs[1], isolation=dict(LIMITS))
    home = tmp_path_factory.mktemp("attacked-home")
    shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    site = start_site(spec, home)
    yield site
    site.stop()


@pytest.fixture
def attacker(hostile_site):
    return Attacker(hostile_site)


def audited(site, name: str, event: str = "executed") -> list[dict]:
    """The site's audit entries of ``event`` for the request named ``name``."""
    return [e for e in site.audit().entries() if e["event"] == event and e.get("function") == name]
