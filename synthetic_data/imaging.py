"""Synthetic BraTS-shaped brain MRI: imaging centres, mock twins, BraTS export and loader.

A case is a small axial slab of a head (T1, T1ce, T2, FLAIR) with a glioma segmented in the
BraTS convention (0 background, 1 necrotic core, 2 oedema, 4 enhancing). Centres differ on
purpose (scanner gain per sequence, bias field, noise, slice thickness, tumour size and grade
mix) so that a federated model meets non-IID sites. Everything is drawn from a seed with
numpy only; nothing comes from real patients. ``load_brats`` reads the same folder layout as
a BraTS 2020/2021 download, so real data enters through the one validated path.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "MODALITIES", "ImagingProfile", "CENTRES", "ImagingCohort", "ImagingDataError", "generate_centre",
    "make_imaging_mock", "export_brats", "load_brats", "axial_slices", "split_cases",
]

MODALITIES = ("t1", "t1ce", "t2", "flair")
LABEL_VALUES = (0, 1, 2, 4)  # BraTS 2018-2021: background, necrotic core, oedema, enhancing

_FOV_MM = 200.0  # in-plane field of view; spacing = _FOV_MM / size
_SLAB_MM = 72.0  # axial coverage; slice count = _SLAB_MM / slice thickness
_SUBSLICES = 3  # samples through each slice's thickness, averaged: thick slices blur along z

# Tissues painted on the sub-slice grid, and their intensity per modality before centre effects.
_BG, _SCALP, _SKULL, _CSF, _GM, _WM, _NECROSIS, _ENHANCING, _OEDEMA = range(9)
_TISSUE_INTENSITY = np.array([
    # t1    t1ce  t2    flair
    [0.00, 0.00, 0.00, 0.00],  # background
    [0.95, 0.95, 0.55, 0.75],  # scalp (fat: bright on T1)
    [0.08, 0.08, 0.08, 0.08],  # skull (no signal)
    [0.20, 0.22, 1.00, 0.12],  # CSF: dark on T1 and FLAIR, bright on T2
    [0.55, 0.57, 0.62, 0.62],  # grey matter
    [0.78, 0.80, 0.42, 0.48],  # white matter
    [0.28, 0.30, 0.90, 0.55],  # necrotic core
    [0.50, 1.15, 0.70, 0.78],  # enhancing tumour: bright on T1ce
    [0.45, 0.48, 0.88, 0.95],  # oedema: bright on T2 and FLAIR
], dtype=np.float32)
_TISSUE_LABEL = np.array([0, 0, 0, 0, 0, 0, 1, 4, 2], dtype=np.uint8)

# Head shape in mm (semi-axes left-right, anterior-posterior, cranio-caudal) and shell radii,
# as fractions of the head ellipsoid: scalp outside, then skull, subarachnoid CSF, brain.
_HEAD_MM = (70.0, 88.0, 95.0)
_SKULL_R, _CSF_R, _BRAIN_R, _WM_R = 0.93, 0.87, 0.84, 0.74


@dataclass(frozen=True)
class ImagingProfile:
    """What makes one simulated scanning centre different from another.

    ``intensity_scale`` is the scanner's arbitrary-unit gain per modality (t1, t1ce, t2, flair);
    ``bias_strength`` the sd of the log bias field; ``noise_sd`` the Rician noise sd on the tissue
    scale (white matter about 0.8) before that gain; ``slice_thickness_mm`` sets how many slices
    cover the slab and how much each blurs along z; ``tumour_radius_mm`` the mean whole-tumour
    radius; ``high_grade_fraction`` the share of high-grade tumours (necrotic core and enhancing
    rim) against low-grade (mostly oedema, at most a small enhancing focus).
    """

    name: str
    intensity_scale: tuple[float, float, float, float]
    bias_strength: float
    noise_sd: float
    slice_thickness_mm: float
    tumour_radius_mm: float
    high_grade_fraction: float

    def __post_init__(self):
        if len(self.intensity_scale) != len(MODALITIES) or min(self.intensity_scale) <= 0:
            raise ValueError(f"{self.name}: intensity_scale needs {len(MODALITIES)} positive gains "
                             f"({', '.join(MODALITIES)})")
        if not 0 <= self.high_grade_fraction <= 1:
            raise ValueError(f"{self.name}: high_grade_fraction must be within [0, 1]")
        if self.bias_strength < 0 or self.noise_sd < 0:
            raise ValueError(f"{self.name}: bias_strength and noise_sd must not be negative")
        if not 1.0 <= self.slice_thickness_mm <= _SLAB_MM / 4:
            raise ValueError(f"{self.name}: slice_thickness_mm must be within [1, {_SLAB_MM / 4:g}]")
        if not 5.0 <= self.tumour_radius_mm <= 40.0:
            raise ValueError(f"{self.name}: tumour_radius_mm must be within [5, 40]")

    @property
    def code(self) -> str:
        """Short centre code used in case ids: ``centre-a`` -> ``A``."""
        return re.sub(r"[^A-Za-z0-9]", "", self.name.rsplit("-", 1)[-1])[:4].upper() or "X"


CENTRES: dict[str, ImagingProfile] = {
    # 3 T, thin slices, little bias and noise; a tertiary referral centre: large, mostly high-grade.
    "centre-a": ImagingProfile("centre-a", intensity_scale=(1000.0, 1150.0, 1400.0, 900.0), bias_strength=0.08,
                               noise_sd=0.02, slice_thickness_mm=4.5, tumour_radius_mm=24.0,
                               high_grade_fraction=0.8),
    # 1.5 T, thick slices, strong bias field and noise; smaller tumours, more low-grade.
    "centre-b": ImagingProfile("centre-b", intensity_scale=(520.0, 700.0, 1050.0, 1250.0), bias_strength=0.3,
                               noise_sd=0.05, slice_thickness_mm=6.0, tumour_radius_mm=17.0,
                               high_grade_fraction=0.35),
}


@dataclass
class ImagingCohort:
    """Cases of one centre: ``images`` [N, 4, D, H, W] float32 in ``MODALITIES`` order, ``labels``
    [N, D, H, W] uint8 (BraTS values), non-identifying ``case_ids``, ``spacing`` in mm along (D, H, W)."""

    images: np.ndarray
    labels: np.ndarray
    case_ids: list[str]
    spacing: tuple[float, float, float]

    def __post_init__(self):
        if self.images.ndim != 5 or self.images.shape[1] != len(MODALITIES):
            raise ValueError(f"images must be [N, {len(MODALITIES)}, D, H, W], got shape {self.images.shape}")
        if self.labels.shape != self.images.shape[:1] + self.images.shape[2:]:
            raise ValueError(f"labels shape {self.labels.shape} does not match images {self.images.shape}")
        if len(self.case_ids) != len(self.images):
            raise ValueError(f"{len(self.case_ids)} case ids for {len(self.images)} cases")

    def __len__(self) -> int:
        return len(self.case_ids)


class ImagingDataError(ValueError):
    """A BraTS folder cannot be loaded; the message names the case and file and what to fix."""


# --------------------------------------------------------------------------- generation

def _seed_sequence(*parts) -> np.random.SeedSequence:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.SeedSequence(int.from_bytes(digest[:16], "little"))


def _random_field(rng: np.random.Generator, z, y, x, *, wavelength_mm: float, modes: int) -> np.ndarray:
    """A smooth random field of about unit variance: a sum of plane waves in random directions.

    Analytic rather than filtered noise, so it is cheap on any grid and needs no scipy.
    """
    directions = rng.standard_normal((modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = 2 * np.pi / (wavelength_mm * rng.uniform(0.75, 1.35, modes))
    phase = rng.uniform(0, 2 * np.pi, modes)
    out = 0.0
    for (dz, dy, dx), ki, ph in zip(directions, k, phase):
        out = out + np.cos(float(ki * dz) * z + float(ki * dy) * y + float(ki * dx) * x + float(ph))
    return np.asarray(out * math.sqrt(2 / modes), dtype=np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _tumour(rng, grade_high: bool, radius: float, centre, x, y, z) -> np.ndarray:
    """Tissue codes of one glioma (0 outside) on the head-frame grid: perturbed ellipsoids."""
    rot = _random_rotation(rng)
    axes = radius * rng.uniform(0.8, 1.2, 3)
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    u = [(float(rot[0, i]) * dx + float(rot[1, i]) * dy + float(rot[2, i]) * dz) / float(axes[i]) for i in range(3)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)  # 1 on the unperturbed whole-tumour surface

    def lumpy(amplitude: float, wavelength: float) -> np.ndarray:
        return 1 + amplitude * _random_field(rng, z, y, x, wavelength_mm=wavelength, modes=6)

    out = np.zeros(rho.shape, dtype=np.int8)
    out[rho * lumpy(0.18, radius) < 1] = _OEDEMA
    if grade_high:  # enhancing rim around a necrotic core, inside the oedema
        core = rng.uniform(0.5, 0.7)
        rho_core = rho / core * lumpy(0.12, 0.8 * radius)
        out[rho_core < 1] = _ENHANCING
        out[rho_core * lumpy(0.1, 0.6 * radius) < rng.uniform(0.45, 0.7)] = _NECROSIS
    elif rng.random() < 0.5:  # low grade: at most a small enhancing focus
        offset = rng.uniform(-0.3, 0.3, 3) * radius
        focus = rng.uniform(0.15, 0.25) * radius
        out[np.sqrt((dx - offset[0]) ** 2 + (dy - offset[1]) ** 2 + (dz - offset[2]) ** 2) < focus] = _ENHANCING
    return out


def _n_slices(profile: ImagingProfile) -> int:
    return max(4, round(_SLAB_MM / profile.slice_thickness_mm))


def _case(rng: np.random.Generator, profile: ImagingProfile, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One case: images [4, D, H, W] float32 and labels [D, H, W] uint8."""
    n_slices = _n_slices(profile)
    pixel = _FOV_MM / size
    thick = profile.slice_thickness_mm
    # scanner-frame coordinates (mm): sub-slices through each slice's thickness, then rows, columns
    sub = (np.arange(_SUBSLICES) + 0.5) / _SUBSLICES - 0.5
    zs = ((np.arange(n_slices)[:, None] - (n_slices - 1) / 2 + sub[None, :]) * thick).ravel().astype(np.float32)
    ys = ((np.arange(size) - (size - 1) / 2) * pixel).astype(np.float32)
    xs = ys.copy()

    # head pose and size: small in-plane rotation, shift, scale; slab level within the head
    angle = np.deg2rad(rng.uniform(-8, 8))
    shift = rng.uniform(-5, 5, 2)
    scale = rng.uniform(0.92, 1.08)
    level = rng.uniform(-6, 10)
    zz, yy, xx = zs[:, None, None], ys[None, :, None], xs[None, None, :]
    x = ((np.cos(angle) * (xx - shift[0]) + np.sin(angle) * (yy - shift[1])) / scale).astype(np.float32)
    y = ((-np.sin(angle) * (xx - shift[0]) + np.cos(angle) * (yy - shift[1])) / scale).astype(np.float32)
    z = ((zz + level) / scale).astype(np.float32)  # x, y: [1, H, W]; z: [D*S, 1, 1]; broadcast on use

    r = np.sqrt((x / _HEAD_MM[0]) ** 2 + (y / _HEAD_MM[1]) ** 2 + (z / _HEAD_MM[2]) ** 2)
    r = r * (1 + 0.015 * _random_field(rng, z, y, x, wavelength_mm=120, modes=4))
    gyri = _random_field(rng, z, y, x, wavelength_mm=18, modes=8)
    tissue = np.zeros((len(zs), size, size), dtype=np.int8)
    tissue[r < 1] = _SCALP
    tissue[r < _SKULL_R] = _SKULL
    tissue[r < _CSF_R] = _CSF
    brain = r < _BRAIN_R
    tissue[brain] = _GM
    tissue[r < _WM_R + 0.035 * gyri] = _WM
    tissue[brain & (r > _WM_R) & (gyri > 1.1)] = _CSF  # sulci
    tissue[brain & (np.abs(x) < 1.5) & (r > 0.3)] = _CSF  # interhemispheric fissure
    for side in (-1, 1):  # lateral ventricles
        vx, vy, vz = x - side * 8.0, y - 2.0, z + 4.0
        tissue[(vx / 5.0) ** 2 + (vy / 20.0) ** 2 + (vz / 13.0) ** 2 < 1] = _CSF

    # tumour: centre inside the brain, within the slab's middle so the slab holds most of it
    grade_high = rng.random() < profile.high_grade_fraction
    radius = profile.tumour_radius_mm * float(np.clip(rng.lognormal(0, 0.2), 0.5, 1.8))
    t, rad = rng.uniform(0, 2 * np.pi), 0.5 * np.sqrt(rng.random())
    centre = (rad * np.cos(t) * _HEAD_MM[0] * _BRAIN_R, rad * np.sin(t) * _HEAD_MM[1] * _BRAIN_R,
              (level + rng.uniform(-0.3, 0.3) * _SLAB_MM / 2) / scale)
    tumour = _tumour(rng, grade_high, radius, centre, x, y, z)
    tissue = np.where(brain & (tumour > 0), tumour, tissue)

    # intensities per tissue, tumour contrast varies a little per case, fine texture everywhere
    table = _TISSUE_INTENSITY.copy()
    table[_NECROSIS:] *= rng.uniform(0.92, 1.08, (3, 1)).astype(np.float32)
    texture = 1 + 0.04 * _random_field(rng, z, y, x, wavelength_mm=8, modes=6)
    texture = np.where(tissue >= _NECROSIS, texture + 0.05 * _random_field(rng, z, y, x, wavelength_mm=6, modes=6),
                       texture)
    sub_images = np.moveaxis(table[tissue], -1, 0) * texture  # [4, D*S, H, W]
    images = sub_images.reshape(len(MODALITIES), n_slices, _SUBSLICES, size, size).mean(axis=2)
    centre_tissue = tissue[_SUBSLICES // 2::_SUBSLICES]
    labels = _TISSUE_LABEL[centre_tissue]

    # centre effects: smooth multiplicative bias field, Rician noise, scanner gain; background masked
    zc = zs[_SUBSLICES // 2::_SUBSLICES][:, None, None]
    for c, gain in enumerate(profile.intensity_scale):
        bias = np.exp(profile.bias_strength * _random_field(rng, zc, ys[None, :, None], xs[None, None, :],
                                                            wavelength_mm=300, modes=3))
        signal = images[c] * bias
        noise = rng.standard_normal((2,) + signal.shape, dtype=np.float32) * np.float32(profile.noise_sd)
        images[c] = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2) * np.float32(gain)
    images[:, centre_tissue == _BG] = 0
    return images.astype(np.float32, copy=False), labels


def _generate(profile: ImagingProfile, n_cases: int, stream: np.random.SeedSequence, prefix: str,
              size: int) -> ImagingCohort:
    if n_cases < 0:
        raise ValueError(f"n_cases must not be negative, got {n_cases}")
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    cases = [_case(np.random.default_rng(child), profile, size) for child in stream.spawn(n_cases)]
    n_slices = _n_slices(profile)
    images = np.stack([c[0] for c in cases]) if cases else np.zeros((0, 4, n_slices, size, size), np.float32)
    labels = np.stack([c[1] for c in cases]) if cases else np.zeros((0, n_slices, size, size), np.uint8)
    ids = [f"{prefix}-{profile.code}-{i + 1:04d}" for i in range(n_cases)]
    return ImagingCohort(images, labels, ids, (float(profile.slice_thickness_mm), _FOV_MM / size, _FOV_MM / size))


def generate_centre(profile: ImagingProfile, n_cases: int, *, seed: int, size: int = 64) -> ImagingCohort:
    """The private cohort of one centre: ``n_cases`` cases of ``size`` x ``size`` axial slices.

    Each case has its own random stream, so the first k cases do not depend on ``n_cases``.
    """
    return _generate(profile, n_cases, _seed_sequence("private", seed, profile.name), "MSY", size)


def make_imaging_mock(profile: ImagingProfile, n_cases: int, *, seed: int, size: int = 64) -> ImagingCohort:
    """The mock twin: same public profile, a separate random stream (a fixed "mock" salt), so it
    shares no case with the private cohort and reveals nothing of it; ids start ``MOCK-``."""
    return _generate(profile, n_cases, _seed_sequence("mock", seed, profile.name), "MOCK", size)


# --------------------------------------------------------------------------- BraTS files

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _affine(spacing: tuple[float, float, float], shape_xyz: tuple[int, int, int]) -> np.ndarray:
    zooms = np.array(spacing[::-1], dtype=float)  # (D, H, W) spacing -> (x, y, z)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = -(np.array(shape_xyz) - 1) / 2 * zooms  # centred on the scanner origin
    return affine


def _nifti(volume_zyx: np.ndarray, spacing) -> nib.Nifti1Image:
    data = np.ascontiguousarray(volume_zyx.T)  # (D, H, W) -> nibabel's (x, y, z)
    img = nib.Nifti1Image(data, _affine(spacing, data.shape))
    img.set_data_dtype(data.dtype)
    header = img.header
    header.set_xyzt_units("mm")
    header["descrip"] = b""  # no identifiers or provenance strings in the header
    header["aux_file"] = b""
    header["intent_name"] = b""
    return img


def export_brats(cohort: ImagingCohort, directory: str | Path) -> Path:
    """Write ``cohort`` as ``<dir>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2020/2021 layout).

    Images are float32 and labels uint8, so ``load_brats`` returns them exactly. The gzip
    streams carry no file name or time stamp (nibabel writes them deterministically).
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; export into a new folder so cohorts never mix")
    bad = [c for c in cohort.case_ids if not _SAFE_ID.fullmatch(c)]
    if bad:
        raise ValueError(f"case id {bad[0]!r} is not a safe folder name (letters, digits, '.', '_', '-')")
    if not np.isin(cohort.labels, LABEL_VALUES).all():
        raise ValueError("labels hold values outside the BraTS set {0, 1, 2, 4}")
    directory.mkdir(parents=True, exist_ok=True)
    for case, image, label in zip(cohort.case_ids, cohort.images, cohort.labels):
        folder = directory / case
        folder.mkdir()
        for channel, modality in enumerate(MODALITIES):
            nib.save(_nifti(image[channel].astype(np.float32, copy=False), cohort.spacing),
                     folder / f"{case}_{modality}.nii.gz")
        nib.save(_nifti(label.astype(np.uint8, copy=False), cohort.spacing), folder / f"{case}_seg.nii.gz")
    return directory


def _case_file(folder: Path, kind: str) -> Path:
    for suffix in (".nii.gz", ".nii"):  # some BraTS releases ship an uncompressed file or two
        path = folder / f"{folder.name}_{kind}{suffix}"
        if path.is_file():
            return path
    raise ImagingDataError(f"case {folder.name}: {folder.name}_{kind}.nii.gz is missing; every case folder needs "
                           f"{', '.join(f'_{k}' for k in (*MODALITIES, 'seg'))} volumes")


def _read(path: Path, case: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        zooms = img.header.get_zooms()
    except Exception as err:  # nibabel raises many kinds for one cause: a broken file
        raise ImagingDataError(f"case {case}: {path.name} cannot be read as NIfTI ({type(err).__name__}); "
                               f"re-export or re-download it") from None
    if data.ndim != 3:
        raise ImagingDataError(f"case {case}: {path.name} is {data.ndim}-D, expected a 3-D volume; "
                               f"store one volume per file")
    if not np.isfinite(data).all():
        raise ImagingDataError(f"case {case}: {path.name} has non-finite voxels (NaN or inf); "
                               f"fix or remove this case")
    return data.T, tuple(round(float(s), 5) for s in zooms[:3][::-1])


def load_brats(directory: str | Path) -> ImagingCohort:
    """Read a BraTS-layout folder (ours or a BraTS 2020/2021 download) into one cohort.

    Every case is checked before anything is returned: all four modalities and the
    segmentation present, one shape and spacing for all volumes, finite voxels, labels in
    {0, 1, 2, 4}. Errors are one line naming the case and file, never a voxel value.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ImagingDataError(f"{root}: no such folder; point to a BraTS download or a folder written by "
                               f"export_brats")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ImagingDataError(f"{root}: no case folders; expected <case>/<case>_t1.nii.gz ... <case>_seg.nii.gz")
    images = labels = None
    first = None  # (case, shape, spacing) of the first case: every other case must match it
    for i, folder in enumerate(folders):
        case = folder.name
        paths = [_case_file(folder, kind) for kind in (*MODALITIES, "seg")]
        for channel, path in enumerate(paths):
            data, spacing = _read(path, case)
            shape = data.shape[::-1]  # as stored, (x, y, z): what the owner sees in their tools
            if first is None:
                first = (case, shape, spacing)
                images = np.empty((len(folders), len(MODALITIES), *data.shape), dtype=np.float32)
                labels = np.empty((len(folders), *data.shape), dtype=np.uint8)
            if channel == 0:
                ref, ref_shape, ref_spacing = f"case {first[0]}", first[1], first[2]
                case_shape, case_spacing = shape, spacing
            else:  # within a case, name the case's own first file
                ref, ref_shape, ref_spacing = paths[0].name, case_shape, case_spacing
            if shape != ref_shape:
                raise ImagingDataError(f"case {case}: {path.name} has shape {shape} but {ref} has {ref_shape}; "
                                       f"resample or crop all volumes to one grid")
            if not np.allclose(spacing, ref_spacing, rtol=1e-3):
                raise ImagingDataError(f"case {case}: {path.name} has voxel spacing {spacing[::-1]} mm but {ref} "
                                       f"has {ref_spacing[::-1]} mm; resample all volumes to one grid")
            if channel < len(MODALITIES):
                images[i, channel] = data
            elif not np.isin(data, LABEL_VALUES).all():
                raise ImagingDataError(f"case {case}: {path.name} has label values outside {{0, 1, 2, 4}}; "
                                       f"relabel to BraTS (1 necrotic core, 2 oedema, 4 enhancing)")
            else:
                labels[i] = data
    return ImagingCohort(images, labels, [f.name for f in folders], first[2])


# --------------------------------------------------------------------------- published view

def axial_slices(cohort: ImagingCohort) -> tuple[np.ndarray, np.ndarray]:
    """One axial slice per case, the one with the largest whole-tumour area (the middle slice
    if a case has no tumour), so the privacy unit stays a case.

    Images [N, 4, H, W] float32 are z-scored per case and channel over the head (voxels
    non-zero in any channel), using that slice only so nothing unpublished shapes it;
    background stays 0. Labels [N, H, W] uint8 keep BraTS values.
    """
    n, _, depth, height, width = cohort.images.shape
    area = (cohort.labels > 0).sum(axis=(2, 3))  # [N, D]
    chosen = np.where(area.max(axis=1, initial=0) > 0, area.argmax(axis=1), depth // 2)
    rows = np.arange(n)
    images = cohort.images.transpose(0, 2, 1, 3, 4)[rows, chosen].astype(np.float64)  # [N, 4, H, W]
    labels = cohort.labels[rows, chosen].astype(np.uint8)
    head = (images != 0).any(axis=1, keepdims=True)  # [N, 1, H, W]
    count = np.maximum(head.sum(axis=(2, 3), keepdims=True), 1)
    mean = np.where(head, images, 0).sum(axis=(2, 3), keepdims=True) / count
    sd = np.sqrt(np.where(head, (images - mean) ** 2, 0).sum(axis=(2, 3), keepdims=True) / count)
    normalised = np.where(head, (images - mean) / np.where(sd > 0, sd, 1), 0)
    return normalised.astype(np.float32), labels


def split_cases(case_ids, *, test_fraction: float = 0.25, seed: int) -> np.ndarray:
    """Boolean mask of test cases: each case's side is fixed by a hash of its id and ``seed``,
    so it never moves when cases are added, removed or reordered (a data owner's fixed split)."""
    if not 0 <= test_fraction <= 1:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction}")
    draws = [int.from_bytes(hashlib.sha256(f"{seed}/{c}".encode()).digest()[:8], "little") / 2 ** 64
             for c in case_ids]
    return np.array(draws, dtype=float).reshape(-1) < test_fraction
