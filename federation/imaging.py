"""The imaging scenario: DP U-Net brain-tumour segmentation across two centres.

Two simulated imaging centres (``datasites/specs/imaging``), each a real Syft datasite
with its BraTS-layout MRI and a mock twin. The researcher runs the same study at three
budgets (epsilon 1, 3 and 8 per centre, training plus evaluation): FedAvg with secure
aggregation, so no centre's update is ever seen alone, approved by each centre's officer
and paid from its ledger; Dice is released noised, as a secure sum. The non-private
references (pooled and federated) are simulations by the data owners, like the sepsis
demo's baselines. ``results/imaging/`` gets ``summary.json``, ``dice_vs_epsilon.png`` and
a figure of **mock** test slices with the DP model's masks (never a private image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from datasites import ensure_site_data, shipped_specs, start_site
from datasites.spec import SPEC_DIR

from .demo import _fresh_datasites, _officer_reviews
from .plan import StudyPlan
from .study import Study

__all__ = ["run_imaging", "format_imaging", "IMAGING_EPSILONS", "IMAGING_SPECS"]

IMAGING_SPECS = SPEC_DIR / "imaging"
IMAGING_EPSILONS = (1.0, 3.0, 8.0)
REGIONS = ("whole_tumour", "tumour_core", "enhancing_tumour")
TRAINING = {"model": "unet2d", "dataset": "brain-mri", "asset": "axial_slices", "lr": 0.002, "sample_rate": 0.5,
            "max_grad_norm": 1.0, "local_epochs": 2}


def evaluation_epsilon(epsilon: float) -> float:
    """The one evaluation's share of a centre's budget: a quarter, from 0.5 to 2. Its noise
    (scale 4/epsilon on each Dice sum, L1 sensitivity 4) over ~100 pooled test cases moves a
    mean Dice by about 0.03 at epsilon 2 and 0.1 at 0.5."""
    return float(min(max(0.25 * epsilon, 0.5), 2.0))


def dice_noise_sd(epsilon: float, *, sites: int, cases: float, mean: float) -> float:
    """Standard deviation the evaluation's own noise gives a released mean Dice: each site
    adds Laplace noise of scale 4/epsilon to its Dice sum and to its case count (variance
    2 b^2 each), and the mean is sum / count, so about b sqrt(2 sites (1 + mean^2)) / cases.
    Computed from public values only (the plan and the released numbers)."""
    b = 4.0 / epsilon
    return float(b * np.sqrt(2 * sites * (1 + mean ** 2)) / max(cases, 1.0))


def _cases_of(result) -> float:
    """The released (noised) number of test cases behind a study's last evaluation."""
    return float(sum(max(float(e.get("cases", 0)), 0.0) for e in result.evaluations.values()))


def _plan(study: str, sites: list[str], *, epsilon: float, rounds: int, seed: int,
          strategy: str = "fedavg") -> StudyPlan:
    evaluation = evaluation_epsilon(epsilon)
    return StudyPlan(study=study, sites=sites, rounds=rounds, epsilon=epsilon - evaluation, secure_aggregation=True,
                     seed=seed, evaluate_every=0, final_eval_epsilon=evaluation, strategy=strategy, **TRAINING)


def run_imaging(home: Path, *, cases: int | None = None, rounds: int = 4, seed: int = 7,
                epsilons=IMAGING_EPSILONS, results: Path = Path("results") / "imaging", echo=print,
                progress: bool = True, strategy: str = "fedavg", warm_epochs: int | None = None) -> dict:
    """Run the three DP studies and the references; write ``results``; return the summary.

    Round 1 starts from a warm start trained on the centres' public mocks (``warm_epochs``
    epochs, default ``segmentation_refs.WARM_EPOCHS``; 0 for none), as are the non-private
    references, so the comparison measures DP fine-tuning. ``strategy="fedbn"`` keeps each centre's GroupNorm layers at the centre (FedBN): the
    released model is then incomplete without them, so no mock figure is drawn from it."""
    if strategy not in ("fedavg", "fedbn"):
        raise ValueError(f"the imaging study runs fedavg or fedbn, not {strategy!r}")
    from .segmentation_refs import (centre_arrays, federated_reference, pooled_reference, score_weights, tuned,
                                    warm_start)
    from .plots import plot_dice_vs_epsilon

    t0 = time.monotonic()
    specs = shipped_specs(IMAGING_SPECS)
    home = Path(home) / "imaging"
    _fresh_datasites(specs, home)
    if cases is not None:
        import dataclasses

        specs = [dataclasses.replace(s, imaging_cases=cases) for s in specs]
    echo(f"[1/6] data owners: BraTS-layout brain MRI for {len(specs)} centres "
         f"({', '.join(f'{s.name} {s.imaging_cases} cases' for s in specs)})")
    ensure_site_data(specs, home, seed=seed)
    echo(f"[2/6] starting {len(specs)} imaging datasites (in-process)")
    sites = {s.name: start_site(s, home) for s in specs}
    names = sorted(sites)
    dp, epsilon_spent = {}, {}
    try:
        clients = {n: sites[n].researcher() for n in names}
        mocks = [_mock_of(clients[s.name], s) for s in specs]
        echo(f"[3/6] researcher: a warm start on the centres' public mocks ({sum(len(m['images']) for m in mocks)} "
             "cases, no epsilon)")
        start = warm_start(mocks, TRAINING["model"], seed=seed,
                           **({} if warm_epochs is None else {"epochs": warm_epochs}))
        for eps in epsilons:
            plan = _plan(f"brats-eps{eps:g}", names, epsilon=eps, rounds=rounds, seed=seed, strategy=strategy)
            echo(f"[4/6] study {plan.study}: {'FedBN' if strategy == 'fedbn' else 'FedAvg'} + secure aggregation, "
                 f"{rounds} rounds, epsilon {eps:g} per "
                 f"centre (noise_multiplier {plan.noise_multiplier:.2f})")
            study = Study(plan, clients, directory=home / "studies" / plan.study, echo=echo, progress=progress,
                          weights=start)
            study.submit()
            for site in sites.values():
                _officer_reviews(site, echo, purpose="brain-tumour segmentation from pre-operative MRI")
            result = study.run()
            dp[f"{eps:g}"] = {"result": result, "dice": result.evaluations}
            epsilon_spent[f"{eps:g}"] = result.total_epsilon
        echo("[5/6] references with the data pooled (simulation by the data owners)")
        arrays = centre_arrays(sites.values())
        reference_plan = _plan("reference", names, epsilon=max(epsilons), rounds=rounds, seed=seed)
        pooled = score_weights(arrays, tuned(pooled_reference, arrays, reference_plan, start=start))
        federated = score_weights(arrays, tuned(federated_reference, arrays, reference_plan, start=start))
        mock_only = score_weights(arrays, start)
        budgets = {n: sites[n].ledger().remaining(specs[0].dataset_name) for n in names}
        audits = {n: sites[n].audit().verify() for n in names}
    finally:
        for site in sites.values():
            site.stop()
    echo("[6/6] results")
    federated_dp = {eps: _dice_of(entry["result"]) for eps, entry in dp.items()}
    noise_sd = {eps: {region: dice_noise_sd(evaluation_epsilon(float(eps)), sites=len(names),
                                            cases=_cases_of(entry["result"]), mean=federated_dp[eps][region])
                      for region in REGIONS} for eps, entry in dp.items()}
    wall = time.monotonic() - t0
    summary = {
        "dice": {"pooled_nonprivate": pooled["whole_tumour"], "federated_nonprivate": federated["whole_tumour"],
                 "federated_dp": {eps: d["whole_tumour"] for eps, d in federated_dp.items()},
                 "warm_start_only": mock_only["whole_tumour"],
                 "federated_dp_noise_sd": {eps: sd["whole_tumour"] for eps, sd in noise_sd.items()},
                 "regions": {"pooled_nonprivate": pooled, "federated_nonprivate": federated,
                             "federated_dp": federated_dp, "warm_start_only": mock_only,
                             "federated_dp_noise_sd": noise_sd}},
        "epsilon": {"per_site": epsilon_spent},
        "rounds": rounds, "strategy": strategy, "wall_seconds": round(wall, 1), "cases": {s.name: s.imaging_cases for s in specs},
        "budget": budgets, "audit": {n: {"entries": v.entries, "verified": v.ok} for n, v in audits.items()},
    }
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    best = dp[f"{max(epsilons):g}"]["result"]
    plots = [plot_dice_vs_epsilon(federated_dp, federated, results / "dice_vs_epsilon.png", warm_start=mock_only,
                                  noise_sd=noise_sd)]
    if strategy == "fedavg":
        plots.append(_mock_figure(home, specs, best, results / "mock_segmentations.png"))
    else:
        echo("  no mock figure under FedBN: each centre's normalisation layers never leave it")
    summary["plots"] = [str(p) for p in plots]
    (results / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _mock_figure(home: Path, specs, result, path: Path, per_centre: int = 2) -> Path:
    """Mock test slices of each centre with their labels and the DP model's (no private image)."""
    from datasites.data import mock_dir
    from datasites.imaging_asset import imaging_asset
    from datasites.jobs.models import set_weights
    from datasites.jobs.segmentation import build_segmentation_model, predict_labels

    from .plots import plot_segmentations

    model = build_segmentation_model(result.plan.model, seed=result.plan.seed)
    set_weights(model, result.weights)
    images, truth = [], []
    for spec in specs:
        mock = imaging_asset(mock_dir(home, spec.name))
        tumour = np.argsort(-(mock["labels"] > 0).sum(axis=(1, 2)))[:per_centre]  # the mock's clearest cases
        images.append(mock["images"][tumour])
        truth.append(mock["labels"][tumour])
    images, truth = np.concatenate(images), np.concatenate(truth)
    return plot_segmentations(images, truth, predict_labels(model, images), path,
                              title=f"mock cases, DP model at epsilon {result.plan.total_epsilon:.1f} per centre")


def _mock_of(client, spec) -> dict:
    """A centre's published mock of the imaging asset, as the researcher downloads it."""
    from datasites.imaging_asset import IMAGING_ASSET
    from syft_policies.quiet import quiet

    with quiet():
        mock = client.datasets[spec.dataset_name].assets[IMAGING_ASSET].mock
    return getattr(mock, "syft_action_data", mock)


def _dice_of(result) -> dict[str, float]:
    """Region Dice of a study's last (secure-sum) evaluation."""
    from .tasks import TASKS

    return TASKS["segmentation"].regions(list(result.evaluations.values()))


def format_imaging(summary: dict) -> str:
    d, regions = summary["dice"], summary["dice"]["regions"]
    lines = ["", "Dice on both centres' test cases (whole tumour / tumour core / enhancing tumour)"]

    def row(label, r, sd=None):
        noise = "" if sd is None else f"   (evaluation noise: sd {sd['whole_tumour']:.3f} on each)"
        return f"  {label:<40}{r['whole_tumour']:.3f} / {r['tumour_core']:.3f} / {r['enhancing_tumour']:.3f}{noise}"
    lines.append(row("warm start on the public mocks only", regions["warm_start_only"]))
    lines.append(row("pooled, no privacy", regions["pooled_nonprivate"]))
    lines.append(row("federated, no privacy", regions["federated_nonprivate"]))
    for eps, r in regions["federated_dp"].items():
        lines.append(row(f"federated DP, epsilon {eps} per centre", r, regions.get("federated_dp_noise_sd", {}).get(eps)))
    lines += ["", f"{summary['rounds']} rounds, {summary['wall_seconds']:.0f} s; budget left: "
              + ", ".join(f"{s} {v:.2f}" for s, v in summary["budget"].items())
              + "; audit logs " + ("verify" if all(a["verified"] for a in summary["audit"].values()) else "DO NOT verify"),
              f"results: {', '.join(summary['plots'])}"]
    return "\n".join(lines)
