"""Attack: leave something behind that changes a later execution (a vetted job, a file, a process)."""

from __future__ import annotations

import numpy as np

from syft_policies.templates import medsyft_evaluate


def plant(cohort):
    """Monkeypatch the vetted evaluation, poison numpy, drop files, start a lingering process."""
    import os

    import numpy

    import datasites.jobs.evaluation as evaluation

    evaluation.site_metrics = lambda *a, **k: {"leak": "every score"}
    evaluation.auroc = lambda *a, **k: 0.0
    numpy.mean = lambda *a, **k: 42.0
    import tempfile
    for where in (tempfile.gettempdir(), "/tmp", "/dev/shm", "/", os.getcwd(), os.path.dirname(numpy.__file__)):
        try:
            with open(os.path.join(where, "planted"), "w") as fh:
                fh.write("from the attacker")
        except OSError:
            pass
    hidden = os.path.join(tempfile.gettempdir(), "hidden")  # a directory its owner made unreadable
    os.makedirs(os.path.join(hidden, "deeper"))
    with open(os.path.join(hidden, "deeper", "rows"), "w") as fh:
        fh.write("from the attacker")
    os.chmod(os.path.join(hidden, "deeper"), 0)
    os.chmod(hidden, 0)
    if os.fork() == 0:  # a daemon that outlives this execution and waits for the next one
        os.setsid()
        if os.fork() == 0:
            import time
            time.sleep(120)
        os._exit(0)
    return {"planted": True}


def look_around(cohort):
    """A later execution: is anything left?"""
    import os

    import numpy

    import datasites.jobs.evaluation as evaluation

    import tempfile

    mine = os.getpid()
    places = (tempfile.gettempdir(), "/tmp", "/dev/shm", "/", os.getcwd(), os.path.dirname(numpy.__file__))
    return {"planted file": any(os.path.exists(os.path.join(p, "planted")) for p in places)
            or os.path.lexists(os.path.join(tempfile.gettempdir(), "hidden")),
            "numpy.mean": float(numpy.mean([1.0, 3.0])),
            "patched": evaluation.site_metrics.__name__ != "site_metrics",
            "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, mine))}


def test_nothing_one_execution_does_reaches_the_next(attacker):
    assert attacker.attack(plant) == ("released", {"planted": True})
    outcome, seen = attacker.attack(look_around)
    assert outcome == "released"
    assert seen["planted file"] is False and seen["numpy.mean"] == 2.0 and seen["patched"] is False
    assert len(seen["processes"]) <= 1  # the worker that forked this execution, nothing else


def test_a_vetted_job_after_an_attack_gives_its_normal_answer(attacker):
    from datasites.jobs.models import build_model, get_weights
    from federation import StudyPlan

    attacker.attack(plant)
    plan = StudyPlan(study="after-attack", sites=["lyon-chu"], model="mlp", rounds=1, epsilon=1.0,
                     final_eval_epsilon=4.0).job_plan()
    weights = get_weights(build_model("mlp", seed=0))
    attacker.submit(medsyft_evaluate, plan=plan)
    outcome, reply = attacker.run(medsyft_evaluate, weights=weights)
    assert outcome == "released" and "leak" not in reply
    assert set(reply) == {"evaluation", "histogram", "receipt"}
    # the counts the vetted job computes here, outside any datasite, up to its noise (scale 1/4)
    from datasites.cohort_asset import cohort_frame
    from datasites.data import private_dir
    from datasites.jobs.cohort import split_rows
    from datasites.jobs.evaluation import predict, score_histograms
    from datasites.jobs.models import model_inputs
    from synthetic_data import load_synthea

    site = attacker.site
    frame = cohort_frame(load_synthea(private_dir(site.site_dir.parent, site.spec.name)), site_uid="x")
    inputs, labels = model_inputs(split_rows(frame, "test"), "mlp")
    positive, negative = score_histograms(predict("mlp", weights, inputs), labels)
    off = np.abs(np.r_[reply["histogram"]["positive"], reply["histogram"]["negative"]] - np.r_[positive, negative])
    assert off.sum() <= 16 and off.max() <= 4  # 64 cells, each exact with probability 0.96
