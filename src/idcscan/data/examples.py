"""The real tissue that ships with idcscan, for a first look: a few patches and one section.

``make demo`` serves the shipped model with these, so a new user can click real H&E before
having any data: example patches on the Patches page (labelled IDC or not in the data set) and
one whole-tissue section in the slide browser: the patches of one complete Kaggle patient put
back together (``data.mosaic``) as a small pyramidal TIFF whose scale, 4 µm/px, is in its
tags. Everything comes from the shared Kaggle subset (CC0 as listed on Kaggle), chosen by a
fixed rule, with its provenance written beside it (``examples.json``). These patients are in
the shipped model's training data: their calls show what the tool does, not how well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from idcscan.data.kaggle import NESTED_DIR, scan
from idcscan.data.mosaic import build_mosaic
from idcscan.errors import IdcscanError
from idcscan.preprocessing import PATCH_SIZE, TRAINING_MPP

#: The complete patient whose section ships (571 patches, 35% IDC: both classes in view,
#: a small file).
SLIDE_PATIENT = "9083"
#: Example patches per class, each from another complete patient.
PATCHES_PER_CLASS = 3
#: How many patch steps an example lies inside its labelled region.
MARGIN = 2
PATCHES_DIR = "patches"
SLIDES_DIR = "slides"
PROVENANCE = "examples.json"


def write_pyramid_tiff(image: np.ndarray, path: Path, mpp: float, quality: int = 90) -> Path:
    """A tiled, JPEG-compressed pyramidal TIFF (2x levels in SubIFDs, scale in its tags),
    which every slide reader opens with its scale."""
    import tifffile

    levels = [image]
    while max(levels[-1].shape[:2]) > 512:
        h, w = levels[-1].shape[:2]
        levels.append(np.asarray(Image.fromarray(levels[-1]).resize(
            (max(1, w // 2), max(1, h // 2)), Image.Resampling.BOX)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tifffile.TiffWriter(tmp) as tif:
        for i, level in enumerate(levels):
            per_cm = 1e4 / (mpp * 2 ** i)
            extra = {"subifds": len(levels) - 1} if i == 0 else {"subfiletype": 1}
            # Full-resolution chroma: this image is already at the model's scale, where
            # 4:2:0 subsampling (the JPEG default) smears the stain colours the model reads.
            tif.write(level, tile=(256, 256), photometric="rgb", compression="jpeg",
                      compressionargs={"level": quality}, subsampling=(1, 1),
                      resolution=(per_cm, per_cm), resolutionunit="CENTIMETER", **extra)
    tmp.replace(path)
    return path


def _tissue_share(path: Path) -> float:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    return float(np.mean(rgb.min(axis=2) < 200))


#: A patient with more patches than this is taken as complete (the shared subset's 21).
COMPLETE_MIN = 200


def choose_patches(src: Path, exclude: str, per_class: int = PATCHES_PER_CLASS,
                   seed: int = 0, complete_min: int = COMPLETE_MIN,
                   margin: int = MARGIN) -> list[Any]:
    """Per class, one full-size patch (mostly tissue) from each of ``per_class`` complete
    patients other than ``exclude``, drawn with a fixed seed: no hand-picking. Only patches
    well inside a labelled region qualify (every patch within ``margin`` steps present, with
    the same label): the labels come from coarse outlines, least trustworthy near edges."""
    files = scan(src).files
    counts: dict[str, int] = {}
    for f in files:
        counts[f.patient] = counts.get(f.patient, 0) + 1
    grid = {(f.patient, f.x, f.y): f.label for f in files}
    step = PATCH_SIZE  # Kaggle's patches tile each slide edge to edge

    def interior(f: Any) -> bool:
        return all(grid.get((f.patient, f.x + dx * step, f.y + dy * step)) == f.label
                   for dx in range(-margin, margin + 1)
                   for dy in range(-margin, margin + 1))
    complete = sorted(p for p, n in counts.items() if n > complete_min and p != exclude)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in (1, 0):
        patients = list(rng.permutation(complete))
        for patient in patients:
            pool = [f for f in files if f.patient == patient and f.label == label]
            rng.shuffle(pool)
            pick = next((f for f in pool if interior(f) and _tissue_share(f.path) > 0.6),
                        None)
            if pick is not None:
                chosen.append(pick)
            if sum(1 for c in chosen if c.label == label) == per_class:
                break
    return chosen


def build_examples(src: str | Path, out: str | Path, patient: str = SLIDE_PATIENT,
                   complete_min: int = COMPLETE_MIN, margin: int = MARGIN) -> dict[str, Any]:
    """Write ``out/patches/*.png``, ``out/slides/kaggle-patient-<id>.tif`` and their
    provenance ``out/examples.json``."""
    src, out = Path(src), Path(out)
    root = src / NESTED_DIR if (src / NESTED_DIR).is_dir() else src
    patient_dir = root / patient
    if not patient_dir.is_dir():
        raise IdcscanError(f"{src} has no patient {patient}: point at the Kaggle patches.")
    if out.exists():
        shutil.rmtree(out)
    mosaic = build_mosaic(patient_dir)
    slide = write_pyramid_tiff(mosaic.image, out / SLIDES_DIR /
                               f"kaggle-patient-{patient}.tif", mosaic.mpp)
    patches = choose_patches(src, exclude=patient, complete_min=complete_min, margin=margin)
    (out / PATCHES_DIR).mkdir(parents=True)
    for patch in patches:
        shutil.copyfile(patch.path, out / PATCHES_DIR / patch.path.name)
    n_idc = sum(p.label for p in mosaic.patches)
    provenance = {
        "source": "Kaggle \"Breast Histopathology Images\" (paultimothymooney/breast-"
                  "histopathology-images), the shared subset; CC0: Public Domain as listed on "
                  "Kaggle. Cite Janowczyk & Madabhushi 2016 and Cruz-Roa et al. 2014.",
        "note": "These patients are in the shipped model's training data: their calls show "
                "what idcscan does, not how accurate it is.",
        "slide": {"file": f"{SLIDES_DIR}/{slide.name}", "patient": patient,
                  "mpp": TRAINING_MPP, "width": mosaic.size[0], "height": mosaic.size[1],
                  "patches": len(mosaic.patches), "idc_patches": n_idc,
                  "made_by": "the patient's patches placed at their coordinates "
                             "(idcscan.data.mosaic), JPEG quality 90 without chroma "
                             "subsampling"},
        "patches": [{"file": f"{PATCHES_DIR}/{p.path.name}", "patient": p.patient,
                     "label": "IDC" if p.label else "non-IDC"} for p in patches],
    }
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance
