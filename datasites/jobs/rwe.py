"""Vetted job: the oncology RWE statistics of one hospital, DP-noised and HE-encrypted.

Cells (``RWE_CELLS``): patients, the sum and sum of squares of age (mean and SD), an age
histogram, treatment x response, and for each biomarker a biomarker x response table
within each treatment arm (the odds ratios of response the report shows). The epsilon is
split: half to the counts (a patient counts once in ``n``, the histogram, the treatment
table and each of the 5 biomarker tables: L1 sensitivity 8), a quarter each to the sum
of (age - 65) and of its square, ages clipped to 20-90 (sensitivities 45 and 2025). Each
cell gets OpenDP's Laplace noise (the site's CSPRNG) before it is encrypted under the study's public key (whose
SHA-256 is pinned in the approved plan, so a researcher cannot slip in a key they can
decrypt with) and signed with the site's own key (the datasite signs; the key never
enters the worker). The epsilon is paid from the ledger first; the site never releases
a plaintext cell.
"""

from __future__ import annotations

import hashlib

import numpy as np

from synthetic_data.oncology import BIOMARKERS

from .cohort import check_frame
from .compliance import require_compliant
from .query import laplace
from .site import Refused, hospital

__all__ = ["rwe_statistics", "rwe_cells", "RWE_CELLS", "RWE_SCHEMA", "SENSITIVITY", "NOISE", "AGE_BINS",
           "SUM_CELLS", "SHARES"]

AGE_BINS = (20, 50, 60, 70, 80, 91)
ARMS = ("treated", "untreated")
RWE_CELLS = (("n", "sum_age_dev", "sumsq_age_dev") + tuple(f"age_{lo}_{hi - 1}" for lo, hi in zip(AGE_BINS, AGE_BINS[1:]))
             + tuple(f"{arm}_{r}" for arm in ARMS for r in ("responders", "nonresponders"))
             + tuple(f"{m}_{arm}_{pos}_{r}" for m in BIOMARKERS for arm in ARMS for pos in ("pos", "neg")
                     for r in ("responders", "nonresponders")))
SENSITIVITY = 8.0  # of the count cells together
AGE_CENTRE, AGE_RANGE = 65.0, (20.0, 90.0)  # ages enter the sums as (age - 65), clipped to the range
NOISE = {"sum_age_dev": 45.0 / 0.25, "sumsq_age_dev": 2025.0 / 0.25}  # sensitivity / share of eps; counts: 8 / 0.5
RWE_FEATURES = ("age", "male", "stage", *BIOMARKERS, "treated")
RWE_SCHEMA = {**{c: "numeric" for c in RWE_FEATURES}, "label": "binary", **{m: "binary" for m in BIOMARKERS}}
SUM_CELLS = ("sum_age_dev", "sumsq_age_dev")  # sums, not counts
SHARES = ((tuple(c for c in RWE_CELLS if c not in SUM_CELLS), SENSITIVITY, 0.5),  # cells, L1 sensitivity, share
          (("sum_age_dev",), 45.0, 0.25), (("sumsq_age_dev",), 2025.0, 0.25))   # of epsilon (NOISE at epsilon 1)


def rwe_cells(frame) -> dict[str, float]:
    """The exact cells (before noise); used by the job and by tests."""
    age, label = frame["age"].to_numpy(float), frame["label"].to_numpy() == 1
    treated = frame["treated"].to_numpy() > 0.5
    dev = np.clip(age, *AGE_RANGE) - AGE_CENTRE  # centred: 4x less sensitivity for the squares than raw ages
    out = {"n": float(len(frame)), "sum_age_dev": float(dev.sum()), "sumsq_age_dev": float((dev ** 2).sum())}
    hist = np.histogram(np.minimum(age, 90), bins=AGE_BINS)[0]
    out.update({f"age_{lo}_{hi - 1}": float(c) for lo, hi, c in zip(AGE_BINS, AGE_BINS[1:], hist)})
    for arm, in_arm in (("treated", treated), ("untreated", ~treated)):
        out[f"{arm}_responders"] = float((in_arm & label).sum())
        out[f"{arm}_nonresponders"] = float((in_arm & ~label).sum())
        for m in BIOMARKERS:
            pos = frame[m].to_numpy() > 0.5
            for tag, has in (("pos", pos), ("neg", ~pos)):
                out[f"{m}_{arm}_{tag}_responders"] = float((in_arm & has & label).sum())
                out[f"{m}_{arm}_{tag}_nonresponders"] = float((in_arm & has & ~label).sum())
    return {c: out[c] for c in RWE_CELLS}


def rwe_statistics(cohort, plan: dict, message: dict) -> dict:
    """This hospital's encrypted, signed, epsilon-DP contribution to the study's statistics."""
    from he import Contribution
    from he.contribution import encrypt_cells

    epsilon = float(plan.get("epsilon", 0))
    if not 0 < epsilon <= 5:
        raise ValueError(f"plan epsilon must be in (0, 5], got {plan.get('epsilon')!r}")
    public = bytes(message.get("public_context", b""))
    if hashlib.sha256(public).hexdigest() != plan.get("he_context_sha256"):
        raise Refused("the public key given is not the one the hospital approved for this study")
    frame = check_frame(cohort)
    require_compliant(frame, name="rwe_cohort", schema=RWE_SCHEMA)
    site = hospital()
    if site.dry_run:  # the mock twin / a dry run: the layout, no data, no key
        return {"dry_run": True, "cells": list(RWE_CELLS)}
    left = site.debit(epsilon, reference=f"{plan['study']}/rwe_statistics")
    cells = rwe_cells(frame)
    noisy = {}
    for names, sensitivity, share in SHARES:  # OpenDP's Laplace (the site's CSPRNG), calibrated by its map
        noisy.update(zip(names, laplace([cells[c] for c in names], sensitivity=sensitivity, epsilon=share * epsilon)))
    unsigned = encrypt_cells(noisy, public=public, by=site.name, study=plan["study"], query=plan["query"])
    signed = Contribution(**{**unsigned.__dict__, "signature": site.sign(unsigned.message())})
    return {**signed.to_dict(), "epsilon": epsilon, "budget_remaining": left}
