"""``idcscan slide ... --regions FILE.geojson``: only the tissue inside a pathologist's QuPath
annotations is scored, and the areas and IDC fraction are over those regions.

The painted scan (0.25 µm/px, tiles of 800 level-0 px, tissue in x, y < 3200) is mapped whole
by the session's ``painted_map``; here the same scan is mapped inside regions drawn so the
answer is known: which tile centres fall inside is worked out by hand below.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import shutil
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.errors import IdcscanError
from idcscan.maps.regions import read_regions
from idcscan.slides.tiling import TileGrid

MPP = 0.25
TILE = 800


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(geometry: dict, object_type: str | None = "annotation") -> dict:
    props = {"classification": {"name": "Tumor", "color": [200, 0, 0]}}
    if object_type:
        props["objectType"] = object_type
    return {"type": "Feature", "geometry": geometry, "properties": props}


#: A: the left 1300 px of the scan, with a hole around the centre (400, 1200) of tile (0, 800);
#: B: a small square around the centre (2800, 2000) of tile (2400, 1600), and a square half
#: off the scan's bottom-right corner. Besides them a detection over everything and a point
#: annotation, neither of which is a region.
A = {"type": "Polygon", "coordinates": [square(0, 0, 1300, 3200), square(300, 1100, 500, 1300)]}
B = {"type": "MultiPolygon", "coordinates": [[square(2700, 1900, 2900, 2100)],
                                             [square(3900, 3100, 4200, 3300)]]}
EXPECTED = {(0, 0), (0, 1600), (0, 2400), (800, 0), (800, 800), (800, 1600), (800, 2400),
            (2400, 1600)}
AREA_PX = 1300 * 3200 - 200 * 200 + 200 * 200 + 100 * 100  # B's second part cut to the scan


def qupath_export(path: Path) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature(A), feature(B),
        feature({"type": "Polygon", "coordinates": [square(0, 0, 4000, 3200)]}, "detection"),
        feature({"type": "Point", "coordinates": [100, 100]}),
    ]}))
    return path


def rows(path: Path) -> dict[tuple[int, int], dict[str, str]]:
    with open(path, newline="") as fh:
        return {(int(r["x"]), int(r["y"])): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def inside(trained_bundle: Path, painted_map: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("regions")
    regions = qupath_export(root / "annotations.geojson")
    result = CliRunner().invoke(app, ["slide", str(trained_bundle),
                                      str(painted_map / "slides" / "scan.tif"),
                                      "--out", str(root / "maps"), "--regions", str(regions)])
    assert result.exit_code == 0, result.output
    return root, regions, result


def test_only_tiles_whose_centre_lies_inside_are_scored(inside, painted_map: Path) -> None:
    root, _, _ = inside
    scored = rows(root / "maps" / "scan" / "tiles.csv")
    whole = rows(painted_map / "maps" / "scan" / "tiles.csv")
    assert set(scored) == EXPECTED and EXPECTED <= set(whole)
    for corner in EXPECTED:  # the same pixels, the same model: the same P(IDC) alone, and
        # read with the same neighbours, those just outside the outline included
        for column in ("patch_probability", "probability"):
            assert float(scored[corner][column]) == pytest.approx(
                float(whole[corner][column]), abs=2e-6), (corner, column)
    tiles = json.loads((root / "maps" / "scan" / "tiles.geojson").read_text())["features"]
    corners = {tuple(int(v) for v in f["geometry"]["coordinates"][0][0]) for f in tiles}
    assert corners == EXPECTED


def test_summary_says_the_numbers_are_over_the_regions(inside) -> None:
    root, regions, result = inside
    summary = json.loads((root / "maps" / "scan" / "summary.json").read_text())
    scored = rows(root / "maps" / "scan" / "tiles.csv")
    n_idc = sum(float(r["probability"]) >= summary["threshold"] for r in scored.values())
    assert summary["n_tiles"] == len(EXPECTED)
    assert summary["n_idc_tiles"] == n_idc and 0 < n_idc < len(EXPECTED)
    assert summary["idc_fraction"] == pytest.approx(n_idc / len(EXPECTED), abs=1e-6)
    assert summary["tissue_area_mm2"] == pytest.approx(len(EXPECTED) * (TILE * MPP) ** 2 / 1e6)
    assert summary["idc_area_mm2"] == pytest.approx(n_idc * (TILE * MPP) ** 2 / 1e6)
    assert summary["regions"] == {
        "file": str(regions), "count": 2, "area_mm2": pytest.approx(AREA_PX * MPP**2 / 1e6),
        "rule": summary["regions"]["rule"],
        "sha256": hashlib.sha256(regions.read_bytes()).hexdigest()}
    assert "centre" in summary["regions"]["rule"]
    assert "inside 2 drawn region(s)" in result.stdout
    with open(root / "maps" / "summary.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    assert row["regions"] == f"2 region(s) in {regions}"


def test_a_tile_counts_when_the_centre_of_its_part_on_the_slide_is_inside(
        tmp_path: Path) -> None:
    grid = TileGrid(width=2000, height=800, tile=800, stride=800, cols=3, rows=1, level=0,
                    level_downsample=1.0, level_tile=800, patch_size=50)

    def tiles_for(polygon: list[list[float]]) -> list[bool]:
        regions = read_regions_from(tmp_path, {"type": "Polygon", "coordinates": [polygon]})
        return regions.on_slide(grid.width, grid.height, "scan").tiles_inside(grid).tolist()

    assert tiles_for(square(0, 0, 480, 800)) == [True, False, False]  # 60% of the first
    assert tiles_for(square(0, 0, 320, 800)) == [False, False, False]  # 40% of it
    # the last tile is 400 px wide on the slide: its centre is x = 1800, not 2000
    assert tiles_for(square(1700, 0, 1900, 800)) == [False, False, True]


def read_regions_from(folder: Path, data: object, gz: bool = False):
    path = folder / f"regions{len(list(folder.iterdir()))}.geojson"
    raw = json.dumps(data).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return read_regions(path)


def test_qupath_exports_in_every_shape_it_writes_them(tmp_path: Path) -> None:
    features = [feature(A), feature(B)]
    for data, gz in (({"type": "FeatureCollection", "features": features}, False),
                     (features, False),  # "Export as FeatureCollection" unticked
                     ({"type": "FeatureCollection", "features": features}, True),  # gzip
                     ):
        regions = read_regions_from(tmp_path, data, gz=gz)
        assert regions.count == 2
        assert regions.geometry.area == pytest.approx(1300 * 3200 + 300 * 200)  # A + B
    bowtie = read_regions_from(tmp_path, {"type": "Polygon",
                                "coordinates": [[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]})
    assert bowtie.geometry.is_valid and bowtie.geometry.area == pytest.approx(5000)
    # a feature without objectType is an annotation, as QuPath reads it
    plain = read_regions_from(tmp_path, {"type": "Feature", "properties": {},
                               "geometry": {"type": "Polygon",
                                            "coordinates": [square(0, 0, 10, 10)]}})
    assert plain.count == 1


def test_files_without_regions_are_one_line_errors(inside, trained_bundle: Path,
                                                   painted_map: Path, tmp_path: Path) -> None:
    scan = painted_map / "slides" / "scan.tif"
    tiles = painted_map / "maps" / "scan" / "tiles.geojson"  # idcscan's tiles, imported back
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "far.geojson").write_text(json.dumps(
        feature({"type": "Polygon", "coordinates": [square(9000, 9000, 9900, 9900)]})))
    (tmp_path / "notes.geojson").write_text("not json")
    cases = {
        tiles: "holds no polygon annotations",
        tmp_path / "empty.geojson": "holds no polygon annotations",
        tmp_path / "notes.geojson": "is not a GeoJSON file",
        tmp_path / "missing.geojson": "no such file",
        tmp_path / "far.geojson": "lies on",
    }
    for i, (path, message) in enumerate(cases.items()):
        result = CliRunner().invoke(app, ["slide", str(trained_bundle), str(scan), "--out",
                                          str(tmp_path / f"out{i}"), "--regions", str(path)])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], (
            path, result.output)
        assert not (tmp_path / f"out{i}" / "scan" / "summary.json").exists()
    regions = inside[1]
    folder = CliRunner().invoke(app, ["slide", str(trained_bundle), str(scan.parent), "--out",
                                      str(tmp_path / "o"), "--regions", str(regions)])
    assert folder.exit_code == 2 and "one slide" in folder.stderr
    again = CliRunner().invoke(app, ["slide", str(trained_bundle), str(scan), "--out",
                                     str(painted_map / "maps"), "--regions", str(regions)])
    assert again.exit_code == 2 and "over the whole slide" in again.stderr


def test_regions_object_refuses_nothing_on_the_slide(tmp_path: Path) -> None:
    regions = read_regions_from(tmp_path, {"type": "Polygon",
                                           "coordinates": [square(5000, 0, 6000, 10)]})
    with pytest.raises(IdcscanError, match="None of the 1 region"):
        regions.on_slide(4000, 3200, "scan")
    assert np.array_equal(regions.contains(np.array([5500.0]), np.array([5.0])), [True])


def test_a_rerun_skips_only_a_map_of_the_same_regions(inside, trained_bundle: Path,
                                                      tmp_path: Path) -> None:
    """A folder holds the map over the regions it was made with: the same regions (even from a
    moved copy of the file) skip it; no regions, or the file edited since, are refused in one
    line, never skipped with the other map's numbers reported as this run's."""
    root, regions, _ = inside
    out = tmp_path / "maps"
    shutil.copytree(root / "maps", out)
    scan = Path(json.loads((out / "scan" / "summary.json").read_text())["path"])
    before = (out / "scan" / "summary.json").read_text()

    def run(*extra: str):
        return CliRunner().invoke(app, ["slide", str(trained_bundle), str(scan), "--out",
                                        str(out), *extra])

    moved = shutil.copy(regions, tmp_path / "moved.geojson")
    same = run("--regions", str(moved))
    assert same.exit_code == 0 and "Skipped 1 slide(s)" in same.output
    whole = run()  # the whole slide asked for, a map inside regions found
    assert whole.exit_code == 2 and "Skipped" not in whole.output
    (error,) = [line for line in whole.stderr.splitlines() if line.startswith("error:")]
    assert f"inside the regions {regions}" in error and "to map the whole slide" in error
    edited = tmp_path / "annotations.geojson"
    data = json.loads(regions.read_text())
    data["features"] = data["features"][:1]  # the pathologist removed region B
    edited.write_text(json.dumps(data))
    changed = run("--regions", str(edited))
    assert changed.exit_code == 2 and "to map these regions" in changed.stderr
    assert (out / "scan" / "summary.json").read_text() == before  # nothing was mapped
