"""tiles.geojson: every scored tile as a QuPath tile object, the way QuPath reads GeoJSON
(``QuPathTypeAdapters``: ``objectType``, ``classification`` with a colour, ``measurements`` as a
name -> number object), on the painted scan mapped by the model that knows its two tissues."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from shapely.geometry import Polygon, box, shape

from idcscan import DISCLAIMER


@pytest.fixture(scope="module")
def folder(painted_map: Path) -> Path:
    return painted_map / "maps" / "scan"


def test_every_scored_tile_is_a_valid_qupath_tile_in_level0_pixels(folder: Path) -> None:
    collection = json.loads((folder / "tiles.geojson").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "tiles.csv", newline="") as fh:
        rows = {(int(r["x"]), int(r["y"])): r for r in csv.DictReader(fh)}
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == summary["n_tiles"] == len(rows) > 0
    slide = box(0, 0, summary["width"], summary["height"])
    t = summary["tile_size"]
    for feature in collection["features"]:
        geometry = shape(feature["geometry"])
        assert isinstance(geometry, Polygon) and geometry.is_valid
        assert slide.contains(geometry) and geometry.area > 0
        x0, y0, x1, y1 = geometry.bounds
        assert (x1 - x0, y1 - y0) == (min(t, summary["width"] - x0),
                                      min(t, summary["height"] - y0))
        props = feature["properties"]
        assert props["objectType"] == "tile"
        row = rows[(int(x0), int(y0))]  # the tile tiles.csv lists at this corner
        assert props["measurements"] == {"P(IDC) mapped": float(row["probability"]),
                                         "P(IDC) tile alone": float(row["patch_probability"])}
        cls = props["classification"]
        assert set(cls) == {"name", "color"}  # QuPath refuses a classification without colour
        assert len(cls["color"]) == 3 and all(0 <= c <= 255 for c in cls["color"])
    assert collection["properties"]["disclaimer"] == DISCLAIMER


def test_tiles_are_classified_by_the_maps_area_rule(folder: Path) -> None:
    collection = json.loads((folder / "tiles.geojson").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    names = [f["properties"]["classification"]["name"] for f in collection["features"]]
    mapped = [f["properties"]["measurements"]["P(IDC) mapped"] for f in collection["features"]]
    assert names == ["IDC" if p >= summary["threshold"] else "non-IDC" for p in mapped]
    assert names.count("IDC") == summary["n_idc_tiles"]
    # at the default stride a tile is a cell: the IDC tiles' area is the map's IDC area
    idc_area = sum(shape(f["geometry"]).area for f, n in zip(collection["features"], names)
                   if n == "IDC") * summary["mpp"] ** 2 / 1e6
    assert idc_area == pytest.approx(summary["idc_area_mm2"], abs=1e-6)
    assert 0 < names.count("IDC") < len(names)
    colours = {f["properties"]["classification"]["name"]:
               tuple(f["properties"]["classification"]["color"]) for f in collection["features"]}
    assert colours["IDC"] != colours["non-IDC"]
    idc_geojson = json.loads((folder / "idc.geojson").read_text())
    assert list(colours["IDC"]) == idc_geojson["features"][0]["properties"]["classification"][
        "color"]  # one colour for IDC whichever file QuPath imports
