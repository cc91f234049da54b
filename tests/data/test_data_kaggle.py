"""Reading the Kaggle layout through ``prepare``: dedupe, SRC forms, bad files, padding, modes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idcscan.data.kaggle import NESTED_DIR, scan
from idcscan.data.packed import load_packed
from idcscan.data.packing import prepare
from idcscan.errors import IdcscanError


def write_png(path: Path, size=(50, 50), mode: str = "RGB", value: int = 120) -> np.ndarray:
    """Write a patch with a per-file pattern; returns the RGB pixels it should decode to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[0, 0] = value
    Image.fromarray(arr, "RGB").convert(mode).save(path, format="PNG")
    return np.asarray(Image.open(path).convert("RGB"))


def name(pid: str, x: int, y: int, c: int) -> str:
    return f"{pid}/{c}/{pid}_idx5_x{x}_y{y}_class{c}.png"


def make_tree(root: Path) -> list[str]:
    files = [name("10", 51, 1, 0), name("10", 1, 1, 1), name("10", 1, 51, 0), name("9", 1, 1, 1)]
    for f in files:
        write_png(root / f)
    return files


def test_rows_sorted_by_patient_then_y_then_x(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    prepare(tmp_path / "src", tmp_path / "out", val_frac=0, test_frac=1, progress=False)
    ds = load_packed(tmp_path / "out")
    assert ds.patient.tolist() == ["9", "10", "10", "10"]  # numeric ids sort as numbers
    assert list(zip(ds.y.tolist(), ds.x.tolist()))[1:] == [(1, 1), (1, 51), (51, 1)]
    assert ds.label.tolist() == [1, 1, 0, 0]
    assert ds.rows.tolist() == [0, 1, 2, 3]


def test_archive_duplicates_are_read_once_and_src_may_be_parent_or_folder(tmp_path: Path) -> None:
    parent = tmp_path / "archive"
    files = make_tree(parent / NESTED_DIR)
    for f in files:  # the archive's second copy at the top level
        write_png(parent / f)
    (parent / "archive.zip").write_bytes(b"not a patch")  # loose files next to patients are ignored

    a = prepare(parent, tmp_path / "a", progress=False, val_frac=0, test_frac=1)
    b = prepare(parent / NESTED_DIR, tmp_path / "b", progress=False, val_frac=0, test_frac=1)
    assert a.n_patches == b.n_patches == len(files)
    assert a.duplicates == len(files) and b.duplicates == 0
    assert a.skipped == 0
    assert (tmp_path / "a/patches.npy").read_bytes() == (tmp_path / "b/patches.npy").read_bytes()
    assert (tmp_path / "a/index.csv").read_bytes() == (tmp_path / "b/index.csv").read_bytes()
    meta = json.loads((tmp_path / "a/prepare.json").read_text())
    assert meta["duplicates_ignored"]["count"] == len(files)


def test_a_patient_only_at_top_level_is_still_found(tmp_path: Path) -> None:
    parent = tmp_path / "archive"
    make_tree(parent / NESTED_DIR)
    write_png(parent / name("77", 1, 1, 1))
    summary = prepare(parent, tmp_path / "out", progress=False, val_frac=0, test_frac=1)
    assert summary.n_patches == 5
    assert "77" in load_packed(tmp_path / "out").patient.tolist()


def test_every_kind_of_bad_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    write_png(src / "10/0/10_idx5_x1_y1_class0_copy.png")  # bad name
    write_png(src / "10/0/10_idx5_x101_y1_class1.png")  # folder 0, name class1
    write_png(src / "10/1/11_idx5_x101_y1_class1.png")  # folder patient 10, name 11
    write_png(src / "10/2/10_idx5_x151_y1_class1.png")  # class folder not 0/1
    good = io.BytesIO()
    Image.new("RGB", (50, 50), (200, 100, 150)).save(good, format="PNG")
    (src / "10/1/10_idx5_x201_y1_class1.png").write_bytes(good.getvalue()[:-40])  # truncated
    (src / "10/1/10_idx5_x251_y1_class1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (src / "10/1/10_idx5_x301_y1_class1.jpg").write_bytes(b"jpeg?")  # not a PNG by name
    jpeg = io.BytesIO()
    Image.new("RGB", (50, 50)).save(jpeg, format="JPEG")
    (src / "10/1/10_idx5_x351_y1_class1.png").write_bytes(jpeg.getvalue())  # JPEG inside
    write_png(src / "10/1/10_idx5_x401_y1_class1.png", size=(60, 60))  # bigger than a patch
    (src / "10/notes.txt").write_text("a stray file in a patient folder")
    write_png(src / "10/0/10_idx5_x51_y51_class0.png")  # first at (51, 51): kept
    write_png(src / "10/1/10_idx5_x51_y51_class1.png")  # same place, other class

    summary = prepare(src, tmp_path / "out", progress=False, val_frac=0, test_frac=1)
    assert summary.n_patches == 5  # the good ones, untouched by their bad neighbours
    meta = json.loads((tmp_path / "out/prepare.json").read_text())
    reasons = {f["path"]: f["reason"] for f in meta["skipped"]["files"]}
    assert meta["skipped"]["count"] == len(reasons) == summary.skipped == 11
    assert reasons["10/0/10_idx5_x1_y1_class0_copy.png"].startswith("file name does not match")
    assert reasons["10/0/10_idx5_x101_y1_class1.png"].startswith("class mismatch")
    assert reasons["10/1/11_idx5_x101_y1_class1.png"].startswith("patient mismatch")
    assert "is not 0 or 1" in reasons["10/2/10_idx5_x151_y1_class1.png"]
    assert reasons["10/1/10_idx5_x201_y1_class1.png"].startswith("cannot decode image")
    assert reasons["10/1/10_idx5_x251_y1_class1.png"].startswith("cannot decode image")
    assert reasons["10/1/10_idx5_x301_y1_class1.jpg"].startswith("not a PNG")
    assert reasons["10/1/10_idx5_x351_y1_class1.png"] == "not a PNG: content is JPEG"
    assert reasons["10/1/10_idx5_x401_y1_class1.png"].startswith("larger than a patch")
    assert "10/notes.txt" in reasons
    assert reasons["10/1/10_idx5_x51_y51_class1.png"].startswith("duplicate coordinates")
    assert sum(meta["skipped"]["by_reason"].values()) == 11
    ds = load_packed(tmp_path / "out")
    assert len(ds) == 5 and ds.patches.shape == (5, 50, 50, 3)  # compacted: no holes


def test_edge_crops_are_padded_white_bottom_right(tmp_path: Path) -> None:
    src = tmp_path / "src"
    narrow = write_png(src / name("5", 1, 1, 0), size=(30, 50))  # width 30
    short = write_png(src / name("5", 51, 1, 1), size=(50, 20))  # height 20
    full = write_png(src / name("5", 101, 1, 0))
    summary = prepare(src, tmp_path / "out", progress=False, val_frac=0, test_frac=1)
    assert summary.padded == 2
    ds = load_packed(tmp_path / "out")
    p = ds.images()
    np.testing.assert_array_equal(p[0, :, :30], narrow)
    assert (p[0, :, 30:] == 255).all()
    np.testing.assert_array_equal(p[1, :20], short)
    assert (p[1, 20:] == 255).all()
    np.testing.assert_array_equal(p[2], full)
    meta = json.loads((tmp_path / "out/prepare.json").read_text())
    assert meta["padded"]["count"] == 2
    assert "white" in meta["padded"]["how"] and meta["padded"]["why"]


def test_non_rgb_modes_are_converted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_png(src / name("5", 1, 1, 0), mode="L")
    write_png(src / name("5", 51, 1, 0), mode="RGBA")
    write_png(src / name("5", 101, 1, 1), mode="P")
    summary = prepare(src, tmp_path / "out", progress=False, val_frac=0, test_frac=1)
    assert summary.n_patches == 3 and summary.skipped == 0
    meta = json.loads((tmp_path / "out/prepare.json").read_text())
    assert meta["converted_to_rgb"] == {"L": 1, "P": 1, "RGBA": 1}
    gray = np.asarray(Image.open(src / name("5", 1, 1, 0)))
    ds = load_packed(tmp_path / "out")
    np.testing.assert_array_equal(ds.images()[0], np.repeat(gray[..., None], 3, axis=2))


def test_scan_reports_missing_or_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(IdcscanError, match="not a folder"):
        scan(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IdcscanError, match="No Kaggle patches found"):
        prepare(tmp_path / "empty", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
