"""Reading a packed dataset directory (what ``idcscan prepare`` writes).

Layout: ``patches.npy`` (uint8, N x 50 x 50 x 3, memory-mapped on read), ``index.csv``
(row, patient, x, y, label, split; row indexes patches.npy) and ``prepare.json``.
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

    def subset(self, split: str | None) -> "PackedDataset":
        """The entries of one split (None: all), sharing the memory map."""
        if split is None:
            return self
        if split not in SPLITS:
            raise IdcscanError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
        keep = self.split == split
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


def load_packed(root: str | Path) -> PackedDataset:
    """Open a packed dataset; patches stay on disk (memory map)."""
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
    return PackedDataset(root=root, patches=patches, rows=rows, meta=meta, **idx)
