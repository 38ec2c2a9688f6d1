"""An imaging centre's data: its BraTS-layout export, its mock twin, and the published asset.

``<home>/<site>/data/private`` holds the centre's brain MRI in BraTS layout (generated
from the spec's ``[imaging] profile``, or copied from a real BraTS download named by
``dataset.source``: both load through ``synthetic_data.imaging.load_brats``), and
``data/mock`` an independently generated twin. The asset a study reads is one axial slice
per case (the privacy unit stays a patient), z-scored per case, with the data owner's
fixed test split: a dict of arrays, which crosses into the isolated worker as plain data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .data import mock_dir, private_dir, replace_dir
from .spec import HospitalSpec

__all__ = ["ensure_imaging_data", "imaging_asset", "IMAGING_ASSET", "IMAGING_DESCRIPTION", "MOCK_CASES"]

IMAGING_ASSET = "axial_slices"
IMAGING_DESCRIPTION = ("One axial slice per case of T1, T1ce, T2 and FLAIR (z-scored per case), the BraTS "
                       "segmentation (0, 1 necrotic core, 2 oedema, 4 enhancing) and a fixed test split. "
                       "No identifiers: case ids are not published.")
MOCK_CASES = 40
SPLIT_SEED = 2024


def _complete(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("*/*_seg.nii.gz"))


def ensure_imaging_data(specs: list[HospitalSpec], home: Path, *, seed: int = 7, cases: int | None = None,
                        overwrite: bool = False) -> bool:
    """Write each imaging centre's private export and mock that are missing. True if any."""
    from synthetic_data.imaging import CENTRES, export_brats, generate_centre, load_brats, make_imaging_mock

    todo = [s for s in specs if s.is_imaging and (overwrite or not _complete(private_dir(home, s.name))
                                                   or not _complete(mock_dir(home, s.name)))]
    for spec in todo:
        if spec.imaging not in CENTRES:
            raise ValueError(f"{spec.path}: imaging.profile {spec.imaging!r} is not one of {sorted(CENTRES)}")
        if spec.source is not None:
            load_brats(spec.source)  # a real download is checked where its owner keeps it, before any copy
    for i, spec in enumerate(todo):
        profile = CENTRES[spec.imaging]
        if spec.source is not None:
            replace_dir(private_dir(home, spec.name), lambda d, s=spec: shutil.copytree(s.source, d))
        else:
            cohort = generate_centre(profile, cases or spec.imaging_cases, seed=seed + 1000 * i)
            replace_dir(private_dir(home, spec.name), lambda d, c=cohort: export_brats(c, d))
        mock = mock_dir(home, spec.name)
        shutil.rmtree(mock, ignore_errors=True)
        export_brats(make_imaging_mock(profile, MOCK_CASES, seed=seed + 1000 * i), mock)
    return bool(todo)


def imaging_asset(directory: Path) -> dict[str, np.ndarray]:
    """The published asset of the BraTS export in ``directory``."""
    from synthetic_data.imaging import axial_slices, load_brats, split_cases

    cohort = load_brats(directory)
    images, labels = axial_slices(cohort)
    test = np.asarray(split_cases(cohort.case_ids, seed=SPLIT_SEED), dtype=bool)
    return {"images": images.astype(np.float32), "labels": labels.astype(np.uint8), "test": test}
