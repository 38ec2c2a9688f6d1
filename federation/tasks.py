"""What a study learns: the vetted jobs it asks for, its model, and how replies pool.

A study's rounds, deadlines, retries and secure aggregation do not depend on the task;
these do. Each task is a small subclass of :class:`Task` in ``TASKS``, chosen by the
plan's model (``task_of``). Pooling is post-processing of the sites' noised replies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Task", "TASKS", "task_of"]


class Task(ABC):
    name: str
    metric: str  # the headline number of an evaluation, as named in history and summaries

    @abstractmethod
    def models(self) -> tuple[str, ...]: ...

    @abstractmethod
    def initial_weights(self, model: str, *, seed: int) -> dict: ...

    @abstractmethod
    def templates(self, *, secure: bool) -> tuple:
        """(train, evaluate) request templates (``syft_policies.templates``)."""

    @abstractmethod
    def score(self, evaluations: list[dict]) -> float:
        """The pooled headline number of the sites' evaluations (ValueError if none)."""

    @abstractmethod
    def from_secure_sum(self, total: dict) -> dict:
        """One evaluation from the unmasked sum of the survivors' masked evaluations."""


class Classification(Task):
    name, metric = "classification", "auroc"

    def models(self):
        from datasites.jobs.models import MODELS

        return tuple(MODELS)

    def initial_weights(self, model, *, seed):
        from datasites.jobs.models import build_model, get_weights

        return get_weights(build_model(model, seed=seed))

    def templates(self, *, secure):
        from syft_policies.templates import medsyft_evaluate, medsyft_secure_train, medsyft_train

        return (medsyft_secure_train if secure else medsyft_train), medsyft_evaluate

    def score(self, evaluations):
        from .metrics import pooled_auroc

        return pooled_auroc(evaluations)

    def from_secure_sum(self, total):
        from datasites.jobs.evaluation import BIN_EDGES

        counts = {k: [int(v) for v in np.rint(total[k])] for k in ("positive", "negative")}
        return {"histogram": {"edges": [float(e) for e in BIN_EDGES], **counts}}


class Segmentation(Task):
    """Brain-tumour segmentation (BraTS regions); the headline is whole-tumour Dice."""

    name, metric = "segmentation", "dice"
    regions_released = ("WT", "TC", "ET")
    region_names = {"WT": "whole_tumour", "TC": "tumour_core", "ET": "enhancing_tumour"}

    def models(self):
        from datasites.jobs.segmentation import SEG_MODELS

        return tuple(SEG_MODELS)

    def initial_weights(self, model, *, seed):
        from datasites.jobs.models import get_weights
        from datasites.jobs.segmentation import build_segmentation_model

        return get_weights(build_segmentation_model(model, seed=seed))

    def templates(self, *, secure):
        from syft_policies.templates import medsyft_secure_train, medsyft_segment_evaluate, medsyft_segment_train

        return (medsyft_secure_train if secure else medsyft_segment_train), medsyft_segment_evaluate

    def regions(self, evaluations: list[dict]) -> dict[str, float]:
        """Mean Dice per region over the sites' test cases, weighted by their noised counts,
        clipped to [0, 1] (noise can push a mean outside; clipping is post-processing, free)."""
        done = [e for e in evaluations if e.get("dice") is not None]
        if not done:
            raise ValueError("no site returned a Dice evaluation")
        weights = np.array([max(float(e["cases"]), 0.0) for e in done])
        if weights.sum() <= 0:
            weights = np.ones(len(done))  # noise left no positive count: weigh the sites alike
        return {self.region_names[r]: float(np.clip(np.dot(weights, [e["dice"][r] for e in done]) / weights.sum(),
                                                    0.0, 1.0))
                for r in self.regions_released}

    def score(self, evaluations):
        return self.regions(evaluations)["whole_tumour"]

    def from_secure_sum(self, total):
        cases = float(np.asarray(total["cases"]).ravel()[0])
        sums = np.asarray(total["dice_sum"], dtype=float).ravel()
        return {"dice": {r: float(v) / max(cases, 1.0) for r, v in zip(self.regions_released, sums)},
                "cases": int(round(cases))}


TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Segmentation())}


def task_of(model: str) -> Task:
    """The task whose models include ``model`` (ValueError naming every model otherwise)."""
    for task in TASKS.values():
        if model in task.models():
            return task
    known = sorted(m for t in TASKS.values() for m in t.models())
    raise ValueError(f"model {model!r}: choose one of {known}")
