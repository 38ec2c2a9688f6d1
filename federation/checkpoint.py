"""Versioned global models: one directory per round with the weights and what produced them.

``<study_dir>/plan.json`` fixes the plan; ``round-0003/weights.npz`` and ``meta.json``
(round, participating sites, epsilon per site, metrics) are written atomically after
each round, so a crashed study resumes from the last complete round.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint"]


@dataclass
class Checkpoint:
    round: int
    weights: dict[str, np.ndarray]
    meta: dict
    path: Path


def save_checkpoint(study_dir: Path, round_: int, weights: dict, meta: dict) -> Path:
    target = Path(study_dir) / f"round-{round_:04d}"
    tmp = Path(study_dir) / f".round-{round_:04d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    np.savez(tmp / "weights.npz", **weights)
    (tmp / "meta.json").write_text(json.dumps({"round": round_, **meta}, indent=1, default=float))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    with np.load(path / "weights.npz") as npz:
        weights = {k: npz[k] for k in npz.files}
    return Checkpoint(meta["round"], weights, meta, path)


def latest_checkpoint(study_dir: Path) -> Checkpoint | None:
    rounds = sorted(p for p in Path(study_dir).glob("round-[0-9][0-9][0-9][0-9]") if (p / "meta.json").exists())
    return load_checkpoint(rounds[-1]) if rounds else None
