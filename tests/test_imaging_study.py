"""The imaging scenario end to end through two real imaging datasites (fast mode).

Approval by each centre's officer under its own policy, DP-SGD U-Net rounds under secure
aggregation, Dice released only as a noised secure sum, the ledgers and audit logs, and
the released figure drawn from mock cases only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from federation.imaging import IMAGING_SPECS, evaluation_epsilon, run_imaging
from federation.study import SECURE_SUM


@pytest.fixture(scope="module")
def imaging_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("imaging-home")
    results = home / "results"
    summary = run_imaging(home, cases=80, rounds=1, epsilons=(3.0, 8.0), results=results, echo=lambda *_: None,
                          progress=False, warm_epochs=3)
    return home, results, summary


def test_the_scenario_writes_its_summary_and_figures(imaging_run):
    _, results, summary = imaging_run
    written = json.loads((results / "summary.json").read_text())
    assert set(written["dice"]) >= {"pooled_nonprivate", "federated_nonprivate", "federated_dp"}
    assert set(written["dice"]["federated_dp"]) == {"3", "8"}
    # one short round learns little (test_segmentation shows the U-Net learns); here: real numbers
    assert 0 <= written["dice"]["federated_nonprivate"] <= 1 and 0 <= written["dice"]["pooled_nonprivate"] <= 1
    assert all(np.isfinite(v) for v in written["dice"]["federated_dp"].values())
    assert 0 <= written["dice"]["warm_start_only"] <= 1  # the mocks-only model, the studies' round-1 start
    assert written["rounds"] == 1 and written["wall_seconds"] > 0
    for name in ("dice_vs_epsilon.png", "mock_segmentations.png"):
        assert (results / name).stat().st_size > 10_000


def test_each_centre_pays_what_the_plan_says_and_its_records_verify(imaging_run):
    _, _, summary = imaging_run
    for eps, per_site in summary["epsilon"]["per_site"].items():
        assert set(per_site) == {"utrecht-neuro", "pittsburgh-neuro"}
        for spent in per_site.values():  # DP-SGD's accountant plus the evaluation's receipt
            assert float(eps) - 0.01 <= spent <= float(eps) + 1e-6
    assert all(a["verified"] and a["entries"] > 0 for a in summary["audit"].values())
    assert all(left == pytest.approx(20.0 - 11.0, abs=0.02) for left in summary["budget"].values())


def test_no_single_centres_update_or_dice_reaches_the_researcher(imaging_run):
    home, _, _ = imaging_run
    from federation.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(home / "imaging" / "studies" / "brats-eps8")
    last = ckpt.meta["history"][-1]
    assert set(last["evaluations"]) == {SECURE_SUM}  # only the sum over both centres opened
    assert last["site_auroc"] == {} and set(last["num_samples"].values()) == {None}
    assert set(last["update_norm"]) == {"global"}  # the researcher held only the aggregate


def test_the_evaluation_share_of_a_budget():
    assert evaluation_epsilon(1.0) == 0.5 and evaluation_epsilon(3.0) == 0.75 and evaluation_epsilon(8.0) == 2.0


def test_imaging_centres_publish_a_mock_that_is_no_private_case(imaging_run):
    from datasites.data import mock_dir, private_dir
    from datasites.imaging_asset import imaging_asset

    home, _, _ = imaging_run
    for spec_name in ("utrecht-neuro", "pittsburgh-neuro"):
        private = imaging_asset(private_dir(home / "imaging", spec_name))
        mock = imaging_asset(mock_dir(home / "imaging", spec_name))
        assert mock["images"].shape[1:] == private["images"].shape[1:]
        flat = private["images"].reshape(len(private["images"]), -1)
        for case in mock["images"].reshape(len(mock["images"]), -1):
            assert np.min(np.abs(flat - case).max(axis=1)) > 0.1  # no mock slice is (near) a private one


def test_a_sepsis_site_rates_a_segmentation_plan_out_of_policy(site):
    """A centre's [policy] models decide: the sepsis hospitals allow only their models."""
    from federation import StudyPlan
    from syft_policies.code_review import SitePolicy, review_code
    from syft_policies.templates import TEMPLATES, medsyft_segment_train  # noqa: F401

    plan = StudyPlan(study="seg", sites=["a", "b"], model="unet2d", dataset="brain-mri", asset="axial_slices",
                     rounds=2, epsilon=3.0).job_plan()
    report = review_code(TEMPLATES["segment_train"].source, plan=plan, site_policy=SitePolicy.for_site(site.spec))
    assert report.risk == "high" and any("unet2d" in f.message for f in report.findings)
    from datasites import load_spec

    centre = load_spec(IMAGING_SPECS / "utrecht-neuro.toml")
    assert review_code(TEMPLATES["segment_train"].source, plan=plan,
                       site_policy=SitePolicy.for_site(centre)).risk == "low"


def test_fedbn_keeps_each_centres_norm_layers_and_still_releases_only_a_secure_sum(tmp_path):
    """``--fedbn``: the researcher's model never holds a centre's GroupNorm layers (they stay
    at their initial values in every checkpoint), the shared layers move, Dice still comes
    back only as the noised secure sum, and no figure is drawn from an incomplete model."""
    from datasites.jobs.segmentation import build_segmentation_model
    from datasites.jobs.models import get_weights
    from federation.checkpoint import latest_checkpoint

    results = tmp_path / "results"
    summary = run_imaging(tmp_path, cases=40, rounds=1, epsilons=(8.0,), results=results, echo=lambda *_: None,
                          progress=False, strategy="fedbn", warm_epochs=0)
    assert summary["strategy"] == "fedbn" and np.isfinite(summary["dice"]["federated_dp"]["8"])
    assert not (results / "mock_segmentations.png").exists() and (results / "dice_vs_epsilon.png").exists()
    ckpt = latest_checkpoint(tmp_path / "imaging" / "studies" / "brats-eps8")
    start = get_weights(build_segmentation_model("unet2d", seed=7))
    norms = [k for k in start if ".norm" in k]
    assert norms and all(np.array_equal(ckpt.weights[k], start[k]) for k in norms)
    assert any(not np.allclose(ckpt.weights[k], start[k]) for k in start if k not in norms)
    assert set(ckpt.meta["history"][-1]["evaluations"]) == {SECURE_SUM}
    with pytest.raises(ValueError, match="fedavg or fedbn"):
        run_imaging(tmp_path, strategy="fedprox")


def test_a_study_starts_from_given_weights_only_if_they_fit_its_model(tmp_path):
    from datasites.jobs.models import get_weights
    from datasites.jobs.segmentation import build_segmentation_model
    from federation import PlanError, Study, StudyPlan

    plan = StudyPlan(study="warm", sites=["a", "b"], model="unet2d", dataset="brain-mri", asset="axial_slices",
                     rounds=1, epsilon=3.0, secure_aggregation=True)
    start = {k: v + 1 for k, v in get_weights(build_segmentation_model("unet2d", seed=1)).items()}
    study = Study(plan, {"a": None, "b": None}, directory=tmp_path / "ok", weights=start)
    assert all(np.array_equal(study.weights[k], start[k]) for k in start)
    with pytest.raises(PlanError, match="do not fit"):
        Study(plan, {"a": None, "b": None}, directory=tmp_path / "bad", weights={"head.weight": np.zeros(3)})


def test_the_stated_evaluation_noise_matches_a_simulation():
    """The sd printed next to each DP Dice is what Laplace noise of scale 4/epsilon on each
    site's sum and count does to sum / count (simulated here with numpy's Laplace)."""
    from federation.imaging import dice_noise_sd

    rng = np.random.default_rng(0)
    for epsilon, cases, mean in ((2.0, 150, 0.95), (0.5, 150, 0.6), (0.75, 400, 0.3)):
        b = 4 / epsilon
        sums = cases * mean + rng.laplace(0, b, (200_000, 2)).sum(axis=1)
        counts = cases + rng.laplace(0, b, (200_000, 2)).sum(axis=1)
        simulated = np.std(sums / counts)
        assert dice_noise_sd(epsilon, sites=2, cases=cases, mean=mean) == pytest.approx(simulated, rel=0.15)
