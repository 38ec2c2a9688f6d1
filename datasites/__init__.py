"""One hospital = one Syft datasite: specs, data, launch, provisioning, vetted jobs."""

from .data import ensure_site_data
from .server import SiteHandle, connect, site_status, start_site, stop_site
from .spec import HospitalSpec, SpecError, load_spec, shipped_specs

__all__ = [
    "HospitalSpec", "load_spec", "shipped_specs", "SpecError", "ensure_site_data",
    "start_site", "stop_site", "site_status", "connect", "SiteHandle",
]
