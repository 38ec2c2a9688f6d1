"""One hospital = one Syft datasite: specs, data, launch, provisioning, isolated execution.

Two halves that never mix: ``datasites.jobs`` is what runs inside the isolated worker
(the vetted jobs and their helpers; it imports nothing from the server side), and the
rest is the datasite's plumbing (launch, provisioning, Syft patches, the worker
supervisor in ``datasites.isolation``). Names load lazily, so the worker can import
``datasites.jobs`` without pulling in Syft.
"""

from importlib import import_module

__all__ = [
    "HospitalSpec", "load_spec", "shipped_specs", "SpecError", "ensure_site_data",
    "start_site", "stop_site", "site_status", "connect", "SiteHandle",
]

_WHERE = {"HospitalSpec": "spec", "load_spec": "spec", "shipped_specs": "spec", "SpecError": "spec",
          "ensure_site_data": "data", "start_site": "server", "stop_site": "server", "site_status": "server",
          "connect": "server", "SiteHandle": "server"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'datasites' has no attribute {name!r}")
