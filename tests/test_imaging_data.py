"""Synthetic BraTS-shaped MRI: determinism, non-IID centres, BraTS export/load, loader errors, mocks."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from synthetic_data.imaging import (CENTRES, MODALITIES, ImagingCohort, ImagingDataError, ImagingProfile,
                                    axial_slices, export_brats, generate_centre, load_brats, make_imaging_mock,
                                    split_cases)

A, B = CENTRES["centre-a"], CENTRES["centre-b"]


@pytest.fixture(scope="module")
def cohorts():
    return {name: generate_centre(p, 60, seed=3) for name, p in CENTRES.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small real export on disk; broken-folder tests work on copies of it."""
    cohort = generate_centre(A, 4, seed=1, size=32)
    return cohort, export_brats(cohort, tmp_path_factory.mktemp("brats") / "centre-a")


def test_same_seed_same_cohort_and_cases_do_not_depend_on_count():
    one, two = generate_centre(B, 5, seed=7, size=32), generate_centre(B, 5, seed=7, size=32)
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.case_ids == two.case_ids == [f"MSY-B-{i:04d}" for i in range(1, 6)]
    other = generate_centre(B, 5, seed=8, size=32)
    assert not np.array_equal(one.images, other.images)
    np.testing.assert_array_equal(generate_centre(B, 2, seed=7, size=32).images, one.images[:2])


def test_shapes_dtypes_and_spacing_follow_profile(cohorts):
    a, b = cohorts["centre-a"], cohorts["centre-b"]
    assert a.images.dtype == np.float32 and a.labels.dtype == np.uint8
    assert a.images.shape == (60, 4, 16, 64, 64) and a.labels.shape == (60, 16, 64, 64)
    assert b.images.shape[2] == 12  # thicker slices: fewer of them
    assert a.spacing == (4.5, 3.125, 3.125) and b.spacing == (6.0, 3.125, 3.125)
    assert MODALITIES == ("t1", "t1ce", "t2", "flair")
    assert np.isfinite(a.images).all() and (a.images >= 0).all()


def test_centres_differ_in_intensity_tumour_size_and_grade(cohorts):
    a, b = cohorts["centre-a"], cohorts["centre-b"]
    ratio = a.images.mean(axis=(0, 2, 3, 4)) / b.images.mean(axis=(0, 2, 3, 4))
    assert (np.abs(np.log(ratio)) > np.log(1.2)).all(), ratio  # every modality, one way or the other

    def whole_tumour_ml(c):
        return (c.labels > 0).sum(axis=(1, 2, 3)) * np.prod(c.spacing) / 1000

    assert np.median(whole_tumour_ml(a)) > 2 * np.median(whole_tumour_ml(b))
    high_grade = {n: (c.labels == 1).any(axis=(1, 2, 3)).mean() for n, c in cohorts.items()}
    assert high_grade["centre-a"] > 0.65 and high_grade["centre-b"] < 0.5
    assert high_grade["centre-a"] - high_grade["centre-b"] > 0.3


def test_labels_brats_values_and_tumour_contrast(cohorts):
    for c in cohorts.values():
        assert set(np.unique(c.labels)) <= {0, 1, 2, 4}
        assert (c.labels > 0).any(axis=(1, 2, 3)).all()  # every case has a tumour
        t1ce, flair = c.images[:, 1], c.images[:, 3]
        enhancing, oedema = c.labels == 4, c.labels == 2
        assert t1ce[enhancing].mean() > 1.5 * t1ce[oedema].mean()
        head = c.images.max(axis=1) > 0
        brain_flair = flair[head & (c.labels == 0)].mean()
        assert flair[c.labels > 0].mean() > 1.3 * brain_flair  # whole tumour stands out on FLAIR
        # per case too: where both exist, the enhancing rim outshines the oedema on T1ce
        both = enhancing.any(axis=(1, 2, 3)) & oedema.any(axis=(1, 2, 3))
        brighter = [t1ce[i][enhancing[i]].mean() > t1ce[i][oedema[i]].mean() for i in np.flatnonzero(both)]
        assert all(brighter)


def test_export_then_load_round_trips_exactly(exported):
    cohort, folder = exported
    case = cohort.case_ids[0]
    assert sorted(p.name for p in (folder / case).iterdir()) == sorted(
        f"{case}_{k}.nii.gz" for k in (*MODALITIES, "seg"))
    back = load_brats(folder)
    assert back.case_ids == cohort.case_ids
    np.testing.assert_array_equal(back.images, cohort.images)
    np.testing.assert_array_equal(back.labels, cohort.labels)
    assert back.images.dtype == np.float32 and back.labels.dtype == np.uint8
    assert back.spacing == pytest.approx(cohort.spacing)
    img = nib.load(folder / case / f"{case}_flair.nii.gz")
    assert img.shape == cohort.images.shape[2:][::-1]  # stored (x, y, z)
    assert img.header.get_zooms() == pytest.approx(cohort.spacing[::-1])


def test_files_carry_no_identifier_or_time_stamp(exported):
    cohort, folder = exported
    case = cohort.case_ids[1]
    for kind in (*MODALITIES, "seg"):
        path = folder / case / f"{case}_{kind}.nii.gz"
        raw = path.read_bytes()
        assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"  # gzip: no FNAME flag, mtime 0
        header = nib.load(path).header
        assert header["descrip"].tobytes().strip(b"\0") == b""
        assert case.encode() not in gzip.decompress(raw)[:352]


def test_export_refuses_a_non_empty_folder(exported, tmp_path):
    cohort, folder = exported
    with pytest.raises(FileExistsError):
        export_brats(cohort, folder)


def _broken(src, dst, case_index, kind, edit):
    """Copy the export and rewrite one file of one case with ``edit(array) -> array``."""
    shutil.copytree(src, dst)
    case = sorted(p.name for p in dst.iterdir())[case_index]
    path = dst / case / f"{case}_{kind}.nii.gz"
    img = nib.load(path)
    data = edit(np.asanyarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    return case, path.name


@pytest.mark.parametrize("problem, case_index, kind, edit, expect", [
    ("label 3", 2, "seg", lambda a: np.where(a == 4, 3, a).astype(np.uint8), "label values outside"),
    ("NaN voxel", 3, "t2", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 500, np.nan, a).astype(
        np.float32), "non-finite"),
    ("shape within case", 1, "t1ce", lambda a: a[:-1], "(31, 32, 16) but MSY-A-0002_t1.nii.gz has (32, 32, 16)"),
    ("4-D volume", 0, "flair", lambda a: a[..., None], "3-D"),
])
def test_broken_file_names_case_and_file(exported, tmp_path, problem, case_index, kind, edit, expect):
    case, name = _broken(exported[1], tmp_path / "broken", case_index, kind, edit)
    with pytest.raises(ImagingDataError) as info:
        load_brats(tmp_path / "broken")
    _assert_clear(str(info.value), case, name, expect)


def test_shape_mismatch_across_cases_names_both_shapes(exported, tmp_path):
    shutil.copytree(exported[1], tmp_path / "mixed")
    small = generate_centre(A, 1, seed=2, size=16)
    small.case_ids = ["MSY-A-0099"]
    export_brats(small, tmp_path / "small")
    shutil.move(tmp_path / "small" / "MSY-A-0099", tmp_path / "mixed" / "MSY-A-0099")
    with pytest.raises(ImagingDataError) as info:
        load_brats(tmp_path / "mixed")
    message = str(info.value)
    _assert_clear(message, "MSY-A-0099", "MSY-A-0099_t1.nii.gz", "(16, 16, 16)")
    assert "(32, 32, 16)" in message and "case MSY-A-0001" in message


def test_spacing_mismatch_within_case(exported, tmp_path):
    shutil.copytree(exported[1], tmp_path / "spacing")
    case = exported[0].case_ids[2]
    path = tmp_path / "spacing" / case / f"{case}_seg.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([1.0, 1.0, 1.0, 1.0])), path)
    with pytest.raises(ImagingDataError) as info:
        load_brats(tmp_path / "spacing")
    _assert_clear(str(info.value), case, path.name, "spacing")


def test_missing_modality_and_unreadable_file(exported, tmp_path):
    shutil.copytree(exported[1], tmp_path / "missing")
    case = exported[0].case_ids[3]
    (tmp_path / "missing" / case / f"{case}_t1ce.nii.gz").unlink()
    with pytest.raises(ImagingDataError) as info:
        load_brats(tmp_path / "missing")
    _assert_clear(str(info.value), case, f"{case}_t1ce.nii.gz", "missing")

    shutil.copytree(exported[1], tmp_path / "truncated")
    path = tmp_path / "truncated" / case / f"{case}_seg.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImagingDataError) as info:
        load_brats(tmp_path / "truncated")
    _assert_clear(str(info.value), case, path.name, "cannot be read")


def test_empty_or_absent_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "survival_info.csv").write_text("not a case\n")  # stray files are not cases
    for folder, expect in ((tmp_path / "empty", "no case folders"), (tmp_path / "absent", "no such folder")):
        with pytest.raises(ImagingDataError) as info:
            load_brats(folder)
        _assert_clear(str(info.value), str(folder), "", expect)


def _assert_clear(message: str, case: str, file: str, expect: str):
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message
    assert case in message and file in message and expect in message
    assert not re.search(r"\d+\.\d{3,}|nan\b|array\(", message)  # no voxel values


def test_mock_is_independent_of_private():
    private = generate_centre(A, 40, seed=5)
    mock = make_imaging_mock(A, 40, seed=5)
    assert all(c.startswith("MOCK-A-") for c in mock.case_ids)
    assert not set(mock.case_ids) & set(private.case_ids)

    def digests(arrays):
        return {hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays}

    assert not digests(axial_slices(mock)[0]) & digests(axial_slices(private)[0])
    assert not digests(mock.images) & digests(private.images)
    assert not digests(mock.images.reshape(-1, 64, 64)) & digests(private.images.reshape(-1, 64, 64))
    np.testing.assert_array_equal(make_imaging_mock(A, 2, seed=5).images, mock.images[:2])  # deterministic
    assert mock.images.shape[1:] == private.images.shape[1:]  # same public profile, same shape


def test_axial_slices_pick_largest_tumour_and_z_score(cohorts):
    cohort = cohorts["centre-b"]
    images, labels = axial_slices(cohort)
    n = len(cohort)
    assert images.shape == (n, 4, 64, 64) and images.dtype == np.float32
    assert labels.shape == (n, 64, 64) and labels.dtype == np.uint8
    area = (cohort.labels > 0).sum(axis=(2, 3))
    np.testing.assert_array_equal((labels > 0).sum(axis=(1, 2)), area.max(axis=1))
    head = images.any(axis=1)
    for i in range(n):
        for c in range(4):
            values = images[i, c][head[i]]
            assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-4
    assert (images[:, :, ~head.any(axis=0)] == 0).all()  # background stays 0
    z = area.argmax(axis=1)
    np.testing.assert_array_equal(labels, cohort.labels[np.arange(n), z])
    empty_images, empty_labels = axial_slices(generate_centre(B, 0, seed=1))
    assert empty_images.shape == (0, 4, 64, 64) and empty_labels.shape == (0, 64, 64)


def test_split_is_fixed_by_case_ids():
    ids = [f"MSY-A-{i:04d}" for i in range(1, 401)]
    test = split_cases(ids, seed=2024)
    assert test.dtype == bool and test.shape == (400,)
    assert 0.18 < test.mean() < 0.32
    np.testing.assert_array_equal(split_cases(ids[::-1], seed=2024), test[::-1])  # order does not matter
    np.testing.assert_array_equal(split_cases(ids[:50], seed=2024), test[:50])  # nor other cases
    assert not np.array_equal(split_cases(ids, seed=1), test)
    assert split_cases(ids, test_fraction=0.0, seed=1).sum() == 0


def test_profile_and_cohort_validate():
    with pytest.raises(ValueError, match="intensity_scale"):
        ImagingProfile("x", (1.0, 1.0, 1.0), 0.1, 0.02, 4.0, 20.0, 0.5)
    with pytest.raises(ValueError, match="high_grade_fraction"):
        ImagingProfile("x", (1.0,) * 4, 0.1, 0.02, 4.0, 20.0, 1.5)
    with pytest.raises(ValueError, match="labels shape"):
        ImagingCohort(np.zeros((1, 4, 2, 3, 3), np.float32), np.zeros((1, 2, 3, 4), np.uint8), ["c"], (1, 1, 1))
    assert {p.code for p in CENTRES.values()} == {"A", "B"}
