"""Hospital specs: one TOML file per hospital (three ship with medsyft)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from privacy.bounds import PlanBounds
from synthetic_data.profile import HospitalProfile, Location

__all__ = ["HospitalSpec", "Account", "load_spec", "shipped_specs", "SpecError", "CUSTOM_CODE_POLICIES"]

SPEC_DIR = Path(__file__).parent / "specs"
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
CUSTOM_CODE_POLICIES = ("deny", "two-person", "allow")
ISOLATION_KEYS = {"wall_seconds": float, "cpu_seconds": int, "memory_mb": int, "processes": int}


class SpecError(ValueError):
    """A hospital spec is incomplete or inconsistent; the message names the file and key."""


@dataclass(frozen=True)
class Account:
    name: str
    email: str
    institution: str = ""


@dataclass(frozen=True)
class HospitalSpec:
    name: str
    display_name: str
    region: str
    jurisdiction: str
    port: int
    admin: Account
    compliance_officer: Account
    researchers: tuple[Account, ...]
    dataset_name: str
    dataset_description: str
    profile: HospitalProfile
    epsilon_budget: float = 20.0  # the dataset's privacy budget at this site (all studies together)
    source: Path | None = None  # a real Synthea export to load instead of generated data
    custom_code: str = "two-person"  # [policy]: may code other than the site's templates be approved at all?
    isolation: dict = field(default_factory=dict)  # [isolation]: per-execution limits (see datasites.isolation)
    plan_bounds: PlanBounds = field(default_factory=PlanBounds)  # [policy]: bounds on every study plan
    imaging: str | None = None  # [imaging] profile: an imaging centre (brain MRI) instead of an ICU cohort
    imaging_cases: int = 200  # [imaging] cases: how many generated cases (when there is no source)
    console_port: int = 0  # [site] console_port: the compliance console (default: port + 1000; 0: any free port)
    path: Path | None = field(default=None, compare=False)

    @property
    def is_imaging(self) -> bool:
        return self.imaging is not None

    @property
    def env_prefix(self) -> str:
        return "MEDSYFT_" + self.name.upper().replace("-", "_")


def _get(data: dict, dotted: str, path: Path, kind=str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SpecError(f"{path}: missing key '{dotted}'")
        node = node[part]
    if kind is float and isinstance(node, int):
        node = float(node)
    if not isinstance(node, kind):
        raise SpecError(f"{path}: '{dotted}' must be {kind.__name__}, got {type(node).__name__}")
    return node


def _account(data: dict, key: str, path: Path) -> Account:
    return Account(_get(data, f"{key}.name", path), _get(data, f"{key}.email", path),
                   data.get(key, {}).get("institution", ""))


def load_spec(path: str | Path) -> HospitalSpec:
    """Read and check one hospital spec."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such hospital spec file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from exc
    name = _get(data, "site.name", path)
    if not _NAME.match(name):
        raise SpecError(f"{path}: site.name {name!r} must be lowercase letters, digits and '-' (2-41 chars)")
    region = _get(data, "site.region", path)
    jurisdiction = _get(data, "site.jurisdiction", path)
    if region not in ("EU", "US"):
        raise SpecError(f"{path}: site.region must be 'EU' or 'US', got {region!r}")
    if jurisdiction not in ("GDPR", "HIPAA"):
        raise SpecError(f"{path}: site.jurisdiction must be 'GDPR' or 'HIPAA', got {jurisdiction!r}")
    port = _get(data, "site.port", path, int)
    if not 1024 <= port <= 65535:
        raise SpecError(f"{path}: site.port must be between 1024 and 65535, got {port}")
    console_port = data["site"].get("console_port", port + 1000 if port + 1000 <= 65535 else 0)
    if isinstance(console_port, bool) or not isinstance(console_port, int) or not (
            console_port == 0 or 1024 <= console_port <= 65535) or console_port == port:
        raise SpecError(f"{path}: site.console_port must be 0 or a port from 1024 to 65535 other than site.port")
    researchers = tuple(Account(r["name"], r["email"], r.get("institution", "")) for r in data.get("researchers", []))
    c = data.get("cohort", {})
    try:
        profile = HospitalProfile(
            name=name,
            share=float(c.get("share", 1.0)),
            age_preference=float(c.get("age_preference", 0.0)),
            prevalence_odds=float(c.get("prevalence_odds", 1.0)),
            location=Location(c.get("city", "Boston"), c.get("state", "Massachusetts"), c.get("county", ""),
                              str(c.get("fips", "")), str(c.get("zip_prefix", "021")),
                              float(c.get("lat", 42.36)), float(c.get("lon", -71.06))),
            creatinine_unit=c.get("creatinine_unit", "mg/dL"),
            lactate_loinc=str(c.get("lactate_loinc", "2524-7")),
            spo2_offset=float(c.get("spo2_offset", 0.0)),
        )
    except ValueError as exc:
        raise SpecError(f"{path}: [cohort] {exc}") from exc
    source = data.get("dataset", {}).get("source")
    budget = data.get("dataset", {}).get("epsilon_budget", 20.0)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < float("inf"):
        raise SpecError(f"{path}: 'dataset.epsilon_budget' must be a positive number, got {budget!r}")
    policy = data.get("policy", {})
    custom_code = policy.get("custom_code", "two-person")
    if custom_code not in CUSTOM_CODE_POLICIES:
        raise SpecError(f"{path}: 'policy.custom_code' must be one of {', '.join(CUSTOM_CODE_POLICIES)}, "
                        f"got {custom_code!r}")
    bounds = {}
    for key, value in policy.items():
        if key == "custom_code":
            continue
        default = getattr(PlanBounds(), key, None)
        if default is None:
            raise SpecError(f"{path}: unknown key 'policy.{key}'; known: custom_code, {', '.join(PlanBounds.names())}")
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{path}: 'policy.{key}' must be a list of names")
            bounds[key] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6 or value != value:
            raise SpecError(f"{path}: 'policy.{key}' must be a finite, non-negative number")
        else:
            bounds[key] = type(default)(value)
    isolation = {}
    for key, value in data.get("isolation", {}).items():
        kind = ISOLATION_KEYS.get(key)
        if kind is None:
            raise SpecError(f"{path}: unknown key 'isolation.{key}'; known: {', '.join(ISOLATION_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6 or value != value:
            raise SpecError(f"{path}: 'isolation.{key}' must be a positive number")
        isolation[key] = kind(value)
    imaging = data.get("imaging")
    if imaging is not None:
        profile_name, cases = imaging.get("profile"), imaging.get("cases", 200)
        if not isinstance(profile_name, str) or not _NAME.match(profile_name):
            raise SpecError(f"{path}: 'imaging.profile' must name an imaging centre profile, e.g. \"centre-a\"")
        if isinstance(cases, bool) or not isinstance(cases, int) or not 20 <= cases <= 100_000:
            raise SpecError(f"{path}: 'imaging.cases' must be a whole number from 20 to 100000")
        imaging = (profile_name, cases)
    return HospitalSpec(
        name=name,
        display_name=data["site"].get("display_name", name),
        region=region,
        jurisdiction=jurisdiction,
        port=port,
        admin=_account(data, "admin", path),
        compliance_officer=_account(data, "compliance_officer", path),
        researchers=researchers,
        dataset_name=_get(data, "dataset.name", path),
        dataset_description=_get(data, "dataset.description", path).strip(),
        profile=profile,
        epsilon_budget=float(budget),
        source=(path.parent / source) if source else None,
        custom_code=custom_code,
        isolation=isolation,
        plan_bounds=PlanBounds(**bounds),
        imaging=imaging[0] if imaging else None,
        imaging_cases=imaging[1] if imaging else 200,
        console_port=console_port,
        path=path,
    )


def shipped_specs(directory: str | Path | None = None) -> list[HospitalSpec]:
    """Hospital specs in ``directory`` (default: ``$MEDSYFT_SPECS``, else the three that
    ship with medsyft), sorted by port."""
    import os

    directory = Path(directory or os.environ.get("MEDSYFT_SPECS") or SPEC_DIR)
    specs = sorted((load_spec(p) for p in directory.glob("*.toml")), key=lambda s: s.port)
    if not specs:
        raise SpecError(f"{directory}: no hospital spec (*.toml) found")
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or len({s.port for s in specs}) != len(specs):
        raise SpecError(f"{directory}: site names and ports must be unique")
    return specs
