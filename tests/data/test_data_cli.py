"""The data commands through Typer's runner: synth -> prepare, download offline, bad input."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app
from idcscan.data.packed import load_packed

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_synth_then_prepare(tmp_path: Path) -> None:
    src, data = tmp_path / "kaggle", tmp_path / "data"
    result = runner.invoke(
        app, ["synth", str(src), "--patients", "4", "--patches-per-patient", "15", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 60 patches" in flat(result.output)
    assert len(list(src.rglob("*.png"))) == 60
    assert json.loads((src / "synthetic.json").read_text())["seed"] == 2

    result = runner.invoke(
        app,
        [
            "prepare",
            str(src),
            "--out",
            str(data),
            "--val-frac",
            "0.25",
            "--test-frac",
            "0.25",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    for word in ("train", "val", "test", "patches.npy", "index.csv", "prepare.json"):
        assert word in text
    assert flat(DISCLAIMER) in text
    ds = load_packed(data)
    assert len(ds) == 60 and set(ds.split.tolist()) == {"train", "val", "test"}
    meta = json.loads((data / "prepare.json").read_text())
    assert meta["seed"] == 1 and meta["patients_per_split"] == {"train": 2, "val": 1, "test": 1}


def test_synth_refuses_a_folder_with_other_data(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["synth", str(tmp_path), "--patients", "1"])
    assert result.exit_code == 2
    assert "not empty" in flat(result.output)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_prepare_external_test_set(synthetic_kaggle: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "prepare",
            str(synthetic_kaggle.parent),
            "--out",
            str(tmp_path),
            "--val-frac",
            "0",
            "--test-frac",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert set(load_packed(tmp_path).split.tolist()) == {"test"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--val-frac", "0.7", "--test-frac", "0.7"], "at most 1"),
        (["--val-frac", "-0.1"], "between 0 and 1"),
    ],
)
def test_prepare_bad_fractions_exit_2_with_a_clear_message(
    synthetic_kaggle: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(
        app, ["prepare", str(synthetic_kaggle), "--out", str(tmp_path / "d"), *args]
    )
    assert result.exit_code == 2
    assert message in flat(result.output)
    assert "Traceback" not in result.output


def test_prepare_missing_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "not a folder" in flat(result.output)


def test_download_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    result = runner.invoke(app, ["download", "--out", str(tmp_path / "k")])
    assert result.exit_code == 2
    assert "idcscan prepare PATH" in flat(result.output)
