"""The vetted site jobs called directly: inputs, privacy guards, dry runs on mocks."""

from __future__ import annotations

import pytest

from datasites.cohort_asset import cohort_frame
from datasites.jobs.cohort import split_rows
from datasites.jobs.models import model_inputs
from datasites.jobs.site import LocalHospital, use_hospital
from datasites.jobs.training import dp_train
from federation import StudyPlan
from synthetic_data import load_synthea


@pytest.fixture(scope="module")
def frame(network_home, specs):
    return cohort_frame(load_synthea(network_home / specs[1].name / "data" / "private"), site_uid="jobs-site")


def test_cohort_asset_has_no_identifiers_and_a_fixed_split(frame, network_home, specs):
    assert not {"Id", "PATIENT", "SSN", "patient"} & set(frame.columns)
    again = cohort_frame(load_synthea(network_home / specs[1].name / "data" / "private"), site_uid="jobs-site")
    assert (again["split"] == frame["split"]).all()  # the data owner's split does not move between builds
    assert 0.2 < (frame["split"] == "test").mean() < 0.3
    x, y = model_inputs(split_rows(frame, "train"), "lstm")
    assert x.shape[1:] == (12, 17) and len(x) == len(y)
    x, _ = model_inputs(frame, "mlp")
    assert x.shape[1] == 41


def test_dp_train_refuses_a_round_that_would_exceed_the_study_epsilon(frame):
    site = LocalHospital("jobs-site", dry_run=False)
    plan = StudyPlan(study="tight", sites=["x"], rounds=4, noise_multiplier=0.5, epsilon=None).job_plan()
    plan["epsilon"] = 1.0  # far below what one round at this noise costs
    with use_hospital(site), pytest.raises(PermissionError, match="exceed this study's epsilon"):
        dp_train(frame, {}, plan)
    assert site.load("tight", "state") is None and site.debits == []  # refused before any debit or step


def test_dry_run_on_a_mock_leaves_no_privacy_state(network_home, specs, tmp_path):
    mock = cohort_frame(load_synthea(network_home / specs[0].name / "data" / "mock"), site_uid="mock")
    plan = StudyPlan(study="dry", sites=["x"], rounds=2, epsilon=4.0).job_plan()
    first = dp_train(mock, {}, plan)
    second = dp_train(mock, {}, plan)
    assert first["round"] == second["round"] == 1  # throw-away state: a dry run never accumulates
    assert first["epsilon"] == second["epsilon"] > 0
    assert first["budget_remaining"] is None  # nothing was paid: no hospital's budget exists here


def test_a_secure_studys_evaluation_leaves_masked_and_only_its_sum_opens(frame):
    """Under secure aggregation each hospital's noised histograms leave masked with the last
    round's keys: the relay opens their sum over the agreed survivors, never one site's. An
    evaluation before the round is agreed, or a second one in a round, is refused unpaid."""
    import numpy as np

    from datasites.jobs.evaluation import evaluate, predict, score_histograms
    from datasites.jobs.models import build_model, get_weights
    from datasites.jobs.secure_round import secure_train
    from datasites.jobs.site import Refused
    from secagg import FixedPoint, SecAggServer

    names = ["h1", "h2", "h3"]
    hospitals = {n: LocalHospital(n, dry_run=False, researcher="ada") for n in names}
    for h in hospitals.values():
        h.trust({n: other.public_key for n, other in hospitals.items()})
    plan = StudyPlan(study="sec-eval", sites=names, rounds=2, epsilon=2.0, model="mlp", sample_rate=0.1,
                     secure_aggregation=True).job_plan()
    weights = get_weights(build_model("mlp", seed=plan["seed"]))

    def call(name, job, *args):
        with use_hospital(hospitals[name]):
            return job(frame, *args)

    def unpaid_refusal(name, words):
        paid = list(hospitals[name].debits)
        with pytest.raises(Refused, match=words):
            call(name, evaluate, weights, plan)
        assert hospitals[name].debits == paid

    unpaid_refusal("h1", "run a round first")
    ids = {n: i + 1 for i, n in enumerate(names)}
    server = SecAggServer(context="sec-eval/round-1", threshold=plan["secagg_threshold"])

    def step(name, **message):
        return call(name, secure_train, {"round": 1, **message}, plan)

    roster = server.collect_adverts([step(n, step="advertise", site_id=ids[n]) for n in names])
    inboxes = server.route_shares({ids[n]: step(n, step="share", roster=roster)["shares"] for n in names})
    survivors, dropped = server.collect_masked(
        {ids[n]: step(n, step="mask", weights=weights, inbox=inboxes[ids[n]])["masked"] for n in names})
    unpaid_refusal("h1", "not agreed here yet")
    signatures = server.collect_signatures(
        {ids[n]: step(n, step="consistency", survivors=survivors)["signature"] for n in names})
    server.unmask([step(n, step="unmask", survivors=survivors, dropped=dropped, signatures=signatures)
                   for n in names])

    replies = {n: call(n, evaluate, weights, plan) for n in names}
    test = split_rows(frame, "test")
    x, y = model_inputs(test, "mlp")
    exact = np.concatenate(score_histograms(predict("mlp", weights, x, seed=plan["seed"]), y))
    for reply in replies.values():  # one site's reply: masked counts and public numbers only
        assert "histogram" not in reply and set(reply["masked"]) == {"positive", "negative"}
        seen = np.concatenate([FixedPoint().decode(reply["masked"][k]) for k in ("positive", "negative")])
        assert np.median(np.abs(seen - exact)) > 1e6
    total = server.unmask_extra({ids[n]: r["masked"] for n, r in replies.items()}, purpose="evaluation")
    pooled = np.concatenate([total["positive"], total["negative"]])
    epsilon = replies["h1"]["receipt"]["epsilon"]
    assert np.all(pooled == np.rint(pooled))  # counts: the masks cancel exactly
    assert np.max(np.abs(pooled - 3 * exact)) < 3 * 12 / epsilon  # three sites' discrete Laplace, 1/eps each
    unpaid_refusal("h2", "already evaluated")  # a second vector under the same masks: refused


def test_a_repeated_round_returns_the_same_reply_and_pays_once(frame):
    """A reply lost to a crash or a timeout is fetched again, never re-made: the call names
    its round; the same round gives the same release, an older one is refused, a later one
    is this site's next training (a site that missed rounds rejoins)."""
    import numpy as np

    from datasites.jobs.models import build_model, get_weights
    from datasites.jobs.site import Refused
    from datasites.jobs.training import ROUND_KEY

    site = LocalHospital("replay-site", dry_run=False)
    plan = StudyPlan(study="replay", sites=["x"], rounds=3, epsilon=3.0, model="mlp", sample_rate=0.1).job_plan()
    weights = get_weights(build_model("mlp", seed=plan["seed"]))
    with use_hospital(site):
        first = dp_train(frame, {**weights, ROUND_KEY: 1}, plan)
        again = dp_train(frame, {**weights, ROUND_KEY: 1}, plan)
        assert again["round"] == 1 and len(site.debits) == 1
        assert all(np.array_equal(first["weights"][k], again["weights"][k]) for k in first["weights"])
        third = dp_train(frame, {**weights, ROUND_KEY: 3}, plan)  # missed round 2: rejoins
        assert third["round"] == 3 and [r for _, r in site.debits] == ["replay/round-1", "replay/round-3"]
        with pytest.raises(Refused, match="already ran round 3"):
            dp_train(frame, {**weights, ROUND_KEY: 2}, plan)
        with pytest.raises(Refused, match="whole number from 1 to 3"):
            dp_train(frame, {**weights, ROUND_KEY: float("nan")}, plan)


def test_a_round_that_diverges_releases_nothing(frame):
    from datasites.jobs.models import build_model, get_weights
    from datasites.jobs.site import Refused

    site = LocalHospital("diverge-site", dry_run=False)
    plan = StudyPlan(study="diverge", sites=["x"], rounds=2, epsilon=3.0, model="mlp", sample_rate=0.1).job_plan()
    huge = {k: v * 0 + 3e38 for k, v in get_weights(build_model("mlp", seed=plan["seed"])).items()}
    with use_hospital(site), pytest.raises(Refused, match="diverged here"):
        dp_train(frame, huge, plan)
    assert site.load("diverge", "state")["reply"] is None and len(site.debits) == 1  # paid, never released


def test_a_plan_with_update_norm_releases_no_update_longer_than_it(frame):
    """Norm bounding inside the vetted job: under secure aggregation nobody else sees a
    single update, so an honest site shrinks its own before masking."""
    import numpy as np

    from datasites.jobs.models import build_model, get_weights

    def update_norm(reply, start):
        return float(np.sqrt(sum(np.sum((reply["weights"][k].astype(float) - start[k]) ** 2) for k in start)))

    common = dict(sites=["x"], rounds=2, epsilon=3.0, model="mlp", sample_rate=0.1, lr=0.05)
    start = get_weights(build_model("mlp", seed=0))
    with use_hospital(LocalHospital("free-site", dry_run=False)):
        free = update_norm(dp_train(frame, start, StudyPlan(study="free", **common).job_plan()), start)
    bound = free / 10
    with use_hospital(LocalHospital("bounded-site", dry_run=False)):
        bounded = dp_train(frame, start, StudyPlan(study="bounded", update_norm=bound, **common).job_plan())
    assert update_norm(bounded, start) <= bound * (1 + 1e-5) < free
    assert update_norm(bounded, start) > 0.99 * bound  # shrunk to the bound, not zeroed
    with pytest.raises(ValueError, match="update_norm"):
        StudyPlan(study="nan", update_norm=float("nan"), **common)


def test_an_evaluation_cut_short_after_paying_runs_again_unpaid(frame, monkeypatch):
    """A crash between the evaluation's debit and its release (here: the model's forward
    pass fails once) costs nothing extra: the retry of the same round runs under the same
    payment, and only then does anything leave."""
    from datasites.jobs import evaluation
    from datasites.jobs.models import build_model, get_weights
    from datasites.jobs.training import ROUND_KEY

    site = LocalHospital("cut-short-site", dry_run=False)
    plan = StudyPlan(study="cut-short", sites=["x"], rounds=2, epsilon=3.0, model="mlp", sample_rate=0.1).job_plan()
    weights = {**get_weights(build_model("mlp", seed=plan["seed"])), ROUND_KEY: 1}
    real = evaluation.predict

    def crash(*args, **kwargs):
        raise MemoryError("the worker died")

    with use_hospital(site):
        monkeypatch.setattr(evaluation, "predict", crash)
        with pytest.raises(MemoryError):
            evaluation.evaluate(frame, dict(weights), plan)
        assert len(site.debits) == 1  # paid before the data was read
        monkeypatch.setattr(evaluation, "predict", real)
        reply = evaluation.evaluate(frame, dict(weights), plan)
        assert reply["evaluation"] == 1 and len(site.debits) == 1  # the same paid evaluation, now released
        assert evaluation.evaluate(frame, dict(weights), plan) == reply  # and then only fetched
        nxt = evaluation.evaluate(frame, {**weights, ROUND_KEY: 2}, plan)
        assert nxt["evaluation"] == 2 and len(site.debits) == 2
