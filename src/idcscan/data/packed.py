"""Reading a packed dataset directory (what ``idcscan prepare`` writes).

Layout: ``patches.npy`` (uint8, N x 50 x 50 x 3, memory-mapped on read), ``index.csv``
(row, patient, x, y, label, split; row indexes patches.npy) and ``prepare.json``.

A splits file (CSV with columns ``row``, ``split``) can replace index.csv's split column when
the dataset is opened: cross-validation trains and tests each fold on its own patients this
way, without copying a single patch. Rows the file does not list are left out.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idcscan.errors import IdcscanError

PATCHES = "patches.npy"
INDEX = "index.csv"
META = "prepare.json"
INDEX_COLUMNS = ["row", "patient", "x", "y", "label", "split"]
SPLITS_COLUMNS = ["row", "split"]
SPLITS = ("train", "val", "test")


@dataclass
class PackedDataset:
    root: Path
    patches: np.ndarray  # memory-mapped uint8 (N, P, P, 3)
    rows: np.ndarray  # int64 (M,) rows of patches.npy, in index.csv order
    patient: np.ndarray  # str (M,)
    x: np.ndarray  # int64 (M,)
    y: np.ndarray  # int64 (M,)
    label: np.ndarray  # int64 (M,)
    split: np.ndarray  # str (M,)
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, split: str | tuple[str, ...] | None) -> "PackedDataset":
        """The entries of one split, or of several (a tuple), or all (None), sharing the
        memory map."""
        if split is None:
            return self
        wanted = (split,) if isinstance(split, str) else tuple(split)
        for name in wanted:
            if name not in SPLITS:
                raise IdcscanError(f"Unknown split {name!r}; choose one of {', '.join(SPLITS)}.")
        keep = np.isin(self.split, wanted)
        if not keep.any():
            raise IdcscanError(f"{self.root} has no patches in split {split!r}.")
        return PackedDataset(
            root=self.root,
            patches=self.patches,
            rows=self.rows[keep],
            patient=self.patient[keep],
            x=self.x[keep],
            y=self.y[keep],
            label=self.label[keep],
            split=self.split[keep],
            meta=self.meta,
        )

    def images(self, positions: np.ndarray | slice | None = None) -> np.ndarray:
        """uint8 patches for entries at ``positions`` (default: all), read from the map."""
        rows = self.rows if positions is None else self.rows[positions]
        return np.asarray(self.patches[rows])


def read_index(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(INDEX_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise IdcscanError(f"{path} lacks columns {sorted(missing)}; re-run `idcscan prepare`.")
        records = list(reader)
    return {
        "row": np.array([int(r["row"]) for r in records], dtype=np.int64),
        "patient": np.array([r["patient"] for r in records], dtype=str),
        "x": np.array([int(r["x"]) for r in records], dtype=np.int64),
        "y": np.array([int(r["y"]) for r in records], dtype=np.int64),
        "label": np.array([int(r["label"]) for r in records], dtype=np.int64),
        "split": np.array([r["split"] for r in records], dtype=str),
    }


def read_splits(path: str | Path) -> dict[int, str]:
    """{row: split} from a splits file (``row``, ``split``); each row once, known splits only."""
    path = Path(path)
    if not path.is_file():
        raise IdcscanError(f"Splits file {path} does not exist.")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(SPLITS_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise IdcscanError(f"{path} lacks columns {sorted(missing)}; a splits file has "
                               "columns row,split.")
        out: dict[int, str] = {}
        for r in reader:
            row, split = int(r["row"]), r["split"]
            if split not in SPLITS:
                raise IdcscanError(f"{path}: row {row} has split {split!r}; use one of "
                                   f"{', '.join(SPLITS)}.")
            if row in out:
                raise IdcscanError(f"{path} lists row {row} twice.")
            out[row] = split
    return out


def write_splits(path: str | Path, rows: np.ndarray, splits: np.ndarray) -> Path:
    """Write a splits file atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SPLITS_COLUMNS)
        writer.writerows(zip((int(r) for r in rows), (str(s) for s in splits)))
    tmp.replace(path)
    return path


def apply_splits(data: PackedDataset, splits: dict[int, str]) -> PackedDataset:
    """``data`` with its split column replaced by ``splits``; unlisted rows are dropped."""
    known = set(data.rows.tolist())
    unknown = [r for r in splits if r not in known]
    if unknown:
        raise IdcscanError(f"The splits file names row {unknown[0]}, which {data.root}/{INDEX} "
                           "does not have; was it written for another dataset?")
    keep = np.array([int(r) in splits for r in data.rows], dtype=bool)
    new_split = np.array([splits[int(r)] for r in data.rows[keep]], dtype=str)
    return PackedDataset(root=data.root, patches=data.patches, rows=data.rows[keep],
                         patient=data.patient[keep], x=data.x[keep], y=data.y[keep],
                         label=data.label[keep], split=new_split, meta=data.meta)


def load_packed(root: str | Path, splits: str | Path | None = None) -> PackedDataset:
    """Open a packed dataset; patches stay on disk (memory map). ``splits``: a splits file
    whose assignment replaces index.csv's (see the module docstring)."""
    root = Path(root)
    if not (root / PATCHES).is_file() or not (root / INDEX).is_file():
        raise IdcscanError(
            f"{root} is not a prepared dataset (no {PATCHES}/{INDEX}); "
            "run `idcscan prepare KAGGLE_DIR --out DATA` first."
        )
    patches = np.load(root / PATCHES, mmap_mode="r")
    idx = read_index(root / INDEX)
    meta = json.loads((root / META).read_text()) if (root / META).is_file() else {}
    if len(idx["row"]) and idx["row"].max() >= len(patches):
        raise IdcscanError(f"{root / INDEX} points past the end of {PATCHES}; re-run prepare.")
    rows = idx.pop("row")  # index.csv column "row" -> field "rows"
    data = PackedDataset(root=root, patches=patches, rows=rows, meta=meta, **idx)
    if splits is not None:
        data = apply_splits(data, read_splits(splits))
        data.meta = {**meta, "splits_file": str(Path(splits).resolve())}
    return data
