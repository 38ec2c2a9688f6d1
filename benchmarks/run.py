"""medsyft benchmarks: ratios measured in one run on this machine.

    .venv/bin/python benchmarks/run.py [--patients 2000] [--rounds 3]

Prints
  1. DP-SGD time / non-private time, per model (same data, epochs and batch size), the
     imaging study's U-Net included;
  2. study wall time through Syft datasites / the same rounds calling the vetted jobs
     directly (the orchestration overhead of Syft, in-process);
  3. seconds per round against the number of sites (3, 6, 12; vetted jobs called
     directly, so this is the researcher's sequential loop without Syft's overhead),
     and for 3 and 12 sites the same round with FedAvg through secure aggregation
     (secagg: X25519 + HKDF + AES-CTR masks, Shamir-shared keys) / plain FedAvg;
  4. the aggregation step alone: secure sum / plain numpy sum, for 3 and 12 sites;
  5. HE analytics time / plaintext time: each site's counts, sums, histogram and 2x2
     tables encrypted (CKKS), added by two regional and one global aggregator, decrypted
     by the key custodian; against the same statistics summed in the clear;
  6. isolation: a vetted job run in a sandboxed worker (bubblewrap + seccomp, a fresh
     forked process, inputs and reply over a socket) / the same job called in-process,
     and the seconds it adds per call.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _frames(home: Path, specs, n_patients: int) -> dict[str, pd.DataFrame]:
    from datasites import ensure_site_data
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from synthetic_data import load_synthea

    ensure_site_data(specs, home, n_patients=n_patients, seed=5)
    return {spec.name: cohort_frame(load_synthea(private_dir(home, spec.name)), site_uid=f"bench-{spec.name}")
            for spec in specs}


def dp_overhead(frames, epochs: int) -> dict[str, float]:
    from datasites.jobs.cohort import split_rows
    from datasites.jobs.models import build_model, model_inputs
    from datasites.jobs.training import fit

    train = pd.concat([split_rows(f, "train") for f in frames.values()])
    out = {}
    for model in ("lstm", "mlp"):
        x, y = model_inputs(train, model)
        times = {}
        for private in (False, True):
            net = build_model(model)
            extra = {"noise_multiplier": 1.0, "max_grad_norm": 1.0} if private else {}
            t = time.perf_counter()
            fit(net, x, y, epochs=epochs, sample_rate=0.05, lr=0.005, **extra)
            times[private] = time.perf_counter() - t
        out[model] = times[True] / times[False]
        print(f"  {model:<5} DP-SGD {times[True]:6.2f}s  non-private {times[False]:6.2f}s  ratio {out[model]:5.2f}x")
    return out


def unet_dp_overhead(cases: int = 200, epochs: int = 2) -> float:
    """The imaging study's step: the U-Net on one centre's slices, DP-SGD / non-private."""
    from datasites.jobs.segmentation import build_segmentation_model, fit_segmentation
    from synthetic_data.imaging import CENTRES, axial_slices, generate_centre

    images, labels = axial_slices(generate_centre(CENTRES["centre-a"], cases, seed=5))
    times = {}
    for private in (False, True):
        model = build_segmentation_model("unet2d", seed=0)
        extra = {"noise_multiplier": 1.0, "max_grad_norm": 1.0} if private else {}
        t = time.perf_counter()
        fit_segmentation(model, images, labels, epochs=epochs, sample_rate=0.25, lr=0.01, **extra)
        times[private] = time.perf_counter() - t
    ratio = times[True] / times[False]
    print(f"  unet2d ({cases} slices 64x64, {epochs} epochs) DP-SGD {times[True]:6.2f}s  "
          f"non-private {times[False]:6.2f}s  ratio {ratio:5.2f}x")
    return ratio


def _secure_fedavg(results: dict, round_no: int) -> dict:
    """FedAvg through secure aggregation: sites mask n_i * w_i and n_i; only the sums unmask."""
    from secagg import secure_sum

    ids = {name: i + 1 for i, name in enumerate(sorted(results))}
    updates = {ids[n]: {**{k: r["num_samples"] * v for k, v in r["weights"].items()},
                        "~n": np.array([float(r["num_samples"])])} for n, r in results.items()}
    total, _ = secure_sum(updates, threshold=max(2, len(ids) // 2 + 1), context=f"bench/round-{round_no}")
    n = total.pop("~n")[0]
    return {k: (v / n).astype(np.float32) for k, v in total.items()}


def _direct_rounds(frames, plan, rounds: int, *, secure: bool = False) -> float:
    """The vetted jobs called in this process, each site a LocalHospital keeping its accountant."""
    from datasites.jobs.evaluation import evaluate
    from datasites.jobs.models import build_model, get_weights
    from datasites.jobs.site import LocalHospital, use_hospital
    from datasites.jobs.training import dp_train

    job, strategy = plan.job_plan(), plan.make_strategy()
    weights = get_weights(build_model(plan.model, seed=plan.seed))
    hospitals = {n: LocalHospital(n, dry_run=False) for n in frames}
    t = time.perf_counter()
    for r in range(rounds):
        results = {}
        for n, f in frames.items():
            with use_hospital(hospitals[n]):
                results[n] = dp_train(f, weights, job)
        weights = _secure_fedavg(results, r) if secure else strategy.aggregate(weights, results)
        for n, f in frames.items():
            with use_hospital(hospitals[n]):
                evaluate(f, weights, job)
    return time.perf_counter() - t


def syft_overhead(home: Path, specs, frames, rounds: int) -> float:
    from datasites import start_site
    from federation import Study, StudyPlan
    from syft_policies import approve_request, list_requests

    sites = {s.name: start_site(s, home) for s in specs}
    seconds = {}
    try:
        for secure in (False, True):
            plan = StudyPlan(study=f"bench-syft-{'secure' if secure else 'plain'}", sites=list(sites),
                             rounds=rounds, epsilon=6.0, secure_aggregation=secure)
            study = Study(plan, {n: s.researcher() for n, s in sites.items()}, directory=home / plan.study,
                          echo=lambda *_: None, progress=False)
            study.submit()
            for site in sites.values():
                officer = site.officer()
                for req in list_requests(officer, status="pending"):
                    approve_request(officer, req.id)
            study.wait_for_approvals()
            t = time.perf_counter()
            study.run()
            seconds[secure] = time.perf_counter() - t
    finally:
        for site in sites.values():
            site.stop()
    through_syft = seconds[False]
    print(f"  through Syft, secure aggregation {seconds[True]:6.1f}s / plain {seconds[False]:6.1f}s  "
          f"ratio {seconds[True] / seconds[False]:5.2f}x  (4 calls per site per round instead of 1)")
    direct = _direct_rounds(frames, StudyPlan(study="bench-direct", sites=list(frames), rounds=rounds,
                                              epsilon=6.0), rounds)
    ratio = through_syft / direct
    print(f"  {rounds} rounds x {len(frames)} sites: through Syft {through_syft:6.1f}s  direct {direct:6.1f}s  "
          f"ratio {ratio:5.2f}x")
    return ratio


def scaling(frames, counts=(3, 6, 12), secure_counts=(3, 12)) -> dict[int, float]:
    from federation import StudyPlan

    base = list(frames.values())
    out = {}
    for k in counts:
        runs = {False: None, True: None} if k in secure_counts else {False: None}
        for secure in runs:
            sites = {}
            for i in range(k):  # k hospitals, each a copy of one of the three cohorts
                sites[f"site-{i:02d}"] = base[i % len(base)]
            runs[secure] = _direct_rounds(sites, StudyPlan(study=f"bench-scale-{k}-{secure}", sites=list(sites),
                                                           rounds=1, epsilon=6.0), 1, secure=secure)
        out[k] = runs[False]
        line = f"  {k:>2} sites: {runs[False]:6.2f}s per round  ({runs[False] / k:5.2f}s per site)"
        if runs.get(True) is not None:
            line += f"   secure aggregation {runs[True]:6.2f}s  ratio {runs[True] / runs[False]:5.2f}x"
        print(line)
    print(f"  ratio 12 sites / 3 sites: {out[counts[-1]] / out[counts[0]]:.2f}x")
    return out


def secagg_alone(counts=(3, 12), size: int = 13153, repeats: int = 5) -> None:
    """The aggregation step by itself: secure (4 protocol steps, keys, shares, masks) vs a plain sum."""
    from secagg import secure_sum

    rng = np.random.default_rng(0)
    for k in counts:
        updates = {i: {"w": rng.normal(0, 0.05, size)} for i in range(1, k + 1)}
        t = time.perf_counter()
        for r in range(repeats):
            secure_sum(updates, threshold=k // 2 + 1, context=f"bench/{k}/{r}")
        secure = (time.perf_counter() - t) / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            sum(u["w"] for u in updates.values())
        plain = max((time.perf_counter() - t) / repeats, 1e-9)
        print(f"  {k:>2} sites x {size} parameters: secure sum {secure * 1000:7.1f} ms  plain sum "
              f"{plain * 1000:6.3f} ms")


def _cells(frame) -> dict[str, float]:
    """The kind of aggregate the HE analytics release: counts, sums, squares, a histogram, 2x2 tables."""
    age, label = frame["age"].to_numpy(np.float64), frame["label"].to_numpy(np.float64)
    out = {"n": float(len(frame)), "sum_age": float(age.sum()), "sumsq_age": float((age ** 2).sum())}
    out.update({f"age_bin_{i}": float(c) for i, c in enumerate(np.histogram(age, bins=16, range=(18, 90))[0])})
    for flag in ("male", "diabetes", "hypertension", "ckd", "copd", "heart_failure", "cancer"):
        x = frame[flag].to_numpy() > 0.5
        for name, cell in (("a", x & (label == 1)), ("b", x & (label == 0)), ("c", ~x & (label == 1)),
                           ("d", ~x & (label == 0))):
            out[f"{flag}_{name}"] = float(cell.sum())
    return out


def he_overhead(frames, counts=(3, 12), repeats: int = 3) -> dict[int, float]:
    """HE analytics (encrypt at each site, add at a regional and a global aggregator, custodian
    decrypts) / the same statistics summed in plaintext."""
    from he import KeyCustodian, Signer, combine, encrypt

    base = list(frames.values())
    out = {}
    for k in counts:
        parts = [base[i % len(base)] for i in range(k)]
        custodian = KeyCustodian("bench-he", min_sites=2)
        public = custodian.public_context()
        signers = [Signer(f"site-{i}") for i in range(k)]
        regional, world = Signer("regional"), Signer("global")
        for sg in signers:
            custodian.register(sg.name, sg.public_key, role="site")
        custodian.register(world.name, world.public_key, role="aggregator")
        keys = {sg.name: sg.public_key for sg in [*signers, regional, world]}
        t = time.perf_counter()
        for _ in range(repeats):
            enc = [encrypt(_cells(f), public=public, signer=sg, study="bench-he", query="q")
                   for f, sg in zip(parts, signers)]
            half = k // 2
            sums = [combine(enc[:half], public=public, signer=regional, keys=keys),
                    combine(enc[half:], public=public, signer=regional, keys=keys)]
            custodian.decrypt(combine(sums, public=public, signer=world, keys=keys))
        secure = (time.perf_counter() - t) / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            cells = [_cells(f) for f in parts]
            {c: sum(x[c] for x in cells) for c in cells[0]}
        plain = (time.perf_counter() - t) / repeats
        out[k] = secure / plain
        print(f"  {k:>2} sites x {len(_cells(parts[0]))} cells: HE {secure * 1000:7.1f} ms  plaintext "
              f"{plain * 1000:6.1f} ms  ratio {out[k]:6.1f}x")
    return out


def isolation_overhead(frames, repeats: int = 8) -> dict[str, float]:
    """Seconds a sandboxed execution adds to a vetted job, against the same call in-process."""
    from datasites.isolation import Limits, pool
    from datasites.jobs.models import build_model, get_weights
    from datasites.jobs.site import LocalHospital, use_hospital
    from federation import StudyPlan
    from privacy.accounting import epsilon_spent
    from syft_policies.templates import TEMPLATES

    frame = next(iter(frames.values()))
    plan = StudyPlan(study="bench-isolation", sites=["x"], model="lstm", rounds=100, epsilon=9.0).job_plan()
    weights = get_weights(build_model("lstm", seed=0))
    calls = {"dp_prevalence": {"cohort": frame, "plan": {"study": "bench", "dataset": "icu-sepsis", "epsilon": 1.0}},
             "evaluate": {"cohort": frame, "plan": plan, "weights": weights},
             "train": {"cohort": frame, "plan": plan, "weights": weights}}

    def handle(op, message):  # a fresh study each call, so both sides do identical work
        return {"value": None}

    workers = pool()
    out = {}
    for name, kwargs in calls.items():
        template = TEMPLATES[name]
        job = {"source": template.source, "function": template.function.__name__, "kwargs": kwargs, "site": "bench"}
        workers.run(job, limits=Limits(), handle=handle)  # a warm worker, as on a serving datasite
        isolated, local = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            outcome = workers.run(job, limits=Limits(), handle=handle)
            isolated.append(time.perf_counter() - t)
            assert outcome.kind == "result", outcome
            epsilon_spent.cache_clear()  # each worker starts without this process's cache
            with use_hospital(LocalHospital("bench", dry_run=False)):
                t = time.perf_counter()
                template.function(**kwargs)
                local.append(time.perf_counter() - t)
        iso, loc = float(np.median(isolated)), float(np.median(local))
        out[name] = iso - loc
        print(f"  {name:<14} isolated {iso * 1000:7.1f} ms  in-process {loc * 1000:7.1f} ms  "
              f"+{(iso - loc) * 1000:6.1f} ms per call  ratio {iso / loc:5.2f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from datasites import shipped_specs

    home = Path(tempfile.mkdtemp(prefix="medsyft-bench-"))
    try:
        specs = shipped_specs()
        frames = _frames(home, specs, args.patients)
        print(f"medsyft benchmarks ({args.patients} patients, {sum(len(f) for f in frames.values())} ICU stays)")
        print("1. DP-SGD / non-private training time")
        dp_overhead(frames, args.epochs)
        unet_dp_overhead()
        print("2. study through Syft datasites / vetted jobs called directly")
        syft_overhead(home, specs, frames, args.rounds)
        print("3. seconds per round vs number of sites (direct; secure aggregation vs plain FedAvg)")
        scaling(frames)
        print("4. the aggregation step alone")
        secagg_alone()
        print("5. HE analytics (TenSEAL CKKS, two regions) / plaintext statistics")
        he_overhead(frames)
        print("6. isolated worker (bubblewrap + seccomp, fresh fork per call) / in-process, median of 8")
        isolation_overhead(frames)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
