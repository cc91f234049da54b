"""tiles.geojson: every scored tissue tile as a QuPath tile object, to colour in QuPath.

QuPath's GeoJSON conventions (``qupath.lib.io.QuPathTypeAdapters``, v0.6): a Feature's
``properties.objectType`` makes it a ``tile`` (or ``detection``, ``annotation``);
``classification`` is ``{"name", "color": [r, g, b]}``; ``measurements`` is an object of name ->
number, which *Measure → Show measurement maps* colours. Coordinates are level-0 pixels,
origin top-left, y down, the same as QuPath's own export and idcscan's ``idc.geojson``.

Each tile is classified by the map's area rule: ``IDC`` when its mapped P(IDC) (spatial context
included, tiles.csv ``probability``) reaches the slide's area threshold, the rule that counts
``n_idc_tiles`` and, at the default stride, the IDC area itself. Its two measurements are that
mapped P(IDC) and the tile's P(IDC) alone (tiles.csv ``patch_probability``, what the WSInfer
export gives in QuPath).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from idcscan import DISCLAIMER
from idcscan.maps.slide_map import SlideMap

IDC_COLOR = (230, 25, 75)  # also the IDC regions' colour in idc.geojson
NON_IDC_COLOR = (96, 140, 190)
IDC_CLASS = "IDC"
NON_IDC_CLASS = "non-IDC"
#: measurement names, as QuPath lists them
MAPPED = "P(IDC) mapped"
ALONE = "P(IDC) tile alone"


def _classification(name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    return {"name": name, "color": list(color)}


def tiles_geojson(slide: SlideMap) -> dict[str, Any]:
    """The FeatureCollection of tile objects (level-0 pixels, clipped to the slide)."""
    xs, ys = slide.tile_origins()
    t, w, h = slide.grid.tile, slide.grid.width, slide.grid.height
    alone = slide.patch_probabilities
    if len(alone) != len(slide.probabilities):
        alone = slide.probabilities
    rule = slide.threshold_rule or "the map's area rule"
    idc = _classification(IDC_CLASS, IDC_COLOR)
    non_idc = _classification(NON_IDC_CLASS, NON_IDC_COLOR)
    features = []
    for x0, y0, p, q in zip(xs.tolist(), ys.tolist(), slide.probabilities.tolist(),
                            np.asarray(alone).tolist()):
        x1, y1 = min(x0 + t, w), min(y0 + t, h)
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon",
                         "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {
                "objectType": "tile",
                "classification": idc if p >= slide.threshold else non_idc,
                "isLocked": True,
                "measurements": {MAPPED: round(p, 6), ALONE: round(q, 6)},
            },
        })
    return feature_collection(slide, features, {
        "tile_size": t,
        "threshold": slide.threshold,
        "classification": f"{IDC_CLASS} when '{MAPPED}' >= threshold ({rule}), else "
                          f"{NON_IDC_CLASS}",
        "measurements": {
            MAPPED: "P(IDC) as mapped: read with the neighbouring tiles (spatial context, "
                    f"sigma {slide.context:g} patch); tiles.csv 'probability'",
            ALONE: "P(IDC) of the tile's own pixels; tiles.csv 'patch_probability'",
        },
    })


def feature_collection(slide: SlideMap, features: list[dict[str, Any]],
                       about: dict[str, Any]) -> dict[str, Any]:
    """A slide's GeoJSON: its features, and properties saying whose slide, in which
    coordinates and scale (then ``about``), with the disclaimer."""
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "slide": slide.name,
            "coordinates": "level-0 pixels, origin top-left, y down",
            "mpp": slide.mpp,
            **about,
            "disclaimer": DISCLAIMER,
        },
    }
