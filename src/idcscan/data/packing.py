"""``idcscan prepare``: turn a Kaggle-layout folder into a packed dataset.

Hundreds of thousands of 7 kB PNGs are slow to read at every epoch; one memory-mapped uint8
array plus a CSV index is fast, and its row order, split and provenance are fixed once, in
files anyone can open. Decoding runs in a process pool; results land at rows fixed before
decoding starts, so the output is byte-identical for the same input whatever the timing.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from idcscan import __version__
from idcscan.data.kaggle import PatchFile, Scan, Skipped, scan
from idcscan.data.packed import INDEX, INDEX_COLUMNS, META, PATCHES, SPLITS
from idcscan.data.parallel import map_ordered, resolve_workers
from idcscan.data.splits import split_patients, validate_fractions
from idcscan.errors import IdcscanError
from idcscan.files import atomic_write_text, reserve_space
from idcscan.preprocessing import PAD_VALUE, PATCH_SIZE, pad_to_patch, to_rgb

PADDING_NOTE = {
    "how": (
        f"edge crops smaller than {PATCH_SIZE}x{PATCH_SIZE} are padded at the bottom/right with "
        f"white ({PAD_VALUE}) by idcscan.preprocessing.pad_to_patch"
    ),
    "why": (
        "they lie at the border of the scanned image, so the missing part is glass (white in "
        "brightfield H&E); padding keeps the tissue at its true scale where resizing would "
        "stretch it, and inference pads small crops the same way"
    ),
}


@dataclass(frozen=True)
class PrepareSummary:
    """What ``prepare`` wrote, for printing and for scripts."""

    out: Path
    n_patches: int
    counts: dict[str, dict[str, int]]  # split -> {"0", "1", "total"}
    patients: dict[str, int]  # split -> number of patients
    padded: int
    skipped: int
    duplicates: int
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def patches_path(self) -> Path:
        return self.out / PATCHES

    @property
    def index_path(self) -> Path:
        return self.out / INDEX

    @property
    def meta_path(self) -> Path:
        return self.out / META


class _BadFile(Exception):
    pass


def decode_patch(path: str | os.PathLike) -> tuple[np.ndarray, bool, str]:
    """Decode one patch file to uint8 (P, P, 3); returns (patch, was_padded, original mode)."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise _BadFile(f"not a PNG: content is {image.format or 'unknown'}")
        image.load()
        mode = image.mode
        rgb = to_rgb(image)
    if rgb.width > PATCH_SIZE or rgb.height > PATCH_SIZE:
        raise _BadFile(f"larger than a patch: {rgb.width}x{rgb.height} > {PATCH_SIZE}x{PATCH_SIZE}")
    arr = np.asarray(rgb, dtype=np.uint8)
    padded = arr.shape[0] != PATCH_SIZE or arr.shape[1] != PATCH_SIZE
    return pad_to_patch(arr, PATCH_SIZE), padded, mode


def _decode_chunk(paths: list[str]) -> tuple[np.ndarray, list[str | None], list[bool], list[str]]:
    """Worker: decode a chunk; a failure is reported per file (reason), never raised."""
    out = np.full((len(paths), PATCH_SIZE, PATCH_SIZE, 3), PAD_VALUE, dtype=np.uint8)
    errors: list[str | None] = []
    padded: list[bool] = []
    modes: list[str] = []
    for i, path in enumerate(paths):
        try:
            out[i], was_padded, mode = decode_patch(path)
        except _BadFile as exc:
            errors.append(str(exc))
        except Image.DecompressionBombError as exc:
            errors.append(f"refused to decode: {exc}")
        except Exception as exc:  # noqa: BLE001  (any decoder failure means a bad file)
            errors.append(f"cannot decode image: {type(exc).__name__}: {exc}")
        else:
            errors.append(None)
            padded.append(was_padded)
            modes.append(mode)
            continue
        padded.append(False)
        modes.append("")
    return out, errors, padded, modes


def _decode_all(
    paths: list[str], target: np.ndarray, workers: int, progress: bool
) -> tuple[list[str | None], list[bool], list[str]]:
    """Decode ``paths`` into ``target`` rows, in order, over a process pool."""
    n = len(paths)
    chunk = max(64, min(2048, math.ceil(n / max(1, workers * 8))))
    starts = list(range(0, n, chunk))
    errors: list[str | None] = [None] * n
    padded = [False] * n
    modes = [""] * n

    def store(i: int, result) -> None:
        arr, errs, pads, mds = result
        s, e = starts[i], starts[i] + len(errs)
        target[s:e] = arr
        errors[s:e], padded[s:e], modes[s:e] = errs, pads, mds

    map_ordered(
        _decode_chunk,
        [paths[s : s + chunk] for s in starts],
        workers=workers,
        description="decoding patches",
        weights=[min(chunk, n - s) for s in starts],
        progress=progress,
        on_result=store,
    )
    return errors, padded, modes


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: the text before the first colon."""
    return reason.split(":", 1)[0]


@dataclass
class _Packed:
    """What survived decoding: kept files (row order), the failures, and per-row facts."""

    files: list[PatchFile]
    failed: list[Skipped]
    padded: int
    converted: Counter


def _pack_patches(found: Scan, src: Path, tmp: Path, workers: int, progress: bool) -> _Packed:
    """Decode every candidate into the memory-mapped array at ``tmp`` (rows in scan order).

    Rows are fixed before decoding, so a file that fails leaves a hole; in that (rare) case the
    array is compacted into a right-sized one under the same temporary name.
    """
    n = len(found.files)
    shape = (PATCH_SIZE, PATCH_SIZE, 3)
    buf = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
    reserve_space(tmp)
    errors, padded, modes = _decode_all([str(f.path) for f in found.files], buf, workers, progress)
    ok = np.array([e is None for e in errors], dtype=bool)
    keep = np.flatnonzero(ok)
    if len(keep) and len(keep) < n:
        compact = tmp.with_name(tmp.name + ".compact")
        packed = np.lib.format.open_memmap(
            compact, mode="w+", dtype=np.uint8, shape=(len(keep), *shape)
        )
        reserve_space(compact)
        for s in range(0, len(keep), 4096):
            packed[s : s + 4096] = buf[keep[s : s + 4096]]
        packed.flush()
        del packed
        os.replace(compact, tmp)
    buf.flush()
    del buf
    return _Packed(
        files=[found.files[i] for i in keep],
        failed=[
            Skipped(f.path.relative_to(src).as_posix(), e)
            for f, e in zip(found.files, errors)
            if e is not None
        ],
        padded=int(sum(padded[i] for i in keep)),
        converted=Counter(modes[i] for i in keep if modes[i] != "RGB"),
    )


def _assign_splits(
    files: list[PatchFile], val_frac: float, test_frac: float, seed: int
) -> dict[str, str]:
    """Patient -> split, stratified by each patient's IDC share and balanced by patch counts."""
    per_patient: dict[str, list[int]] = {}
    for f in files:
        per_patient.setdefault(f.patient, []).append(f.label)
    ids = list(per_patient)
    share = [float(np.mean(per_patient[p])) for p in ids]
    sizes = [len(per_patient[p]) for p in ids]
    return split_patients(ids, share, val_frac, test_frac, seed, n_patches=sizes)


def prepare(
    src: str | Path,
    out: str | Path,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 0,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Check, decode, pad and pack every patch under SRC into OUT, split by patient.

    SRC is the Kaggle folder (``IDC_regular_ps50_idx5/``) or its parent. Bad files are skipped
    and listed in prepare.json with the reason. Writes patches.npy, index.csv, prepare.json,
    each under a temporary name first, so an interrupted run leaves no half-written dataset.
    """
    validate_fractions(val_frac, test_frac)
    workers = resolve_workers(workers)
    src, out = Path(src), Path(out)
    found = scan(src)
    if not found.files:
        raise IdcscanError(
            f"No Kaggle patches found under {src} (expected <pid>/<0|1>/"
            f"<pid>_idx5_x<X>_y<Y>_class<C>.png; {len(found.skipped)} file(s) skipped). "
            "Download the dataset with `idcscan download` or point prepare at its folder."
        )
    if out.exists() and not out.is_dir():
        raise IdcscanError(f"--out {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)

    tmp_patches = out / f".{PATCHES}.partial"
    try:
        packed = _pack_patches(found, src, tmp_patches, workers, progress)
        if not packed.files:
            raise IdcscanError(
                f"None of the {len(found.files)} patch files under {src} could be decoded; "
                "see the reasons with a smaller folder, or re-download the dataset."
            )
    except BaseException:
        tmp_patches.unlink(missing_ok=True)
        tmp_patches.with_name(tmp_patches.name + ".compact").unlink(missing_ok=True)
        raise
    files = packed.files
    assignment = _assign_splits(files, val_frac, test_frac, seed)

    index_lines = [",".join(INDEX_COLUMNS)]
    index_lines += [
        f"{row},{f.patient},{f.x},{f.y},{f.label},{assignment[f.patient]}"
        for row, f in enumerate(files)
    ]
    counts = {s: {"0": 0, "1": 0, "total": 0} for s in SPLITS}
    for f in files:
        c = counts[assignment[f.patient]]
        c[str(f.label)] += 1
        c["total"] += 1
    patients = {
        s: [p for p in dict.fromkeys(f.patient for f in files) if assignment[p] == s]
        for s in SPLITS
    }
    skipped = sorted(found.skipped + packed.failed, key=lambda s: s.path)
    reasons = dict(sorted(Counter(_reason_kind(s.reason) for s in skipped).items()))

    meta: dict[str, Any] = {
        "idcscan_version": __version__,
        "source": str(src.resolve()),
        "layout_roots": [r.relative_to(src).as_posix() or "." for r in found.roots],
        "seed": int(seed),
        "val_frac": float(val_frac),
        "test_frac": float(test_frac),
        "split_by": "patient",
        "stratified_by": (
            "each patient's IDC share (patients ordered by share, allocated within bins); "
            "best of 64 seeded draws for patch-level IDC share and patch fractions"
        ),
        "patch_size": PATCH_SIZE,
        "n_patches": len(files),
        "counts": counts,
        "patients_per_split": {s: len(patients[s]) for s in SPLITS},
        "patients": patients,
        "padded": {"count": packed.padded, **PADDING_NOTE},
        "converted_to_rgb": dict(sorted(packed.converted.items())),
        "duplicates_ignored": {
            "count": found.duplicates,
            "why": "the Kaggle archive holds every patient twice; files are deduplicated by name",
        },
        "skipped": {
            "count": len(skipped),
            "by_reason": reasons,
            "files": [{"path": s.path, "reason": s.reason} for s in skipped],
        },
    }
    try:
        atomic_write_text(out / INDEX, "\n".join(index_lines) + "\n")
        atomic_write_text(out / META, json.dumps(meta, indent=2) + "\n")
    except BaseException:
        tmp_patches.unlink(missing_ok=True)
        raise
    os.replace(tmp_patches, out / PATCHES)
    return PrepareSummary(
        out=out,
        n_patches=len(files),
        counts=counts,
        patients=meta["patients_per_split"],
        padded=packed.padded,
        skipped=len(skipped),
        duplicates=found.duplicates,
        skipped_reasons=reasons,
    )
