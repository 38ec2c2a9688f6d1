"""Each hospital's private export and its mock twin, on disk in the site directory.

``<home>/<site>/data/private`` holds the hospital's Synthea export (generated and
partitioned across the network, or copied from a real Synthea run named by the spec's
``dataset.source``); ``<home>/<site>/data/mock`` holds its independently generated twin.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from synthetic_data import generate_population, make_mock, partition_hospitals

from .spec import HospitalSpec

__all__ = ["ensure_site_data", "private_dir", "mock_dir", "replace_dir", "DEFAULT_PATIENTS", "DEFAULT_SEED"]

DEFAULT_PATIENTS = 3000
DEFAULT_SEED = 7
MOCK_PATIENTS = 150


def private_dir(home: Path, site: str) -> Path:
    return home / site / "data" / "private"


def mock_dir(home: Path, site: str) -> Path:
    return home / site / "data" / "mock"


def replace_dir(target: Path, write) -> None:
    """``write(staging)`` into a fresh sibling folder, then swap it in for ``target``: a crash
    mid-write leaves the old data, never half of the new."""
    staging = target.with_name(target.name + ".incoming")
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _complete(d: Path) -> bool:
    return (d / "procedures.csv").exists()


def ensure_site_data(specs: list[HospitalSpec], home: Path, *, n_patients: int = DEFAULT_PATIENTS,
                     seed: int = DEFAULT_SEED, overwrite: bool = False) -> bool:
    """Write private data and mocks for sites that lack them. True if anything was written."""
    wrote = False
    if any(s.is_imaging for s in specs):  # imaging centres hold BraTS exports, not Synthea CSVs
        from .imaging_asset import ensure_imaging_data

        wrote = ensure_imaging_data(specs, home, seed=seed, overwrite=overwrite)
        specs = [s for s in specs if not s.is_imaging]
        if not specs:
            return wrote
    todo = [s for s in specs if overwrite or not _complete(private_dir(home, s.name))
            or not _complete(mock_dir(home, s.name))]
    if not todo:
        return wrote
    from synthetic_data import load_synthea

    for spec in todo:  # a real export is validated where the owner keeps it, before anything is copied
        if spec.source is not None:
            load_synthea(spec.source)
    generated = [s for s in specs if s.source is None]
    parts = {}
    if generated:
        population = generate_population(n_patients, seed=seed)
        parts = partition_hospitals(population, [s.profile for s in generated], seed=seed)
    for spec in todo:
        replace_dir(private_dir(home, spec.name), (lambda d, s=spec: shutil.copytree(s.source, d))
                    if spec.source is not None else parts[spec.name].write)
        make_mock(spec.profile, MOCK_PATIENTS, seed=seed).write(mock_dir(home, spec.name))
    return True
