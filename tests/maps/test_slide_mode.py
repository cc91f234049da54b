"""Slide mode end to end: a pyramidal TIFF with a known IDC region, mapped by a model that
knows the two synthetic tissues; the CLI (errors, shards, resume) and ``POST /slide``.

The model is a tiny IDCNet trained for a few steps on patches of the same two textures the
slides are painted with, so "IDC where IDC was painted" is a real test of placement, scale
and level choice, not of the model.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app

from slide_helpers import DOWNSAMPLES, IDC, MPP, SCALE, SIZE, TISSUE_WIDTH, paint_slide, texture, write_pyramid  # noqa: E501,F401




@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slides") / "scan.tif"
    write_pyramid(path, paint_slide())
    return path


@pytest.fixture(scope="module")
def mapped(trained_bundle: Path, pyramid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mapped")
    args = ["slide", str(trained_bundle), str(pyramid), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert DISCLAIMER.split(".")[0] in result.output
    return out


def idc_share(x: int, y: int, tile: int) -> float:
    """Share of a tile (level-0 px) covered by the painted IDC rectangle."""
    x0, y0, x1, y1 = (v * SCALE for v in IDC)
    w = max(0, min(x + tile, x1) - max(x, x0))
    h = max(0, min(y + tile, y1) - max(y, y0))
    return w * h / tile**2


def test_reader_goes_down_the_pyramid(pyramid: Path) -> None:
    from idcscan.slides.formats import TiffSlideReader, open_slide

    with open_slide(pyramid) as reader:
        assert isinstance(reader, TiffSlideReader)
        assert reader.mpp == pytest.approx(MPP)
        assert reader.level_downsamples == pytest.approx(DOWNSAMPLES)
        assert reader.best_level(SCALE) == 3
        painted = paint_slide()
        region = reader.read_region(3, 800, 1600, 100, 100)  # level-0 corner, level-3 size
        expected = np.repeat(np.repeat(painted[100:150, 50:100], 2, 0), 2, 1)
        assert np.array_equal(region, expected)
        outside = reader.read_level(3, 450, 350, 100, 100)
        assert (outside[50:, 50:] == 255).all()  # beyond the image: white


def test_idc_is_mapped_where_it_was_painted(mapped: Path) -> None:
    folder = mapped / "scan"
    assert {p.name for p in folder.iterdir()} == {
        "heatmap.png", "tissue.png", "tiles.csv", "idc.geojson", "tiles.geojson", "summary.json",
        "qc_mask.png", "qc_tiles.csv",
    }  # fmt: skip
    summary = json.loads((folder / "summary.json").read_text())
    # a clean slide: artefact QC leaves every tissue tile in
    assert summary["qc_excluded_mm2"] == 0.0
    assert summary["qc_tiles"] == {"pen": 0, "blur": 0, "fold": 0, "bubble": 0}
    assert summary["tile_size"] == 800 and summary["level"] == 3
    assert summary["mpp"] == pytest.approx(MPP) and summary["mpp_source"] == "metadata"

    with open(folder / "tiles.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["x", "y", "probability", "patch_probability"]
        rows = list(reader)
    tiles = [(int(r["x"]), int(r["y"]), float(r["patch_probability"])) for r in rows]
    # tissue columns 0-3 x rows 0-3; the glass column (x >= 3200) is never classified
    assert sorted((x, y) for x, y, _ in tiles) == [
        (x, y) for x in range(0, 3200, 800) for y in range(0, 3200, 800)
    ]
    for x, y, p in tiles:  # each tile on its own pixels: IDC where IDC was painted
        share = idc_share(x, y, 800)
        if share >= 0.8:
            assert p >= 0.5, (x, y, p)
        elif share <= 0.1:
            assert p < 0.5, (x, y, p)

    # the map: each tile read with its neighbours (sigma one patch), from the same patch values
    from idcscan.maps.context import smooth_probabilities

    xs = np.array([t[0] for t in tiles]) // 800
    ys = np.array([t[1] for t in tiles]) // 800
    mapped_p = np.array([float(r["probability"]) for r in rows])
    expected = smooth_probabilities(ys, xs, np.array([t[2] for t in tiles]), 1.0)
    assert np.allclose(mapped_p, expected, atol=2e-3)  # from the CSV's 6 decimals
    assert summary["context"] == 1.0 and summary["threshold_rule"]
    # the IDC area is counted at the bundle's area threshold, on the mapped values
    n_idc = int(np.count_nonzero(mapped_p >= summary["threshold"]))
    assert summary["n_tiles"] == 16 and summary["n_idc_tiles"] == n_idc
    assert summary["idc_fraction"] == pytest.approx(n_idc / 16)
    tile_mm2 = (800 * MPP / 1000) ** 2
    assert summary["tissue_area_mm2"] == pytest.approx(16 * tile_mm2)
    assert summary["idc_area_mm2"] == pytest.approx(n_idc * tile_mm2)

    with Image.open(folder / "heatmap.png") as im:
        assert im.width > 300 and im.height > 200


def test_geojson_outlines_the_idc_region(mapped: Path) -> None:
    from matplotlib.path import Path as MplPath

    collection = json.loads((mapped / "scan" / "idc.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) >= 1
    w, h = SIZE[0] * SCALE, SIZE[1] * SCALE
    step = 50  # rasterise in level-0 pixels on a 50 px lattice
    yy, xx = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    pts = np.column_stack([xx.ravel(), yy.ravel()])
    predicted = np.zeros(len(pts), dtype=bool)
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "IDC"
        assert len(props["classification"]["color"]) == 3
        assert feature["geometry"]["type"] == "Polygon"
        rings = feature["geometry"]["coordinates"]
        inside = MplPath(rings[0]).contains_points(pts)
        for hole in rings[1:]:
            inside &= ~MplPath(hole).contains_points(pts)
        predicted |= inside
    x0, y0, x1, y1 = (v * SCALE for v in IDC)
    truth = (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou >= 0.5, iou


def test_rerun_skips_finished_slides(trained_bundle: Path, pyramid: Path, mapped: Path) -> None:
    before = (mapped / "scan" / "summary.json").stat().st_mtime_ns
    args = ["slide", str(trained_bundle), str(pyramid), "--out", str(mapped)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Skipped 1" in result.output
    assert (mapped / "scan" / "summary.json").stat().st_mtime_ns == before
    assert not list(mapped.glob(".*partial*"))


def _plain_slides(folder: Path, n: int) -> list[Path]:
    """Small PNGs at the training scale without scale metadata (mapped with --mpp 4)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(10 + i)
        img = texture(rng, 100, 150, "glass")
        img[:, :100] = texture(rng, 100, 100, "normal")
        img[:50, :50] = texture(rng, 50, 50, "idc")
        path = folder / f"slide{i}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def test_shards_then_resume_cover_every_slide_once(trained_bundle: Path, tmp_path: Path) -> None:
    paths = _plain_slides(tmp_path / "in", 3)
    out = tmp_path / "out"
    runner = CliRunner()
    base = ["slide", str(trained_bundle), str(tmp_path / "in"), "--out", str(out)]
    guessed = runner.invoke(app, [*base, "--shard", "1/2"])
    # no scale in a plain PNG: never guessed, one line naming the way out, nothing written
    assert guessed.exit_code == 2, guessed.output
    assert "records no scale" in guessed.output and "--mpp" in guessed.output
    assert not [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    base += ["--mpp", "4"]
    first = runner.invoke(app, [*base, "--shard", "1/2"])
    assert first.exit_code == 0, first.output
    folders = lambda: sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[0] != ".")  # noqa: E731
    assert folders() == ["slide0", "slide2"]
    second = runner.invoke(app, [*base, "--shard", "2/2"])
    assert second.exit_code == 0, second.output
    assert folders() == ["slide0", "slide1", "slide2"]

    again = runner.invoke(app, base)
    assert again.exit_code == 0 and "Skipped 3" in again.output
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["slide"] for r in rows) == ["slide0", "slide1", "slide2"]
    for row in rows:
        assert 0.0 <= float(row["idc_fraction"]) <= 1.0
        assert int(row["n_tiles"]) == 4  # two tissue columns x two rows; glass skipped
        assert row["mpp_source"] == "option" and row["warnings"] == ""
    assert len(paths) == 3


def test_overlapping_tiles_average_into_finer_cells(trained_bundle: Path, tmp_path: Path) -> None:
    from idcscan.runtime.predictor import Predictor
    from idcscan.maps.mapper import SlideOptions, map_slide
    from idcscan.slides.formats import open_slide

    (path,) = _plain_slides(tmp_path, 1)
    predictor = Predictor(trained_bundle)
    with open_slide(path) as reader:
        # each tile alone (no spatial context): this is about how overlapping tiles average
        plain = map_slide(predictor, reader, SlideOptions(mpp=4.0, context=0))
        fine = map_slide(predictor, reader, SlideOptions(mpp=4.0, stride=25, context=0))
    assert fine.grid.stride == 25 and fine.cells.shape == (4, 6)
    assert len(fine.probabilities) > len(plain.probabilities)
    # the IDC corner (top-left 50 px = cells [0:2, 0:2]) is hotter than the normal tissue
    assert np.nanmean(fine.cells[:2, :2]) > 0.5 > np.nanmean(fine.cells[2:, 2:4])
    # a cell covered by one tile only has exactly that tile's probability
    only = fine.probabilities[fine.tile_index == 0][0]
    assert fine.cells[0, 0] == pytest.approx(only)


@pytest.mark.parametrize(
    ("name", "payload"),
    [("broken.svs", b"II*\x00" + b"\x00\x13" * 64), ("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00")],
)
def test_corrupt_file_is_a_clear_error(
    trained_bundle: Path, tmp_path: Path, name: str, payload: bytes
) -> None:
    bad = tmp_path / name
    bad.write_bytes(payload)
    args = ["slide", str(trained_bundle), str(bad), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "error" in result.output and name in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / Path(name).stem).exists()


# ------------------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def client(trained_bundle: Path):
    from fastapi.testclient import TestClient

    from idcscan.runtime.predictor import Predictor
    from idcscan.server.app import create_app

    with TestClient(create_app(Predictor(trained_bundle))) as c:
        yield c


def _decode_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_post_slide_maps_an_uploaded_image(client, tmp_path: Path) -> None:
    (path,) = _plain_slides(tmp_path, 1)
    upload = {"file": ("slide0.png", path.read_bytes(), "image/png")}
    guessed = client.post("/slide?context=0", files=upload)
    # the same rule as the command line and the viewer: no recorded scale, none given: refused
    assert guessed.status_code == 400, guessed.text
    assert "records no scale" in guessed.json()["error"]
    assert "Scale" in guessed.json()["error"] and "--mpp" not in guessed.json()["error"]
    r = client.post("/slide?context=0&mpp=4", files=upload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_tiles"] == 4 and 0.0 <= body["idc_fraction"] <= 1.0
    assert body["context"] == 0.0
    assert body["disclaimer"] == DISCLAIMER
    assert body["mpp_source"] == "option" and body["warnings"] == []
    image, heatmap = _decode_data_url(body["image"]), _decode_data_url(body["heatmap"])
    assert image.size == heatmap.size and heatmap.mode == "RGBA"
    alpha = np.asarray(heatmap)[..., 3]
    h, w = alpha.shape
    # one colour scale: the IDC corner drawn (opaque), low P(IDC) and glass left clear
    assert alpha[: h // 2, : w // 3].mean() > 200
    assert alpha[h // 2 :, w // 3 : 2 * w // 3].mean() < alpha[: h // 2, : w // 3].mean()
    assert alpha[:, -w // 5 :].max() == 0
    assert body["regions"]["type"] == "FeatureCollection"


def test_post_slide_reads_a_pyramidal_tiff_from_memory(client, pyramid: Path) -> None:
    r = client.post("/slide", files={"file": ("scan.tif", pyramid.read_bytes(), "image/tiff")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mpp"] == pytest.approx(MPP) and body["level"] == 3 and body["n_tiles"] == 16


def test_post_slide_errors_follow_predict(client, trained_bundle: Path) -> None:
    from fastapi.testclient import TestClient

    from idcscan.runtime.predictor import Predictor
    from idcscan.server.app import create_app
    from idcscan.server.state import ServerSettings

    pdf = client.post("/slide", files={"file": ("a.pdf", b"%PDF-1.4 nothing", "application/pdf")})
    assert pdf.status_code == 415 and "error" in pdf.json()
    junk = client.post("/slide", files={"file": ("a.png", b"not an image at all", "image/png")})
    assert junk.status_code == 400 and "error" in junk.json()
    missing = client.post("/slide", files={"other": ("a.png", b"x", "image/png")})
    assert missing.status_code == 400 and "'file'" in missing.json()["error"]

    small = ServerSettings(max_slide_upload_mb=0.01, max_slide_pixels=5_000)
    with TestClient(create_app(Predictor(trained_bundle), settings=small)) as tight:
        big = tight.post("/slide", files={"file": ("b.bin", b"\0" * 20_000, "image/png")})
        assert big.status_code == 413 and "error" in big.json()
        img = io.BytesIO()
        Image.new("RGB", (100, 100), "white").save(img, format="PNG")
        many = tight.post("/slide", files={"file": ("c.png", img.getvalue(), "image/png")})
        assert many.status_code == 413 and "limit" in many.json()["error"]


def test_slide_page_is_served_with_the_disclaimer(client) -> None:
    page = client.get("/static/slide.html")
    assert page.status_code == 200
    assert DISCLAIMER in page.text
    assert client.get("/static/slide.js").status_code == 200
