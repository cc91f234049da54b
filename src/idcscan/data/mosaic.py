"""Tile a Kaggle patient's 50x50 patches back into one image with its ground-truth IDC mask.

The Kaggle IDC set was cut from whole-slide scans downsampled to ~4 µm/px; each file name
keeps where its patch came from (``<pid>_idx5_x<X>_y<Y>_class<C>.png``, X/Y the top-left
corner in the downsampled scan). Putting the patches back at those coordinates gives a
"slide" at the training scale whose IDC regions are known patch by patch: the test bed for
``idcscan slide`` (the image records its scale, 4 µm/px).

Outputs (``write_mosaic``), named after the patient so that mosaics of several patients can
share a folder and their maps never share a name: ``<pid>.png`` (RGB; gaps where no patch
exists are white, i.e. glass), ``<pid>_truth.png`` (same size, 8-bit mask: 255 where an
IDC-positive patch lies, 0 elsewhere), ``<pid>_truth.csv`` (``x``, ``y``, ``label``: each
patch's top-left corner in mosaic pixels, i.e. X - min X, Y - min Y) and
``<pid>_mosaic.json`` (patient, scale, origin, counts). ``<pid>.png`` also records 4 µm/px as
its PNG resolution (6350 dpi), which ``idcscan slide`` reads back.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from idcscan.data.kaggle import NAME_PATTERN, NAME_RE
from idcscan.errors import IdcscanError
from idcscan.preprocessing import PAD_VALUE, TRAINING_MPP, to_rgb

#: what ``write_mosaic`` writes, by role: the file name for patient ``{pid}``
MOSAIC_FILES = {
    "image": "{pid}.png",
    "truth": "{pid}_truth.png",
    "truth_csv": "{pid}_truth.csv",
    "meta": "{pid}_mosaic.json",
}
TRUTH_COLUMNS = ["x", "y", "label"]


def mosaic_paths(patient: str, out_dir: str | Path) -> dict[str, Path]:
    """Where ``write_mosaic`` puts each file of ``patient``'s mosaic, by role."""
    return {role: Path(out_dir) / name.format(pid=patient) for role, name in MOSAIC_FILES.items()}


@dataclass(frozen=True)
class MosaicPatch:
    path: Path
    x: int  # top-left corner in the Kaggle scan's pixels (from the file name)
    y: int
    label: int  # 1 = IDC positive


@dataclass
class Mosaic:
    patient: str
    image: np.ndarray  # uint8 (H, W, 3)
    truth: np.ndarray  # bool (H, W): True under IDC-positive patches
    patches: list[MosaicPatch]
    origin: tuple[int, int]  # (min x, min y) of the patches in Kaggle scan pixels
    mpp: float = TRAINING_MPP

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


def scan_patient(patient_dir: str | Path) -> list[MosaicPatch]:
    """Find a patient's patches in the Kaggle layout (``<pid>/<0|1>/*.png``), sorted by y, x.

    The class is read from the file name and must agree with the ``0``/``1`` folder.
    """
    root = Path(patient_dir)
    if not root.is_dir():
        raise IdcscanError(f"{root} is not a directory; give one Kaggle patient folder (<pid>/).")
    patches: list[MosaicPatch] = []
    for label_dir in ("0", "1"):
        folder = root / label_dir
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.suffix.lower() != ".png" or path.name.startswith("."):
                continue
            match = NAME_RE.match(path.name)
            if match is None:
                raise IdcscanError(
                    f"{path} does not follow the Kaggle naming {NAME_PATTERN}; "
                    "cannot place it in the mosaic."
                )
            label = int(match["label"])
            if str(label) != label_dir:
                raise IdcscanError(
                    f"{path} says class{label} but lies in folder {label_dir}/; fix the layout."
                )
            patches.append(MosaicPatch(path, int(match["x"]), int(match["y"]), label))
    if not patches:
        raise IdcscanError(
            f"No Kaggle patches under {root}: expected {root}/0/*.png and/or {root}/1/*.png "
            "named <pid>_idx5_x<X>_y<Y>_class<C>.png."
        )
    patches.sort(key=lambda p: (p.y, p.x, p.label, p.path.name))
    return patches


def _read_patch(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(to_rgb(im), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise IdcscanError(f"Cannot read patch {path}: {exc}") from exc


def build_mosaic(patient_dir: str | Path) -> Mosaic:
    """Place every patch at (x - min x, y - min y); gaps stay white (glass).

    Edge crops smaller than 50 px are placed as they are (not padded), so the mosaic's edge
    follows the scan's edge. Two patches would only overlap if the names were inconsistent;
    the later one (sorted by y, x) then wins, deterministically.
    """
    patches = scan_patient(patient_dir)
    images = [_read_patch(p.path) for p in patches]
    min_x = min(p.x for p in patches)
    min_y = min(p.y for p in patches)
    width = max(p.x - min_x + im.shape[1] for p, im in zip(patches, images))
    height = max(p.y - min_y + im.shape[0] for p, im in zip(patches, images))
    canvas = np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)
    truth = np.zeros((height, width), dtype=bool)
    for patch, im in zip(patches, images):
        x, y = patch.x - min_x, patch.y - min_y
        h, w = im.shape[:2]
        canvas[y : y + h, x : x + w] = im
        truth[y : y + h, x : x + w] = patch.label == 1
    return Mosaic(
        patient=Path(patient_dir).resolve().name,
        image=canvas,
        truth=truth,
        patches=patches,
        origin=(min_x, min_y),
    )


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def _save_png(image: Image.Image, target: Path, **params: object) -> None:
    tmp = _tmp_name(target)
    image.save(tmp, format="PNG", **params)
    tmp.replace(target)


def write_mosaic(mosaic: Mosaic, out_dir: str | Path) -> dict[str, Path]:
    """Write the patient's image, truth mask, truth table and metadata (each atomically);
    returns their paths by role (``MOSAIC_FILES``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dpi = 25_400.0 / mosaic.mpp
    paths = mosaic_paths(mosaic.patient, out)
    _save_png(Image.fromarray(mosaic.image, mode="RGB"), paths["image"], dpi=(dpi, dpi))
    truth = Image.fromarray(np.where(mosaic.truth, 255, 0).astype(np.uint8), mode="L")
    _save_png(truth, paths["truth"], dpi=(dpi, dpi))

    min_x, min_y = mosaic.origin
    tmp = _tmp_name(paths["truth_csv"])
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TRUTH_COLUMNS)
        for p in mosaic.patches:
            writer.writerow([p.x - min_x, p.y - min_y, p.label])
    tmp.replace(paths["truth_csv"])

    n_idc = sum(p.label for p in mosaic.patches)
    meta = {
        "patient": mosaic.patient,
        "mpp": mosaic.mpp,
        "width": mosaic.size[0],
        "height": mosaic.size[1],
        "origin": {"x": min_x, "y": min_y},
        "n_patches": len(mosaic.patches),
        "n_idc": n_idc,
        "idc_fraction": n_idc / len(mosaic.patches),
        "note": f"Coordinates in {paths['truth_csv'].name} are mosaic pixels (Kaggle x - "
        f"origin.x, y - origin.y). Run `idcscan slide BUNDLE {paths['image'].name}` to map it "
        "(the image records its scale).",
    }
    tmp = _tmp_name(paths["meta"])
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(paths["meta"])
    return paths


def make_mosaic(patient_dir: str | Path, out_dir: str | Path) -> tuple[Mosaic, dict[str, Path]]:
    """``idcscan mosaic``: build a patient's mosaic and write it to ``out_dir``."""
    mosaic = build_mosaic(patient_dir)
    return mosaic, write_mosaic(mosaic, out_dir)
