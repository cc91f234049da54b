"""Predict over image files and folders (what ``idcscan predict`` runs).

Every image goes ``decode_rgb`` -> ``to_patch`` -> ``Predictor``, the same path as the server
and (for 50 x 50 Kaggle PNGs, whose patch is exactly the ``patches.npy`` row) as ``idcscan
evaluate``, so one image gets one probability everywhere. A file that cannot be read gets a row
with the reason and the run goes on: one broken file in ten thousand should not cost the rest.
So does an image far larger than a patch (a tissue section): it is not scored as one patch,
as ``/predict`` refuses it too; its row names ``idcscan slide``.

Probabilities in the rows are fractions in [0, 1] (the HTTP API shows percents for people).
The call and the review flag follow ``idcscan.runtime.labels``; ``warning`` says when an
image was not one patch (``idcscan.runtime.patch_size``); ``demo`` marks rows from a demo bundle.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idcscan import DISCLAIMER, __version__
from idcscan.errors import IdcscanError
from idcscan.files import atomic_write_text, output_error
from idcscan.images import DEFAULT_MAX_PIXELS, ImageError, decode_rgb
from idcscan.runtime.labels import (
    CALL_RULE,
    CLASS_NAMES,
    DECISION_THRESHOLD,
    FLAG_RULE,
    classify,
    confidence,
    flagged,
)
from idcscan.runtime.model_card import tta_in_use
from idcscan.runtime.predictor import Predictor
from idcscan.stain import StainGroup
from idcscan.runtime.patch_size import cli_refusal, cli_warning
from idcscan.preprocessing import to_patch

#: Suffixes picked up when walking a folder (case-insensitive). Files named explicitly are
#: always tried: their type is judged by decoding, not by the name.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
COLUMNS = (
    "path",
    "predicted_class",
    "class_name",
    "probability_positive",
    "confidence",
    "flagged",
    "warning",
    "demo",
    "error",
)


@dataclass(frozen=True)
class FilePrediction:
    """One output row; the prediction fields are None when ``error`` says why not."""

    path: str
    predicted_class: int | None = None
    class_name: str | None = None
    probability_positive: float | None = None
    confidence: float | None = None
    flagged: bool | None = None
    warning: str | None = None
    demo: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named directly, plus images under folders (recursive), in a stable order."""
    if not inputs:
        raise IdcscanError("Name at least one image file or folder to predict on.")
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            hits = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not hits:
                raise IdcscanError(
                    f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                    "searched recursively."
                )
        elif path.exists():
            hits = [path]
        else:
            raise IdcscanError(f"{path} does not exist; check the path.")
        for hit in hits:
            key = hit.resolve()
            if key not in seen:
                seen.add(key)
                found.append(hit)
    return found


def _load_patch(
    path: Path, patch_size: int, max_pixels: int
) -> tuple[np.ndarray, tuple[int, int]] | str:
    """(patch, original size), or the reason the file is not scored: unreadable, or a large
    image (a tissue section) that only means something mapped tile by tile."""
    try:
        rgb = decode_rgb(path, max_pixels=max_pixels)
    except ImageError as exc:
        return str(exc)
    refusal = cli_refusal(rgb.size, patch_size, str(path))
    return refusal if refusal is not None else (to_patch(rgb, patch_size), rgb.size)


#: ``--stain-group``: which images share stains, for a bundle that normalises per group.
#: image: each alone; folder: the images of one folder (a patient's, a slide's tiles); all:
#: every input together (one patient or one scan given on its own).
STAIN_GROUPS = ("image", "folder", "all")
#: Images a group's stains are estimated on (a seeded sample of a larger group).
STAIN_SAMPLE_IMAGES = 1024


def stain_group_key(path: Path, how: str) -> str:
    if how == "folder":
        return str(path.parent)
    return "all" if how == "all" else str(path)


def estimate_groups(
    predictor: Predictor, paths: Sequence[Path], how: str, max_pixels: int,
    pool: ThreadPoolExecutor,
) -> dict[str, StainGroup]:
    """Each group's stains, from a sample of its readable images (before any is scored)."""
    if how not in STAIN_GROUPS:
        raise IdcscanError(f"--stain-group must be one of {', '.join(STAIN_GROUPS)}; got {how!r}.")
    members: dict[str, list[Path]] = {}
    for path in paths:
        members.setdefault(stain_group_key(path, how), []).append(path)
    groups = {}
    rng = np.random.default_rng(0)
    for key, group_paths in members.items():
        if len(group_paths) > STAIN_SAMPLE_IMAGES:
            pick = np.sort(rng.choice(len(group_paths), STAIN_SAMPLE_IMAGES, replace=False))
            group_paths = [group_paths[i] for i in pick]
        size = predictor.pre.patch_size
        loaded = pool.map(lambda p: _load_patch(p, size, max_pixels), group_paths)
        patches = [item[0] for item in loaded if not isinstance(item, str)]
        if patches:
            group = predictor.stain_group(np.stack(patches))
            assert group is not None
            groups[key] = group
    return groups


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    tta: bool = False,
    batch_size: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: Callable[[int], None] | None = None,
    decode_threads: int | None = None,
    stain_group: str = "image",
) -> Iterator[FilePrediction]:
    """Yield one ``FilePrediction`` per path, in order; ``on_progress(n)`` after each chunk.

    ``stain_group`` (``STAIN_GROUPS``) matters only for a bundle that normalises stains per
    group: then each group's stains are estimated first, and its images scored with them."""
    if batch_size < 1:
        raise IdcscanError("--batch-size must be at least 1.")
    review_threshold = predictor.threshold
    patch_size = predictor.pre.patch_size
    demo = bool(predictor.card.demo)
    threads = decode_threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="idcscan-decode") as pool:
        grouped = predictor.group_norm is not None and stain_group != "image"
        groups = estimate_groups(predictor, paths, stain_group, max_pixels, pool) \
            if grouped else {}
        for chunk in _chunks(paths, batch_size):
            loaded = list(pool.map(lambda p: _load_patch(p, patch_size, max_pixels), chunk))
            good = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
            by_index: dict[int, float] = {}
            keys = [stain_group_key(chunk[i], stain_group) if grouped else "" for i in good]
            for key in dict.fromkeys(keys):
                part = [i for i, k in zip(good, keys) if k == key]
                probs = predictor.predict_proba(
                    np.stack([loaded[i][0] for i in part]), tta=tta, group=groups.get(key)
                )
                by_index.update(zip(part, probs.tolist()))
            for i, path in enumerate(chunk):
                if i in by_index:
                    p = float(by_index[i])
                    cls = classify(p)
                    yield FilePrediction(
                        path=str(path),
                        predicted_class=cls,
                        class_name=CLASS_NAMES[cls],
                        probability_positive=p,
                        confidence=confidence(p, cls),
                        flagged=flagged(p, review_threshold),
                        warning=cli_warning(loaded[i][1], patch_size, predictor.card.mpp),
                        demo=demo,
                    )
                else:
                    yield FilePrediction(path=str(path), error=str(loaded[i]), demo=demo)
            if on_progress is not None:
                on_progress(len(chunk))


def output_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise IdcscanError(f"--out must end in .csv or .json (got {out.name}).")
    return suffix[1:]


def _csv_text(rows: Iterable[FilePrediction]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # repr-exact floats: the file must reproduce the probabilities, not a rounded view.
        writer.writerow({k: ("" if v is None else v) for k, v in row.as_dict().items()})
    return buffer.getvalue()


def _json_text(
    rows: Iterable[FilePrediction], predictor: Predictor, tta: bool, stain_group: str = "image"
) -> str:
    card = predictor.card
    doc = {
        "model": {"name": card.name, "version": card.version, "backbone": card.backbone,
                  "engine": predictor.engine.info.label},
        "threshold": DECISION_THRESHOLD,
        "review_threshold": predictor.threshold,
        "decision": {"call": CALL_RULE, "review_flag": FLAG_RULE},
        "demo": bool(card.demo),
        "tta": predictor.tta_views(tta) > 1,
        "tta_views": predictor.tta_views(tta),
        "tta_in_use": tta_in_use(card, tta),
        **({"stain_normalisation": {"method": "macenko", "group": stain_group}}
           if predictor.group_norm is not None else {}),
        "probabilities": "fractions in [0, 1]; confidence = probability of predicted_class",
        "idcscan_version": __version__,
        "disclaimer": DISCLAIMER,
        "predictions": [row.as_dict() for row in rows],
    }
    return json.dumps(doc, indent=2) + "\n"


def write_predictions(
    rows: Sequence[FilePrediction], out: str | Path, predictor: Predictor, tta: bool = False,
    stain_group: str = "image",
) -> Path:
    """Write CSV or JSON (by the suffix of ``out``) atomically: temporary name, then rename."""
    out = Path(out)
    fmt = output_format(out)
    text = _csv_text(rows) if fmt == "csv" else _json_text(rows, predictor, tta, stain_group)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (output_error(exc, out.parent, writing=True) or exc) from exc
    return atomic_write_text(out, text)
