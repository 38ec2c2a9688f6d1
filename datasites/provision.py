"""Provision a hospital datasite: accounts, roles, settings, the dataset. Idempotent."""

from __future__ import annotations

from pathlib import Path

from synthetic_data import TABLES_DESCRIPTION, load_synthea

from .cohort_asset import COHORT_ASSET, SPLIT_SEED, cohort_frame
from .credentials import site_passwords
from .registry import LEDGER_FILE
from .data import mock_dir, private_dir
from syft_policies.quiet import quiet
from .spec import HospitalSpec

__all__ = ["provision"]

COHORT_DESCRIPTION = ("Analysis-ready ICU sepsis cohort, one row per patient: fixed train/test split, "
                      "label, 41 tabular features, 12 hourly values of 8 vitals and labs. No identifiers.")


def _register(admin, account, password: str, role=None) -> None:
    from syft.service.user.user_roles import ServiceRole

    existing = {u.email: u for u in admin.users}
    if account.email not in existing:
        result = admin.register(name=account.name, email=account.email, password=password,
                                password_verify=password, institution=account.institution or "")
        if type(result).__name__ == "SyftError":
            raise RuntimeError(f"could not register {account.email}: {result}")
        existing = {u.email: u for u in admin.users}
    if role is not None and existing[account.email].role != role:
        admin.users.update(uid=existing[account.email].id, role=role)
    if role is None and existing[account.email].role != ServiceRole.DATA_SCIENTIST:
        admin.users.update(uid=existing[account.email].id, role=ServiceRole.DATA_SCIENTIST)


BUDGET_ENDPOINT = "medsyft.budget"


def _add_budget_endpoint(admin, site_uid: str) -> None:
    """``medsyft.budget``: any signed-in user reads the privacy budget left to them, no approval needed.

    It returns the ledger's statement (numbers about the budget, never data); the
    researcher side calls it through ``federation.remaining_budget``.
    """
    import syft as sy

    if any(e.path == BUDGET_ENDPOINT for e in admin.custom_api.api_endpoints()):
        return

    @sy.api_endpoint(path=BUDGET_ENDPOINT, settings={"site_uid": site_uid},
                     description="The privacy budget (epsilon) of this site's datasets left to you.")
    def budget(context) -> list:
        from datasites.registry import site_of

        site = site_of(context.settings["site_uid"])
        return [] if site is None else site.ledger().statement(researcher=str(context.user.email))

    result = admin.custom_api.add(endpoint=budget)
    if type(result).__name__ == "SyftError":
        raise RuntimeError(f"could not add the {BUDGET_ENDPOINT} endpoint: {result}")


def provision(server, spec: HospitalSpec, site_dir: Path, *, icu_dataset: bool = True) -> None:
    """Make the datasite match the spec: no guest sign-up, officer and researcher
    accounts with their roles, and the dataset with private data plus its mock twin.

    The private export and the mock are both loaded and validated before anything is
    uploaded, so a broken export leaves the datasite without a half-written dataset.
    """
    import syft as sy
    from syft.service.user.user_roles import ServiceRole

    from syft_policies.ledger import BudgetLedger

    home = site_dir.parent
    from syft_policies.reconcile import ledger_may_be_created

    if (site_dir / LEDGER_FILE).exists() or ledger_may_be_created(site_dir):
        BudgetLedger(site_dir / LEDGER_FILE).ensure_budget(spec.dataset_name, spec.epsilon_budget)
    # else: the ledger of a site with a history is gone; executions refuse until it is restored
    passwords = site_passwords(spec, site_dir)
    with quiet():
        admin = server.get_guest_client(verbose=False).login(email=spec.admin.email,
                                                             password=passwords[spec.admin.email])
        admin.settings.allow_guest_signup(enable=False)
        _register(admin, spec.compliance_officer, passwords[spec.compliance_officer.email], ServiceRole.DATA_OWNER)
        for r in spec.researchers:
            _register(admin, r, passwords[r.email])
        _add_budget_endpoint(admin, server.id.no_dash)
        if not icu_dataset or spec.dataset_name in [d.name for d in admin.datasets]:
            return
    if spec.is_imaging:
        _publish(admin, spec, [_imaging_asset(spec, home)])
        return
    private = load_synthea(private_dir(home, spec.name))
    mock = load_synthea(mock_dir(home, spec.name))
    assets = [sy.Asset(name=table, description=TABLES_DESCRIPTION[table], data=private[table],
                       mock=mock[table], mock_is_real=False) for table in private.tables]
    assets.append(sy.Asset(
        name=COHORT_ASSET, description=COHORT_DESCRIPTION, mock_is_real=False,
        data=cohort_frame(private, site_uid=server.id.no_dash, seed=SPLIT_SEED),
        mock=cohort_frame(mock, site_uid="mock", seed=SPLIT_SEED)))
    _publish(admin, spec, assets)


def _imaging_asset(spec: HospitalSpec, home: Path):
    """The imaging centre's one asset: axial slices with their mock twin (loaded and checked
    before anything is uploaded)."""
    import syft as sy

    from .imaging_asset import IMAGING_ASSET, IMAGING_DESCRIPTION, imaging_asset

    return sy.Asset(name=IMAGING_ASSET, description=IMAGING_DESCRIPTION, mock_is_real=False,
                    data=imaging_asset(private_dir(home, spec.name)), mock=imaging_asset(mock_dir(home, spec.name)))


def _publish(admin, spec: HospitalSpec, assets: list) -> None:
    import syft as sy

    dataset = sy.Dataset(name=spec.dataset_name, description=spec.dataset_description, asset_list=assets)
    with quiet():
        result = admin.upload_dataset(dataset)
    if type(result).__name__ == "SyftError":
        raise RuntimeError(f"uploading {spec.dataset_name} to {spec.name} failed: {result}")
