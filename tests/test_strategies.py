"""Aggregation maths (pure numpy), plan validation, pooled metrics, and FedProx / FedBN
against FedAvg on a strongly non-IID split, with the vetted job called directly."""

from __future__ import annotations

import numpy as np
import pytest

from datasites.cohort_asset import cohort_frame
from datasites.jobs.cohort import split_rows
from datasites.jobs.evaluation import auroc, site_metrics
from datasites.jobs.models import model_inputs
from scratchnet.experiments import compare_strategy, skewed_hospitals
from federation import FedAvg, FedBN, FedProx, PlanError, StudyPlan
from federation.metrics import pooled_auroc
from federation.strategy import weighted_average
from synthetic_data import load_synthea


def test_fedavg_weights_sites_by_sample_count_exactly():
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.0], np.float32)}
    b = {"w": np.array([4.0, 8.0], np.float32), "b": np.array([3.0], np.float32)}
    out = FedAvg().aggregate({}, {"a": {"weights": a, "num_samples": 100},
                                  "b": {"weights": b, "num_samples": 300}})
    np.testing.assert_array_equal(out["w"], np.array([(100 * 1 + 300 * 4) / 400, (100 * 2 + 300 * 8) / 400]))
    np.testing.assert_array_equal(out["b"], np.array([2.25]))
    np.testing.assert_array_equal(weighted_average([a], [7])["w"], a["w"])  # one site: its own weights


def test_weighted_average_rejects_inconsistent_input():
    a = {"w": np.ones(2)}
    with pytest.raises(ValueError, match="every site dropped"):
        weighted_average([], [])
    with pytest.raises(ValueError, match="different layers"):
        weighted_average([a, {"v": np.ones(2)}], [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([a, a], [0, 0])


def test_fedbn_keeps_normalisation_layers_out_of_the_average():
    g = {"norm.weight": np.ones(2, np.float32), "head.weight": np.zeros(2, np.float32)}
    site = {"weights": {"head.weight": np.full(2, 2.0, np.float32)}, "num_samples": 5}
    out = FedBN().aggregate(g, {"a": site, "b": site})
    assert FedBN().local_layers() == ("norm",)
    np.testing.assert_array_equal(out["norm.weight"], g["norm.weight"])
    np.testing.assert_array_equal(out["head.weight"], np.full(2, 2.0))


def test_plan_validation_says_what_to_fix():
    with pytest.raises(PlanError) as err:
        StudyPlan(study="1bad id", sites=["a", "a"], model="resnet", rounds=0, sample_rate=2.0, delta=1.5)
    text = str(err.value)
    for fragment in ("study id", "each once", "model 'resnet'", "rounds", "sample_rate", "delta"):
        assert fragment in text
    with pytest.warns(UserWarning, match="weak guarantee"):
        StudyPlan(study="loose", sites=["a"], epsilon=20.0)
    with pytest.raises(PlanError, match="mu > 0"):
        StudyPlan(study="prox", sites=["a"], strategy="fedprox", prox_mu=0.0)


def test_plan_calibrates_noise_to_the_study_budget():
    plan = StudyPlan(study="calib", sites=["a"], rounds=5, epsilon=3.0, delta=1e-5)
    assert 2.9 <= plan.planned_epsilon() <= 3.0
    assert plan.planned_epsilon(rounds=1) < plan.planned_epsilon(rounds=3) < plan.planned_epsilon()
    noisier = StudyPlan(study="calib", sites=["a"], rounds=10, epsilon=3.0)
    assert noisier.noise_multiplier > plan.noise_multiplier  # more rounds, same budget: more noise


def test_pooled_auroc_from_site_counts_matches_the_exact_auroc():
    rng = np.random.default_rng(0)
    sites, all_scores, all_labels = [], [], []
    for n, shift in ((400, 0.0), (250, 0.8), (150, -0.5)):
        labels = rng.random(n) < 0.3
        scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * labels + shift)))
        sites.append(site_metrics(scores, labels.astype(int)))
        all_scores.append(scores)
        all_labels.append(labels)
    exact = auroc(np.concatenate(all_labels), np.concatenate(all_scores))
    assert abs(pooled_auroc(sites) - exact) < 0.01
    tiny = site_metrics(np.array([0.1, 0.9] * 4), np.array([0, 1] * 4))
    assert tiny["n"] is None  # fewer than min_cell patients: nothing but the suppression note


def test_histogram_auroc_survives_noise_that_outweighs_a_small_class():
    from federation.metrics import histogram_auroc

    # the CI failure's shape: 32 bins, few septic patients, noise sums their total below zero
    positive = np.array([-2, 0, 0, -2, 1, -1, -2, -2, -3, 0, 0, 0, 0, 1, -5, -1, -2, -1, 0, 3, 8, 7, 8, -1,
                         0, -3, -2, 3, 2, -6, -1, -2], float)
    negative = np.array([-2, 0, 0, 2, 0, -2, 0, 2, 0, 1, 0, 0, -1, 1, 4, -1, -1, 3, 2, 32, 38, 16, 5, 1, 0, 0,
                         0, 1, -3, 1, -1, 1], float)
    assert positive.sum() <= 0
    value = histogram_auroc(positive, negative)
    assert 0.5 < value <= 1  # the septic counts sit in the higher bins: the ranking survives clipping
    with pytest.raises(ValueError, match="every noised count"):
        histogram_auroc(-np.ones(32), negative)


# --- non-IID: FedProx and FedBN against FedAvg -------------------------------------------------

@pytest.fixture(scope="module")
def skewed_sites(network_home, specs):
    frames = {s.name: cohort_frame(load_synthea(network_home / s.name / "data" / "private"), site_uid="x")
              for s in specs}
    return skewed_hospitals(frames)


def _run(sites, strategy, *, study, hospitals=None):
    return compare_strategy(sites, strategy, study=study, hospitals=hospitals)


def test_fedprox_limits_client_drift_and_fedbn_personalises_on_a_skewed_split(skewed_sites):
    avg_drift, avg_auc = _run(skewed_sites, FedAvg(), study="skew-avg")
    prox_drift, prox_auc = _run(skewed_sites, FedProx(mu=1.0), study="skew-prox")
    hospitals = {}
    bn_drift, bn_auc = _run(skewed_sites, FedBN(), study="skew-bn", hospitals=hospitals)
    print(f"\nmean update norm: fedavg {avg_drift:.4f}  fedprox {prox_drift:.4f}  fedbn {bn_drift:.4f}")
    print(f"per-site AUROC: fedavg {avg_auc}  fedprox {prox_auc}  fedbn {bn_auc}")
    # FedProx: the proximal pull keeps local models closer to the global one
    assert prox_drift < avg_drift
    # FedBN: each site's normalisation layers stayed local and differ between the sites
    a = hospitals["young"].load("skew-bn", "state")["local_layers"]
    b = hospitals["old-shifted"].load("skew-bn", "state")["local_layers"]
    assert set(a) == {"norm.weight", "norm.bias"} == set(b)
    assert not np.allclose(a["norm.bias"], b["norm.bias"])
    assert all(v is not None and v > 0.5 for v in bn_auc.values())
