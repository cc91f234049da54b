"""A mapped slide's files, in formats other tools open.

``tiles.csv``      x, y (tile top-left, level-0 px), probability: tissue tiles only
``idc.geojson``    IDC regions as a FeatureCollection of Polygons in level-0 px, with the
                   ``objectType``/``classification`` properties QuPath imports as annotations
``tiles.geojson``  every scored tile as a QuPath tile object, classified IDC / non-IDC by the
                   area rule, with P(IDC) mapped and alone as measurements (``maps.qupath``)
``heatmap.png``    P(IDC) over the thumbnail, colour bar, IDC outlines, the disclaimer
``tissue.png``     the thumbnail with what was not treated as tissue dimmed in blue
``qc_mask.png``    artefact QC labels over the tissue mask's pixels (palette PNG: value 0
                   clean, 1 pen, 2 blur, 3 fold, 4 bubble; coloured, 0 transparent)
``qc_tiles.csv``   x, y, kind: tissue tiles artefact QC left out (not in tiles.csv)
``summary.json``   see ``SlideSummary``
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from idcscan import DISCLAIMER
from idcscan.maps.colour import ALPHA_FROM, OUTLINE_COLOR, blend, idc_rgba
from idcscan.maps.polygons import GridPolygon, mask_polygons
from idcscan.maps.qupath import IDC_COLOR, feature_collection, tiles_geojson
from idcscan.slides.qc import KINDS, qc_layer
from idcscan.maps.slide_map import SUMMARY_JSON, SlideMap, SlideSummary

#: opacity of the P(IDC) colours over the thumbnail where P(IDC) is high (colour.opacity)
OVERLAY_ALPHA = 0.75


def cell_image(slide: SlideMap, size: tuple[int, int] | None = None) -> np.ndarray:
    """Per-cell P(IDC) resampled (nearest) to ``size`` = (w, h) (default: the thumbnail)."""
    w, h = size or (slide.thumbnail.shape[1], slide.thumbnail.shape[0])
    grid = slide.grid
    xs = ((np.arange(w) + 0.5) * grid.width / w / grid.stride).astype(np.int64)
    ys = ((np.arange(h) + 0.5) * grid.height / h / grid.stride).astype(np.int64)
    xs = np.minimum(xs, grid.cell_cols - 1)
    ys = np.minimum(ys, grid.cell_rows - 1)
    return slide.cells[np.ix_(ys, xs)]


def overlay(
    slide: SlideMap, alpha: float = OVERLAY_ALPHA, size: tuple[int, int] | None = None
) -> Image.Image:
    """The thumbnail (or ``size``) with P(IDC) colour-mapped over the classified cells."""
    base = Image.fromarray(slide.thumbnail, mode="RGB")
    if size is not None and size != base.size:
        base = base.resize(size, Image.Resampling.BILINEAR)
    probs = cell_image(slide, base.size)
    return Image.fromarray(blend(np.asarray(base), probs, alpha), mode="RGB")


def heatmap_layer(slide: SlideMap, alpha: int = 255) -> Image.Image:
    """P(IDC) colours over the classified cells, transparent elsewhere (RGBA, thumbnail size).

    Made to be laid over the thumbnail by a viewer that sets its own opacity (the web page);
    low P(IDC) stays transparent as in every map (``idcscan.maps.colour``).
    """
    rgba = idc_rgba(cell_image(slide), max_alpha=alpha)
    return Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA")


def tissue_image(slide: SlideMap) -> Image.Image:
    """Thumbnail with non-tissue dimmed in blue and classified tiles outlined."""
    out = slide.thumbnail.astype(np.float32).copy()
    h, w = out.shape[:2]
    mask = Image.fromarray(slide.tissue.astype(np.uint8) * 255, mode="L")
    background = np.asarray(mask.resize((w, h), Image.Resampling.NEAREST)) == 0
    out[background] = out[background] * 0.35 + np.array([40, 60, 200], np.float32) * 0.65
    classified = ~np.isnan(cell_image(slide))
    edge = classified & ~ndimage.binary_erosion(classified, border_value=0)
    out[edge] = (0, 160, 0)
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def _vertices(ring: list[tuple[int, int]], slide: SlideMap) -> list[list[int]]:
    s, w, h = slide.grid.stride, slide.grid.width, slide.grid.height
    return [[min(c * s, w), min(r * s, h)] for c, r in ring]


def idc_polygons(slide: SlideMap) -> list[GridPolygon]:
    return mask_polygons(slide.idc_cells)


def geojson(slide: SlideMap, polygons: list[GridPolygon] | None = None) -> dict[str, Any]:
    """IDC regions as a GeoJSON FeatureCollection in level-0 pixel coordinates (y down)."""
    polygons = idc_polygons(slide) if polygons is None else polygons
    mask = slide.idc_cells
    labels, n = ndimage.label(mask)
    cells = np.nan_to_num(slide.cells, nan=0.0)
    index = np.arange(1, n + 1)
    mean_p = ndimage.mean(cells, labels, index) if n else []
    max_p = ndimage.maximum(cells, labels, index) if n else []
    area_mm2 = (
        ndimage.sum(slide.grid.cell_areas() * slide.mpp**2 / 1e6, labels, index) if n else []
    )
    features = []
    for i, poly in enumerate(polygons, start=1):
        k = poly.component - 1
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_vertices(poly.exterior, slide)]
                    + [_vertices(hole, slide) for hole in poly.holes],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": f"IDC region {i}",
                    "classification": {"name": "IDC", "color": list(IDC_COLOR)},
                    "isLocked": False,
                    "measurements": {
                        "area_mm2": round(float(area_mm2[k]), 6),
                        "mean_probability": round(float(mean_p[k]), 6),
                        "max_probability": round(float(max_p[k]), 6),
                    },
                },
            }
        )
    return feature_collection(slide, features, {"threshold": slide.threshold})


def heatmap_figure_png(slide: SlideMap, polygons: list[GridPolygon], fraction: float) -> bytes:
    """heatmap.png: overlay, colour bar, IDC outlines, title and disclaimer (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    image = _veil_outside_regions(overlay(slide), slide)
    w, h = image.size
    fig_w = 9.0
    fig_h = max(3.0, fig_w * 0.82 * h / w + 1.3)
    fig = Figure(figsize=(fig_w, fig_h), dpi=max(100, min(220, int(w / (fig_w * 0.8)))))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.1, 0.78, 0.8))  # room for the bar's "IDC area" mark
    ax.imshow(np.asarray(image), interpolation="nearest")
    sx, sy = slide.thumb_downsample
    for poly in polygons:
        for ring in [poly.exterior, *poly.holes]:
            pts = np.asarray(_vertices(ring, slide), dtype=np.float64)
            ax.plot(pts[:, 0] / sx - 0.5, pts[:, 1] / sy - 0.5, color=OUTLINE_COLOR,
                    linewidth=0.9)
    if slide.regions is not None:  # what was scored, drawn the way QuPath draws annotations
        for polygon in _parts(slide.regions.geometry):
            for ring in [polygon.exterior, *polygon.interiors]:
                pts = np.asarray(ring.coords, dtype=np.float64)
                ax.plot(pts[:, 0] / sx - 0.5, pts[:, 1] / sy - 0.5, color="white",
                        linewidth=1.4, linestyle=(0, (4, 2)))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    demo = "DEMO MODEL, trained on synthetic data: means nothing.\n" if slide.demo else ""
    where = ("" if slide.regions is None else
             f" inside {slide.regions.count} drawn region(s) (white dashes)")
    title = (f"{slide.name}: IDC in {fraction:.1%} of {len(slide.probabilities)} tissue tiles"
             f"{where} (P(IDC) >= {slide.threshold:.2%}, outlined)")
    ax.set_title(
        demo + "\n".join(textwrap.wrap(title, 90)),
        fontsize=10,
        color="#a3172c" if slide.demo else "black",
    )
    cax = fig.add_axes((0.87, 0.15, 0.025, 0.7))
    # the bar as the map draws it: clear at low P(IDC), over white like the page
    ramp = ListedColormap(idc_rgba(np.linspace(0.0, 1.0, 256), max_alpha=255) / 255.0)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), ramp), cax=cax)
    bar.set_label(f"P(IDC), uncoloured below {ALPHA_FROM:.0%}")
    bar.ax.axhline(slide.threshold, color=OUTLINE_COLOR, linewidth=2)
    bar.ax.text(-0.4, slide.threshold, "IDC area", ha="right", va="center", fontsize=7,
                color="black", transform=bar.ax.get_yaxis_transform())
    footer = "\n".join(textwrap.wrap(DISCLAIMER, 110))
    fig.text(0.5, 0.02, footer, ha="center", va="bottom", fontsize=7, color="#7a4b00")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", pil_kwargs={"compress_level": 3})
    return buf.getvalue()


def _parts(geometry: Any) -> list[Any]:
    return list(getattr(geometry, "geoms", [geometry]))


def _veil_outside_regions(image: Image.Image, slide: SlideMap) -> Image.Image:
    """Grey out what lies outside ``--regions``: not scored, which uncoloured tissue inside
    (low P(IDC)) must not be taken for."""
    if slide.regions is None:
        return image
    from PIL import ImageDraw

    sx, sy = slide.thumb_downsample
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for polygon in _parts(slide.regions.geometry):
        for ring, fill in [(polygon.exterior, 255), *((r, 0) for r in polygon.interiors)]:
            draw.polygon([(x / sx, y / sy) for x, y in ring.coords], fill=fill)
    grey = Image.blend(image, Image.new("RGB", image.size, (128, 128, 128)), 0.55)
    return Image.composite(image, grey, mask)


def write_tiles_csv(slide: SlideMap, path: Path) -> None:
    xs, ys = slide.tile_origins()
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "probability", "patch_probability"])
        alone = slide.patch_probabilities
        if len(alone) != len(slide.probabilities):
            alone = slide.probabilities
        for x, y, p, q in zip(xs.tolist(), ys.tolist(), slide.probabilities.tolist(),
                              alone.tolist()):
            writer.writerow([x, y, f"{p:.6f}", f"{q:.6f}"])


def write_qc(slide: SlideMap, directory: Path) -> None:
    """qc_mask.png and qc_tiles.csv: what artefact QC left out, and why."""
    labels = slide.qc_labels
    if labels is None:
        labels = np.zeros(slide.tissue.shape, dtype=np.uint8)
    qc_layer(labels).save(directory / "qc_mask.png", optimize=True)
    xs, ys = slide.qc_origins()
    with open(directory / "qc_tiles.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "kind"])
        for x, y, k in zip(xs.tolist(), ys.tolist(), slide.qc_tile_kind.tolist()):
            writer.writerow([x, y, KINDS[k - 1]])


def write_outputs(
    slide: SlideMap, directory: Path, timings_start: tuple[float, float] | None = None
) -> SlideSummary:
    """Write all files of one slide into ``directory`` (a fresh folder) and its summary."""
    t_write = time.perf_counter()
    polygons = idc_polygons(slide)
    n_tiles = len(slide.probabilities)
    n_idc = int(np.count_nonzero(slide.probabilities >= slide.threshold))
    write_tiles_csv(slide, directory / "tiles.csv")
    (directory / "idc.geojson").write_text(json.dumps(geojson(slide, polygons)) + "\n")
    (directory / "tiles.geojson").write_text(
        json.dumps(tiles_geojson(slide), separators=(",", ":")) + "\n")
    (directory / "heatmap.png").write_bytes(
        heatmap_figure_png(slide, polygons, n_idc / n_tiles if n_tiles else 0.0)
    )
    tissue_image(slide).save(directory / "tissue.png", compress_level=3)
    write_qc(slide, directory)
    now = time.perf_counter()
    start, write_start = timings_start or (t_write - slide.timings.get("map", 0.0), t_write)
    slide.timings["write"] = now - write_start
    slide.timings["total"] = now - start
    slide.timings.pop("map", None)
    summary = slide.summary(n_regions=len(polygons))
    (directory / SUMMARY_JSON).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary
