"""The oncology RWE research asset: a raw hospital extract, de-identified for analysis.

Same meta columns as the sepsis cohort (``site_uid``, ``split``, ``label`` = objective
response), so the vetted jobs (``dp_train``, ``secure_train``, ``evaluate``) serve it with
the ``rwe_logreg`` model; the analytics job reads the biomarker and treatment columns.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from synthetic_data.oncology import BIOMARKERS

from .deidentify import drop_direct_identifiers, shift_dates, top_code_age, year_only
from .jobs.rwe import RWE_FEATURES, RWE_SCHEMA

__all__ = ["RWE_ASSET", "RWE_DATASET", "RWE_FEATURES", "rwe_frame", "RWE_SCHEMA"]

RWE_ASSET = "rwe_cohort"
RWE_DATASET = "oncology-rwe"
TEST_FRACTION = 0.25


def rwe_frame(raw: pd.DataFrame, *, site_uid: str, secret: bytes, seed: int = 0) -> pd.DataFrame:
    """De-identify ``raw`` (drop direct identifiers and the note, shift dates per patient, keep
    years only, top-code age) and add the meta columns; float32 features like the sepsis cohort."""
    shifted = shift_dates(raw, ["birth_date", "diagnosis_date", "treatment_start"], patient="mrn", secret=secret)
    shifted = shifted.drop(columns=["birth_date", "treatment_start"])
    clean = year_only(top_code_age(drop_direct_identifiers(shifted.drop(columns=["zip"]))), ["diagnosis_date"])
    rng = np.random.default_rng(seed)
    split = np.where(rng.random(len(clean)) < TEST_FRACTION, "test", "train")
    features = pd.DataFrame({
        "age": clean["age"].astype("float32"), "male": (clean["sex"] == "M").astype("float32"),
        "stage": clean["stage"].astype("float32"),
        **{m: clean[m].astype("float32") for m in BIOMARKERS},
        "treated": (clean["treatment"] == "drug-x").astype("float32"),
        "diagnosis_year": clean["diagnosis_date_year"].astype("float32"),
    })
    meta = pd.DataFrame({"site_uid": site_uid, "split": split, "label": clean["response"].astype("int8")})
    return pd.concat([meta, features], axis=1).reset_index(drop=True)


def publish_rwe(site, *, n: int, seed: int, epsilon_budget: float = 10.0) -> tuple:
    """The data owner's steps at one hospital: generate the raw extract, check it (it fails),
    de-identify, check again (it must pass), publish private + mock, set the dataset's budget.
    Returns the two compliance reports. Idempotent: an existing dataset is left as it is."""
    import secrets as pysecrets

    import syft as sy

    from synthetic_data.oncology import generate_rwe
    from syft_policies.ledger import BudgetLedger

    from .jobs.compliance import check_asset
    from .registry import LEDGER_FILE
    from syft_policies.quiet import quiet

    raw = generate_rwe(site.spec.name, n=n, region=site.spec.region, seed=seed)
    before = check_asset(raw, name=f"{site.spec.name} raw oncology extract")
    admin = site.admin()
    site_uid = json.loads((site.site_dir / "site.json").read_text())["uid"]  # the datasite's id
    private = rwe_frame(raw, site_uid=site_uid, secret=pysecrets.token_bytes(32), seed=seed)
    mock = rwe_frame(generate_rwe(site.spec.name + "-mock", n=max(60, n // 4), region=site.spec.region,
                                  seed=seed + 1), site_uid="mock", secret=b"mock" * 8, seed=seed)
    after = check_asset(private, name=RWE_ASSET, schema=RWE_SCHEMA)
    if not after.compliant:
        raise RuntimeError(f"de-identification left problems:\n{after}")
    if (site.site_dir / LEDGER_FILE).exists():  # never a new, empty ledger for a site that lost its own
        BudgetLedger(site.site_dir / LEDGER_FILE).ensure_budget(RWE_DATASET, epsilon_budget)
    with quiet():
        if RWE_DATASET in [d.name for d in admin.datasets]:
            return before, after
        asset = sy.Asset(name=RWE_ASSET, data=private, mock=mock, mock_is_real=False,
                         description="Advanced NSCLC patients: biomarkers, first-line treatment, objective "
                                     "response; de-identified (Safe Harbor), years only, ages top-coded at 90.")
        result = admin.upload_dataset(sy.Dataset(name=RWE_DATASET, asset_list=[asset],
                                                 description="Oncology real-world evidence (synthetic)."))
    if type(result).__name__ == "SyftError":
        raise RuntimeError(f"uploading {RWE_DATASET} to {site.spec.name} failed: {result}")
    return before, after
