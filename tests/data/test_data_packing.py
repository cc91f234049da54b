"""``prepare`` on a synthetic Kaggle folder: outputs, patient splits, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idcscan import __version__
from idcscan.data.packed import load_packed
from idcscan.data.packing import prepare
from idcscan.errors import IdcscanError


def test_outputs_are_complete_and_consistent(prepared_data: Path, synthetic_kaggle: Path) -> None:
    assert sorted(p.name for p in prepared_data.iterdir()) == [
        "index.csv",
        "patches.npy",
        "prepare.json",
    ]  # no temporary files left behind
    ds = load_packed(prepared_data)
    n = len(list(synthetic_kaggle.rglob("*.png")))
    assert len(ds) == n == ds.patches.shape[0]
    assert ds.patches.dtype == np.uint8 and ds.patches.shape[1:] == (50, 50, 3)
    assert isinstance(ds.patches, np.memmap)
    header = (prepared_data / "index.csv").read_text().splitlines()[0]
    assert header == "row,patient,x,y,label,split"

    meta = json.loads((prepared_data / "prepare.json").read_text())
    assert meta["idcscan_version"] == __version__
    assert meta["source"] == str(synthetic_kaggle.resolve())
    assert (meta["seed"], meta["val_frac"], meta["test_frac"]) == (0, 0.15, 0.15)
    assert meta["n_patches"] == n and meta["skipped"]["count"] == 0
    for split, c in meta["counts"].items():
        sel = ds.split == split
        assert c == {
            "0": int((ds.label[sel] == 0).sum()),
            "1": int((ds.label[sel] == 1).sum()),
            "total": int(sel.sum()),
        }
        assert sorted(meta["patients"][split]) == sorted(set(ds.patient[sel].tolist()))
    assert meta["patients_per_split"] == {"train": 8, "val": 2, "test": 2}
    edge = sum(1 for p in synthetic_kaggle.rglob("*.png") if Image.open(p).size != (50, 50))
    assert meta["padded"]["count"] == edge > 0


def test_pixels_and_labels_match_the_source_files(
    prepared_data: Path, synthetic_kaggle: Path
) -> None:
    ds = load_packed(prepared_data)
    for i in np.linspace(0, len(ds) - 1, 15).astype(int):
        pid, x, y, c = ds.patient[i], ds.x[i], ds.y[i], ds.label[i]
        png = synthetic_kaggle / pid / str(c) / f"{pid}_idx5_x{x}_y{y}_class{c}.png"
        arr = np.asarray(Image.open(png).convert("RGB"))
        np.testing.assert_array_equal(
            ds.images(np.array([i]))[0, : arr.shape[0], : arr.shape[1]], arr
        )


def test_no_patient_in_two_splits(prepared_data: Path) -> None:
    ds = load_packed(prepared_data)
    owners: dict[str, set[str]] = {}
    for pid, split in zip(ds.patient, ds.split):
        owners.setdefault(pid, set()).add(split)
    assert all(len(s) == 1 for s in owners.values())
    assert {next(iter(s)) for s in owners.values()} == {"train", "val", "test"}


def test_rerun_is_byte_identical_serial_or_parallel(
    prepared_data: Path, synthetic_kaggle: Path, tmp_path: Path
) -> None:
    prepare(synthetic_kaggle, tmp_path, seed=0, workers=1, progress=False)
    for name in ("patches.npy", "index.csv", "prepare.json"):
        assert (tmp_path / name).read_bytes() == (prepared_data / name).read_bytes(), name
    # Re-running into the same folder replaces the outputs with the same bytes.
    prepare(synthetic_kaggle, tmp_path, seed=0, workers=2, progress=False)
    assert (tmp_path / "patches.npy").read_bytes() == (prepared_data / "patches.npy").read_bytes()


def test_seed_changes_the_split_only(
    synthetic_kaggle: Path, prepared_data: Path, tmp_path: Path
) -> None:
    prepare(synthetic_kaggle, tmp_path, seed=1, progress=False)
    a, b = load_packed(prepared_data), load_packed(tmp_path)
    assert (tmp_path / "patches.npy").read_bytes() == (prepared_data / "patches.npy").read_bytes()
    assert (a.patient == b.patient).all() and (a.label == b.label).all()
    assert (a.split != b.split).any()


def test_external_test_set(synthetic_kaggle: Path, tmp_path: Path) -> None:
    summary = prepare(synthetic_kaggle, tmp_path, val_frac=0, test_frac=1, progress=False)
    ds = load_packed(tmp_path)
    assert set(ds.split.tolist()) == {"test"}
    assert summary.patients == {"train": 0, "val": 0, "test": 12}
    assert summary.counts["test"]["total"] == len(ds)


def test_bad_fractions_fail_before_writing(synthetic_kaggle: Path, tmp_path: Path) -> None:
    with pytest.raises(IdcscanError, match="at most 1"):
        prepare(synthetic_kaggle, tmp_path / "out", val_frac=0.5, test_frac=0.6, progress=False)
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder(synthetic_kaggle: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(IdcscanError, match="not a folder"):
        prepare(synthetic_kaggle, tmp_path / "file", progress=False)
