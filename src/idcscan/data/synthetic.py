"""Procedural H&E-like patches in the exact Kaggle layout, with known ground truth.

Tests, the demo and whole-slide checks need data that behaves like the real set without
shipping patient images. Each synthetic patient is one tissue region rendered at once on a
canvas (so neighbouring patches continue into each other and a patient tiles into a plausible
mosaic), cut into the 50x50 grid Kaggle uses, with the right/bottom edge of the scan cutting
some patches short.

What makes it a useful stand-in rather than a toy:

* Stain is simulated with Beer-Lambert optical density from haematoxylin and eosin vectors that
  vary per patient (concentration, hue, brightness), so patients differ as real scans do and a
  patient-level bootstrap has real spread.
* IDC is carried by *shape*: tumour nuclei are large, crowded and irregular. Benign tissue
  includes lymphocyte aggregates (dense, small, very dark nuclei) and fat, so purple-ness or mean
  colour alone cannot tell the classes apart; a model has to look at nuclear size and form.
* Tumour regions are a few irregular blobs on each patient's grid, so positives cluster
  spatially, and each patient has its own IDC share.

Everything is numpy/scipy array work on whole canvases; the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from idcscan import __version__
from idcscan.data.parallel import map_ordered, resolve_workers
from idcscan.errors import IdcscanError
from idcscan.preprocessing import PATCH_SIZE

MANIFEST = "synthetic.json"

#: Synthetic patient ids start here: five digits like Kaggle's, but outside its range.
FIRST_PATIENT_ID = 90001

# Ruifrok & Johnston stain vectors (optical density per unit concentration, RGB), nudged so
# eosin renders pink rather than magenta.
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.95, 0.30])


@dataclass
class SyntheticPatient:
    """One rendered patient: the canvas and the grid cells cut from it.

    ``canvas`` pixel (row, col) sits at Kaggle coordinate (x, y) = (x0 + col, y0 + row); a cell
    with Kaggle coordinates (x, y) covers canvas[y - y0 : y - y0 + h, x - x0 : x - x0 + w].
    """

    pid: str
    canvas: np.ndarray  # uint8 (H, W, 3)
    x0: int
    y0: int
    x: np.ndarray = field(repr=False)  # int64 (N,) Kaggle x of each patch (1, 51, 101, ...)
    y: np.ndarray = field(repr=False)  # int64 (N,)
    label: np.ndarray = field(repr=False)  # int64 (N,) 1 = IDC
    tumour: np.ndarray = field(repr=False)  # bool (H, W) pixel-level truth

    def patch(self, i: int) -> np.ndarray:
        """The (possibly edge-cropped) uint8 patch for cell ``i``, as Kaggle would store it."""
        r, c = int(self.y[i]) - self.y0, int(self.x[i]) - self.x0
        return self.canvas[r : r + PATCH_SIZE, c : c + PATCH_SIZE]

    def patches(self) -> list[np.ndarray]:
        return [self.patch(i) for i in range(len(self.x))]


@dataclass(frozen=True)
class SyntheticSummary:
    """What ``generate_dataset`` wrote."""

    root: Path
    patients: list[str]
    n_patches: int
    n_positive: int
    n_edge_crops: int


def _upsample(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Separable bilinear upsampling by gather-and-blend (no BLAS, no per-pixel spline)."""
    out = coarse
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
        lo = np.minimum(pos.astype(np.int64), n_in - 2)
        frac = pos - lo
        a, b = np.take(out, lo, axis=axis), np.take(out, lo + 1, axis=axis)
        frac = frac[:, None] if axis == 0 else frac[None, :]
        out = a + (b - a) * frac
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma, scale: int = 1):
    """Zero-mean, unit-std Gaussian-filtered noise; ``scale`` > 1 renders coarse, then upsamples."""
    if scale > 1:
        small = (shape[0] // scale + 2, shape[1] // scale + 2)
        coarse = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma)
        field_ = _upsample(coarse, shape)
    else:
        field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    field_ -= field_.mean()
    field_ /= field_.std() + 1e-6
    return field_


def _blobs(shape, centres, radii) -> np.ndarray:
    """Sum of isotropic Gaussian bumps (peak 1) at pixel ``centres`` with pixel ``radii``."""
    yy = np.arange(shape[0], dtype=np.float32)[:, None]
    xx = np.arange(shape[1], dtype=np.float32)[None, :]
    out = np.zeros(shape, dtype=np.float32)
    for (cy, cx), r in zip(centres, radii):
        out += np.exp(-((yy - cy) ** 2) / (2.0 * r * r)) * np.exp(-((xx - cx) ** 2) / (2.0 * r * r))
    return out


def _rings(shape, centres, radii, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Benign ducts: an epithelial ring (bool) and its lumen (bool) around each centre."""
    yy = np.arange(shape[0], dtype=np.float32)[:, None]
    xx = np.arange(shape[1], dtype=np.float32)[None, :]
    ring = np.zeros(shape, dtype=bool)
    lumen = np.zeros(shape, dtype=bool)
    for (cy, cx), r in zip(centres, radii):
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        ring |= np.abs(d - r) < width
        lumen |= d <= r - width
    return ring, lumen & ~ring


def _adipocyte_walls(
    rng: np.random.Generator, shape: tuple[int, int], spacing: float
) -> np.ndarray:
    """Thin walls between fat cells: the borders of a nearest-seed (Voronoi) partition."""
    seeds = rng.random(shape, dtype=np.float32) < 1.0 / spacing**2
    owner = ndimage.distance_transform_edt(~seeds, return_distances=False, return_indices=True)
    owner = owner[0] * shape[1] + owner[1]
    walls = np.zeros(shape, dtype=bool)
    walls[:, 1:] |= owner[:, 1:] != owner[:, :-1]
    walls[1:, :] |= owner[1:, :] != owner[:-1, :]
    return walls


def _choose_cells(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` grid cells forming one irregular tissue piece; returns (rows, cols) from 0."""
    aspect = rng.uniform(0.7, 1.4)
    side = int(np.ceil(np.sqrt(n * 1.5))) + 2
    h, w = max(3, int(round(side / np.sqrt(aspect)))), max(3, int(round(side * np.sqrt(aspect))))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    prior = -(((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2)
    score = prior + 0.25 * _smooth_noise(rng, (h, w), 1.2)
    order = np.argsort(-score.ravel(), kind="stable")[:n]
    rows, cols = np.divmod(order, w)
    return rows - rows.min(), cols - cols.min()


def _stain(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Per-patient stain: jittered H and E vectors, concentration scales and brightness."""
    h_vec = np.clip(_HEMATOXYLIN + rng.normal(0, 0.07, 3), 0.05, None)
    e_vec = np.clip(_EOSIN + rng.normal(0, 0.07, 3), 0.02, None)
    h_vec /= np.linalg.norm(h_vec)
    e_vec /= np.linalg.norm(e_vec)
    h_scale = float(np.exp(rng.normal(0, 0.35)))
    e_scale = float(np.exp(rng.normal(0, 0.35)))
    brightness = float(rng.uniform(0.86, 1.0))
    return h_vec, e_vec, h_scale, e_scale, brightness


def render_patient(
    seed: int, index: int, n_patches: int, idc_share: float | None = None
) -> SyntheticPatient:
    """Render synthetic patient number ``index`` (0-based) of dataset ``seed``.

    The random stream depends only on (seed, index), so adding patients never changes the
    earlier ones. ``idc_share`` fixes the fraction of IDC patches (otherwise drawn per patient).
    """
    if n_patches < 1:
        raise IdcscanError("A synthetic patient needs at least one patch.")
    rng = np.random.default_rng([int(seed), int(index), 0x1DC])
    P = PATCH_SIZE
    rows, cols = _choose_cells(rng, n_patches)
    n_rows, n_cols = int(rows.max()) + 1, int(cols.max()) + 1
    # The scan's right/bottom border cuts through the last column/row for some patients.
    cut_x = int(rng.integers(8, 40)) if rng.random() < 0.6 else 0
    cut_y = int(rng.integers(8, 40)) if rng.random() < 0.6 else 0
    H, W = n_rows * P - cut_y, n_cols * P - cut_x
    shape = (H, W)

    # Tumour: a few irregular blobs centred on tissue cells, thresholded to the patient's share.
    share = float(rng.beta(1.3, 2.6)) if idc_share is None else float(idc_share)
    share = min(max(share, 0.0), 1.0)
    k = int(rng.integers(1, 4))
    pick = rng.choice(len(rows), size=min(k, len(rows)), replace=False)
    centres = [((rows[i] + 0.5) * P, (cols[i] + 0.5) * P) for i in pick]
    radii = rng.uniform(0.8, 2.2, size=len(centres)) * P * np.sqrt(max(n_patches, 4) / 40)
    t_field = _blobs(shape, centres, radii)
    t_field = t_field / (t_field.max() + 1e-6) + 0.18 * _smooth_noise(rng, shape, 3, scale=10)
    centre_vals = t_field[
        np.minimum(rows * P + P // 2, H - 1), np.minimum(cols * P + P // 2, W - 1)
    ]
    n_pos = int(round(share * n_patches))
    if n_pos == 0:
        threshold = float(centre_vals.max()) + 1e-3
    else:
        threshold = float(np.sort(centre_vals)[::-1][n_pos - 1]) - 1e-6
    label = (centre_vals > threshold).astype(np.int64)
    tumour = t_field > threshold
    # Tumour grows in nests separated by (desmoplastic) stroma; the nest share varies.
    nests = tumour & (_smooth_noise(rng, shape, 2, scale=6) > rng.uniform(-1.2, -0.2))

    # Benign look-alikes, so colour alone cannot find IDC: lymphocyte aggregates (purple, dense,
    # small dark nuclei), ducts (rings of regular nuclei around a pale lumen) and fat.
    def spots(count: int) -> list[tuple[float, float]]:
        idx = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
        return [((rows[i] + rng.uniform(0, 1)) * P, (cols[i] + rng.uniform(0, 1)) * P) for i in idx]

    lcentres = spots(int(rng.integers(2, 4 + n_patches // 12)))
    lymph_field = _blobs(shape, lcentres, rng.uniform(0.5, 1.4, len(lcentres)) * P)
    lymph_field += 0.15 * _smooth_noise(rng, shape, 2, scale=8)
    lymph = (lymph_field > 0.55) & ~tumour
    dcentres = spots(int(rng.integers(1, 2 + n_patches // 15)))
    duct, lumen = _rings(shape, dcentres, rng.uniform(8, 22, len(dcentres)), rng.uniform(3, 6))
    duct &= ~(tumour | lymph)
    lumen &= ~(tumour | lymph | duct)
    fat = (_smooth_noise(rng, shape, 2.5, scale=12) > rng.uniform(0.5, 1.3)) & ~(lymph | duct)
    fat &= ~tumour | (_smooth_noise(rng, shape, 2, scale=10) > 1.0)
    fat |= lumen
    stroma = ~(nests | lymph | duct | fat)

    # Nuclei. Tumour: large (sigma 2.2), irregular (finer noise on the edge), crowded.
    fine = _smooth_noise(rng, shape, 0.85)
    big = _smooth_noise(rng, shape, 2.2) + 0.3 * fine
    fibre_axis = (0.8, 2.5) if rng.random() < 0.5 else (2.5, 0.8)
    fibres = _smooth_noise(rng, shape, fibre_axis)
    nucleus = np.where(nests, big > rng.uniform(0.45, 0.85), False)
    nucleus |= lymph & (fine > rng.uniform(0.75, 1.1))
    nucleus |= duct & (big > 0.6)
    nucleus |= stroma & (fibres > 2.3)
    nucleus &= ~fat

    # Concentrations of haematoxylin (h) and eosin (e) per pixel.
    grain = rng.standard_normal(shape, dtype=np.float32)
    e = np.where(stroma, 0.55 + 0.12 * fibres, 0.0).astype(np.float32)
    e = np.where(nests, 0.45 + 0.05 * fibres, e)
    e = np.where(lymph, 0.35 + 0.05 * fibres, e)
    e = np.where(duct, 0.4, e)
    walls = _adipocyte_walls(rng, shape, rng.uniform(9, 15))
    e = np.where(fat, np.where(walls & ~lumen, 0.5, 0.02), e)
    h = np.where(nests | lymph | duct, 0.1, 0.07).astype(np.float32)
    h = np.where(fat, 0.01, h)
    h = np.where(nucleus & nests, 1.0 + 0.12 * grain, h)
    h = np.where(nucleus & lymph, 1.6 + 0.05 * grain, h)
    h = np.where(nucleus & duct, 1.15 + 0.05 * grain, h)
    h = np.where(nucleus & stroma, 1.1, h)
    h = ndimage.gaussian_filter(h, 0.55)
    e = ndimage.gaussian_filter(e, 0.55)

    h_vec, e_vec, h_scale, e_scale, brightness = _stain(rng)
    od = (h * h_scale)[..., None] * h_vec.astype(np.float32)
    od += (e * e_scale)[..., None] * e_vec.astype(np.float32)
    rgb = np.exp(-od)
    rgb *= 255.0 * brightness
    rgb += 2.5 * grain[..., None]
    rgb += 0.5
    canvas = np.clip(rgb, 0, 255).astype(np.uint8)

    col_off, row_off = int(rng.integers(0, 12)), int(rng.integers(0, 12))
    x0, y0 = 1 + P * col_off, 1 + P * row_off
    return SyntheticPatient(
        pid=str(FIRST_PATIENT_ID + index),
        canvas=canvas,
        x0=x0,
        y0=y0,
        x=(x0 + cols * P).astype(np.int64),
        y=(y0 + rows * P).astype(np.int64),
        label=label,
        tumour=tumour,
    )


def patch_filename(pid: str, x: int, y: int, label: int) -> str:
    return f"{pid}_idx5_x{x}_y{y}_class{label}.png"


def write_patient(patient: SyntheticPatient, root: Path) -> int:
    """Write one patient's patches as ``<pid>/<class>/<name>.png``; returns edge crops written.

    The patient folder is built under a hidden temporary name and renamed when complete, so an
    interrupted run never leaves a half-written patient that ``prepare`` would pick up.
    """
    final = root / patient.pid
    tmp = root / f".{patient.pid}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    for cls in (0, 1):
        (tmp / str(cls)).mkdir(parents=True)
    edge = 0
    for i in range(len(patient.x)):
        arr = patient.patch(i)
        edge += arr.shape[0] < PATCH_SIZE or arr.shape[1] < PATCH_SIZE
        lab = int(patient.label[i])
        name = patch_filename(patient.pid, int(patient.x[i]), int(patient.y[i]), lab)
        Image.fromarray(np.ascontiguousarray(arr), mode="RGB").save(
            tmp / str(lab) / name, compress_level=1
        )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return edge


def _render_and_write(task: tuple[str, int, int, int]) -> tuple[str, int, int, int]:
    """Worker: one patient, rendered and written; returns (pid, patches, positives, edge crops)."""
    root, seed, index, n = task
    patient = render_patient(seed, index, n)
    edge = write_patient(patient, Path(root))
    return patient.pid, len(patient.x), int(patient.label.sum()), edge


def _clear_previous(root: Path) -> None:
    """Empty OUT of an earlier synthetic run; refuse to write into any other non-empty folder."""
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    if not entries:
        return
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise IdcscanError(
            f"{root} is not empty and holds no earlier synthetic dataset ({MANIFEST}); "
            "choose an empty or new folder."
        )
    for pid in json.loads(manifest.read_text()).get("patients", []):
        if (root / str(pid)).is_dir():
            shutil.rmtree(root / str(pid))
    manifest.unlink()


def generate_dataset(
    out: str | Path,
    patients: int = 40,
    patches_per_patient: int = 100,
    seed: int = 0,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> SyntheticSummary:
    """Write a synthetic dataset in the Kaggle layout under ``out`` and say what was written.

    Every patient gets exactly ``patches_per_patient`` patches, so sizes are predictable.
    ``out`` must be empty, new, or an earlier synthetic dataset (which is replaced). A
    ``synthetic.json`` next to the patient folders records how it was made; ``prepare`` ignores
    it as it ignores any loose file there.
    """
    if patients < 1 or patches_per_patient < 1:
        raise IdcscanError("--patients and --patches-per-patient must be at least 1.")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise IdcscanError(f"{root} exists and is not a folder.")
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root)
    tasks = [(str(root), int(seed), i, int(patches_per_patient)) for i in range(patients)]
    results = map_ordered(
        _render_and_write,
        tasks,
        workers=resolve_workers(workers),
        description="rendering synthetic patients",
        progress=progress,
    )
    ids = [r[0] for r in results]
    summary = SyntheticSummary(
        root=root,
        patients=ids,
        n_patches=sum(r[1] for r in results),
        n_positive=sum(r[2] for r in results),
        n_edge_crops=sum(r[3] for r in results),
    )
    manifest = {
        "generator": "idcscan.data.synthetic",
        "idcscan_version": __version__,
        "seed": int(seed),
        "patches_per_patient": int(patches_per_patient),
        "patients": ids,
        "n_patches": summary.n_patches,
        "n_positive": summary.n_positive,
        "n_edge_crops": summary.n_edge_crops,
        "note": "synthetic H&E-like tissue for tests and demos; not patient data",
    }
    tmp = root / f".{MANIFEST}.partial"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)
    return summary
