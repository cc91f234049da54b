"""A full disk or a read-only output folder: one clear line, exit 2, and no file left that looks
finished (nor a temporary one left behind).

The filesystems are real: a tiny tmpfs filled to the last byte, and a tmpfs mounted read-only
(both need root; without it the read-only case uses a folder without write permission, and the
full-disk case is skipped, never faked).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.files import atomic_write_text, reserve_space

runner = CliRunner()


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here: {done.stderr.decode(errors='replace')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem has no byte left."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs with every byte taken by a filler file."""
    with _tmpfs(tmp_path / "full", "size=64k") as root:
        _fill(root / "filler")
        yield root


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nothing can be written to: a read-only tmpfs (root) or mode 0555 (others)."""
    if os.geteuid() == 0:
        with _tmpfs(tmp_path / "ro", "ro,size=64k") as root:
            yield root
        return
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _error_line(output: str) -> str:
    """The one error line (a progress bar may precede it); no traceback."""
    lines = output.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    assert not "".join(lines[errors[0] + 1 :]).strip(), output  # nothing after it
    assert lines[errors[0]].startswith("error: Cannot "), output
    return lines[errors[0]]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "filler")


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_predict_to_a_full_disk_says_so_and_leaves_nothing(tiny_bundle, images, full_disk, suffix):
    target = full_disk / f"predictions.{suffix}"
    result = runner.invoke(app, ["predict", str(tiny_bundle), str(images), "--out", str(target)])
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert str(target) in line and "no space left" in line
    assert _entries(full_disk) == []  # neither the file nor its temporary


def test_predict_into_a_read_only_folder_says_so(tiny_bundle, images, read_only):
    target = read_only / "predictions.csv"
    result = runner.invoke(app, ["predict", str(tiny_bundle), str(images), "--out", str(target)])
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert str(target) in line
    assert "read-only" in line or "permission denied" in line
    assert _entries(read_only) == []


def test_prepare_on_a_full_disk_fails_cleanly_instead_of_crashing(synthetic_kaggle, full_disk):
    """The packed array is memory-mapped: without reserving its blocks first, the first page
    written on a full disk would kill the process with SIGBUS."""
    out = full_disk / "data"
    out.mkdir()
    result = runner.invoke(app, ["prepare", str(synthetic_kaggle), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "no space left" in _error_line(result.stderr)
    assert _entries(out) == []  # no patches.npy, index.csv or prepare.json, no temporaries


def test_atomic_write_keeps_the_previous_file_when_the_disk_fills(full_disk):
    """A reader sees the old complete file, never a truncated new one."""
    (full_disk / "filler").unlink()
    target = full_disk / "report.txt"
    atomic_write_text(target, "old, complete\n")
    _fill(full_disk / "filler")  # take the room back
    with pytest.raises(Exception) as info:
        atomic_write_text(target, "x" * 200_000)
    assert "no space left" in str(info.value)
    assert target.read_text() == "old, complete\n"
    assert _entries(full_disk) == ["report.txt"]


def test_reserving_a_sparse_file_on_a_full_disk_raises_instead_of_sigbus(full_disk):
    sparse = full_disk / "big.npy"
    with open(sparse, "wb") as fh:
        fh.truncate(10 * 1024 * 1024)  # sparse: costs no block yet
    with pytest.raises(Exception) as info:
        reserve_space(sparse)
    assert "no space left" in str(info.value)


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_evaluate_and_train_into_a_read_only_folder_say_so_in_one_line(
    tiny_bundle, prepared_data, read_only, command
):
    out = read_only / "out"
    if command == "evaluate":
        args = ["evaluate", str(tiny_bundle), str(prepared_data), "--out", str(out),
                "--n-boot", "10"]
    else:
        args = ["train", str(prepared_data), "--out", str(out), "--backbone",
                "test_efficientnet", "--weights", "none", "--input-size", "32",
                "--max-minutes", "0.1", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert "read-only" in line or "permission denied" in line
    assert _entries(read_only) == []
