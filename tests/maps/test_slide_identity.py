"""Whose map is in a folder, which scale it was made at, and how much tissue it covers.

Three ways a correct computation can still mislead: a slide named like one already mapped
(two patients' ``mosaic.png``), a picture without a recorded scale mapped at a guess, and a map
from which artefact QC left out nearly all the tissue ("IDC in 0.0% of 0 tissue tiles").
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan.cli import app
from slide_helpers import texture

#: 6350 dpi is 4 µm/px, the training scale: these pictures record their scale
DPI_4UM = (6350, 6350)


def tissue_png(path: Path, seed: int, idc: bool) -> Path:
    """A 150 x 100 px picture at the training scale (recorded): tissue, IDC or not, and glass."""
    rng = np.random.default_rng(seed)
    img = texture(rng, 100, 150, "glass")
    img[:, :100] = texture(rng, 100, 100, "idc" if idc else "normal")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, dpi=DPI_4UM)
    return path


def slide(bundle: Path, *args: object):
    return CliRunner().invoke(app, ["slide", str(bundle), *map(str, args)])


def csv_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return {r["slide"]: r for r in csv.DictReader(fh)}


# ----------------------------------------------------------------------------- identity


def test_a_different_file_with_a_mapped_name_is_refused_not_skipped(
    trained_bundle: Path, tmp_path: Path
) -> None:
    """Patient A's mosaic.png, then patient B's mosaic.png into the same folder: the second
    run says so in one line and exits non-zero; A's map and summary.csv stay A's."""
    a = tissue_png(tmp_path / "9126" / "mosaic.png", seed=1, idc=True)
    b = tissue_png(tmp_path / "8916" / "mosaic.png", seed=2, idc=False)
    out = tmp_path / "maps"
    first = slide(trained_bundle, a, "--out", out)
    assert first.exit_code == 0, first.output
    before = (out / "mosaic" / "summary.json").read_text()
    assert json.loads(before)["fingerprint"].startswith("sha256-sampled:")

    second = slide(trained_bundle, b, "--out", out)
    assert second.exit_code == 2, second.output
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, second.stderr
    assert str(a) in errors[0] and str(b) in errors[0] and "nothing was mapped" in errors[0]
    assert "Skipped" not in second.output
    assert (out / "mosaic" / "summary.json").read_text() == before
    assert csv_rows(out)["mosaic"]["path"] == str(a)

    # into its own folder the second patient maps as usual
    third = slide(trained_bundle, b, "--out", tmp_path / "maps-8916")
    assert third.exit_code == 0, third.output


def test_a_rerun_skips_only_the_same_file_unchanged(trained_bundle: Path, tmp_path: Path) -> None:
    path = tissue_png(tmp_path / "in" / "s.png", seed=3, idc=True)
    out = tmp_path / "maps"
    assert slide(trained_bundle, path, "--out", out).exit_code == 0
    summary = out / "s" / "summary.json"
    mapped_at = summary.stat().st_mtime_ns

    again = slide(trained_bundle, path, "--out", out)
    assert again.exit_code == 0 and "Skipped 1" in again.output and "same file" in again.output
    assert summary.stat().st_mtime_ns == mapped_at

    moved = tmp_path / "elsewhere" / "s.png"  # the same content elsewhere is the same slide
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert "Skipped 1" in slide(trained_bundle, moved, "--out", out).output

    old = json.loads(summary.read_text())["fingerprint"]
    tissue_png(path, seed=4, idc=False)  # the same file, new content: mapped again
    changed = slide(trained_bundle, path, "--out", out)
    assert changed.exit_code == 0 and "Skipped" not in changed.output, changed.output
    assert json.loads(summary.read_text())["fingerprint"] != old


def test_a_rerun_with_another_model_context_or_threshold_is_refused_not_skipped(
        trained_bundle: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """Skipping would report the earlier map's numbers as this run's."""
    path = tissue_png(tmp_path / "in" / "s.png", seed=6, idc=True)
    out = tmp_path / "maps"
    assert slide(trained_bundle, path, "--out", out).exit_code == 0
    summary = out / "s" / "summary.json"
    mapped_at = summary.stat().st_mtime_ns
    for args, words in (((trained_bundle, "--context", 0), "--context 1, not --context 0"),
                        ((trained_bundle, "--threshold", 0.9), "not --threshold 0.9"),
                        ((tiny_bundle,), "model ")):
        bundle, *rest = args
        refused = slide(bundle, path, "--out", out, *rest)
        text = " ".join(refused.output.split())
        assert refused.exit_code == 2, refused.output
        assert "other settings" in text and words in text and "another --out" in text
    assert summary.stat().st_mtime_ns == mapped_at  # the earlier map untouched
    # and the other way: a map made with --threshold is not the bundle's default map
    other = tmp_path / "maps-0.9"
    assert slide(trained_bundle, path, "--out", other, "--threshold", 0.9).exit_code == 0
    default = slide(trained_bundle, path, "--out", other)
    assert default.exit_code == 2 and "--threshold 0.9, not --threshold" in " ".join(
        default.output.split()), default.output
    recorded = json.loads(summary.read_text())["threshold"]
    same = slide(trained_bundle, path, "--out", out, "--threshold", recorded, "--context", 1)
    assert same.exit_code == 0 and "Skipped 1" in same.output


def test_folders_from_before_fingerprints(tmp_path: Path) -> None:
    """A folder without a fingerprint is this file's when it names its path and is newer than
    it; older than the file, it is an earlier version; naming another path, a clash."""
    from idcscan.errors import IdcscanError
    from idcscan.maps.identity import fingerprint, plan_run, previous_map

    path = tissue_png(tmp_path / "in" / "s.png", seed=5, idc=False)
    folder = tmp_path / "out" / "s"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"slide": "s", "path": str(path)}))
    content = fingerprint(path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert previous_map(folder, path, content).state == "same"
    os.utime(path, ns=(4_000_000_000_000_000_000, 4_000_000_000_000_000_000))
    assert previous_map(folder, path, content).state == "changed"
    other = tissue_png(tmp_path / "other" / "s.png", seed=6, idc=True)
    assert previous_map(folder, other, fingerprint(other)).state == "clash"
    with pytest.raises(IdcscanError) as refused:
        plan_run([other], tmp_path / "out", lambda p: p.stem)
    assert "\n" not in str(refused.value) and str(other) in str(refused.value)


def test_mosaics_of_two_patients_share_a_folder_and_both_map(
    trained_bundle: Path, tmp_path: Path
) -> None:
    from idcscan.data.synthetic import generate_dataset

    summary = generate_dataset(tmp_path / "kaggle", patients=2, patches_per_patient=12, seed=1)
    mosaics = tmp_path / "mosaics"
    for pid in summary.patients:
        made = CliRunner().invoke(app, ["mosaic", str(tmp_path / "kaggle" / pid), "--out",
                                        str(mosaics)])
        assert made.exit_code == 0, made.output
    images = [mosaics / f"{pid}.png" for pid in summary.patients]
    out = tmp_path / "maps"
    result = slide(trained_bundle, *images, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(csv_rows(out)) == sorted(summary.patients)


# -------------------------------------------------------------------------------- scale


def test_a_picture_without_a_scale_is_refused_until_given_one(
    trained_bundle: Path, tmp_path: Path
) -> None:
    path = tmp_path / "snap40x.png"
    rng = np.random.default_rng(7)
    Image.fromarray(texture(rng, 120, 160, "normal")).save(path)  # no dpi recorded
    out = tmp_path / "maps"
    refused = slide(trained_bundle, path, "--out", out)
    assert refused.exit_code == 2
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert "snap40x.png records no scale" in line and "--mpp" in line and "0.25" in line
    assert not (out / "snap40x").exists()
    given = slide(trained_bundle, path, "--out", out, "--mpp", "4")
    assert given.exit_code == 0, given.output
    summary = json.loads((out / "snap40x" / "summary.json").read_text())
    assert summary["mpp_source"] == "option" and summary["mpp"] == 4.0


# ---------------------------------------------------------------------- QC, said out loud


def snapshot(path: Path) -> Path:
    """A 40x snapshot (0.25 µm/px, recorded nowhere): tissue 16 times finer than training."""
    rng = np.random.default_rng(8)
    small = texture(rng, 100, 160, "glass")
    small[:, :120] = texture(rng, 100, 120, "normal")
    big = Image.fromarray(small).resize((160 * 16, 100 * 16), Image.Resampling.BICUBIC)
    big.save(path)
    return path


def test_a_map_qc_emptied_says_so_in_the_line_the_json_and_the_csv(
    trained_bundle: Path, tmp_path: Path
) -> None:
    path = snapshot(tmp_path / "snap40x.png")
    out = tmp_path / "maps"
    wrong = slide(trained_bundle, path, "--out", out, "--mpp", "4")  # the scale mistyped
    assert wrong.exit_code == 0, wrong.output
    (line,) = [x for x in wrong.stdout.splitlines() if x.startswith("snap40x:")]
    assert "CAUTION: Artefact QC left out" in line and "blur" in line and "--mpp" in line
    summary = json.loads((out / "snap40x" / "summary.json").read_text())
    assert summary["qc_tiles"]["blur"] > summary["n_tiles"]
    (warning,) = summary["warnings"]
    assert warning.startswith("Artefact QC left out") and "wrong scale" in warning
    assert csv_rows(out)["snap40x"]["warnings"] == warning

    right = slide(trained_bundle, path, "--out", tmp_path / "right", "--mpp", "0.25")
    assert right.exit_code == 0, right.output
    assert "CAUTION" not in right.stdout
    fine = json.loads((tmp_path / "right" / "snap40x" / "summary.json").read_text())
    assert fine["warnings"] == [] and fine["n_tiles"] > 0


def test_caveats_of_older_folders_are_derived_from_their_numbers() -> None:
    from idcscan.maps.caveats import qc_caveat, summary_caveats

    assert qc_caveat(10, {"pen": 0, "blur": 10}) is None  # half left out: no majority
    text = qc_caveat(1, {"pen": 3, "blur": 6})
    assert text.startswith("Artefact QC left out 9 of 10 tissue tiles (90%: blur 6, pen 3)")
    old = {"n_tiles": 5, "qc_tiles": {"blur": 0}, "mpp": 4.0, "mpp_source": "assumed"}
    (assumed,) = summary_caveats(old)
    assert assumed.startswith("Scale assumed (4 µm/px)")
    assert summary_caveats({**old, "warnings": []}) == []
