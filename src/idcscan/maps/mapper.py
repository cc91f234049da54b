"""Slide mode: map IDC over a whole slide or large image, at the training scale, in bounded memory.

``map_slide`` does the work in memory (thumbnail -> tissue mask -> tile grid -> streamed,
prefetched batches through ``Predictor.predict_proba`` -> per-cell probabilities);
``slide_run`` writes what it finds to disk, one slide or many. ``POST /slide`` is a thin
layer over ``map_slide``, ``idcscan slide`` over ``slide_run``.

Timings: ``read`` is the time the prefetch thread spent reading and resizing tiles, which
overlaps ``infer`` (ONNX Runtime); ``total`` is the wall time, so read + infer can exceed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idcscan import DISCLAIMER
from idcscan.errors import IdcscanError
from idcscan.preprocessing import TRAINING_MPP
from idcscan.maps.caveats import map_caveats
from idcscan.maps.context import check_context, sigma_in_cells, smooth_probabilities
from idcscan.maps.regions import Regions
from idcscan.runtime.labels import CONTEXT_SIGMA, area_threshold
from idcscan.runtime.predictor import Predictor
from idcscan.slides.qc import KIND_CODES, KINDS, QCParams, blurry, paint_tiles, screen_tiles
from idcscan.slides.reader import SlideReader, resize
from idcscan.slides.stain import slide_stain_group
from idcscan.slides.tiling import Prefetcher, TileGrid, iter_batches, plan_grid
from idcscan.slides.tissue import TissueParams, tissue_mask

SUMMARY_JSON = "summary.json"
#: Thumbnail: about this many pixels per tile for the tissue mask, within these bounds.
THUMB_PX_PER_TILE = 16
THUMB_MIN_SIDE = 1024
THUMB_MAX_SIDE = 2048

ProgressFn = Callable[[int, int], None]


class ScaleWarning(UserWarning):
    """A caveat about the slide's scale. Front ends still collect these, but every scale
    caveat now lives in the summary's ``warnings`` (``maps.caveats``), where it is kept."""


@dataclass(frozen=True)
class SlideOptions:
    """How a slide is mapped; the defaults reproduce the documented recipe."""

    #: µm/px of level 0 for images whose file carries no scale (None: the training scale)
    mpp: float | None = None
    #: distance between tiles in training-scale pixels (None: the patch size, no overlap)
    stride: int | None = None
    tta: bool = False
    batch_size: int = 64
    #: P(IDC) at which a tile counts as IDC (None: IDC more likely than not at the training
    #: IDC share, ``labels.area_threshold``; not the 50% patch call nor the review threshold)
    threshold: float | None = None
    #: spatial context: Gaussian sigma in patches over neighbouring tiles' log-odds (0: off)
    context: float = CONTEXT_SIGMA
    tissue: TissueParams = field(default_factory=TissueParams)
    prefetch: int = 2
    #: artefact QC (pen, blur, fold, bubble) before scoring; see ``idcscan.slides.qc``
    qc: QCParams = field(default_factory=QCParams)
    #: refuse a grid of more tiles than this (a server's bound on one job; None: no bound)
    max_tiles: int | None = None
    #: score only the tissue inside these regions (``idcscan.maps.regions``; None: all of it)
    regions: Regions | None = None


@dataclass
class SlideSummary:
    """What ``summary.json`` holds (and one row of ``summary.csv``)."""

    slide: str
    path: str
    width: int
    height: int
    mpp: float
    mpp_source: str  # "metadata" or "option" (--mpp); "assumed" only in older folders
    level: int
    level_downsample: float
    tile_size: int  # level-0 pixels
    stride: int  # level-0 pixels
    n_tiles: int  # tissue tiles classified
    n_idc_tiles: int
    tissue_area_mm2: float
    idc_area_mm2: float
    idc_fraction: float  # IDC tiles / tissue tiles, 0..1
    n_regions: int  # IDC polygons in idc.geojson
    threshold: float
    tta: bool
    reader: str
    timings: dict[str, float]
    model: dict[str, str]
    tissue: dict[str, Any]
    demo: bool = False  # made by a demo bundle trained on synthetic data: means nothing
    #: tissue left out by artefact QC (pen, blur, fold, bubble), in mm², and in tiles by kind
    qc_excluded_mm2: float = 0.0
    qc_tiles: dict[str, int] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    #: why ``threshold`` has its value (the area call; see ``idcscan.maps.context``)
    threshold_rule: str = ""
    #: spatial context sigma, in patches (0: each tile alone, as in summaries written before slide mode had context)
    context: float = 0.0
    #: the slide's own stains, for a bundle that normalises per group ({} otherwise)
    stain: dict[str, Any] = field(default_factory=dict)
    #: the regions the map was restricted to (``Regions.describe``; {} for the whole slide)
    regions: dict[str, Any] = field(default_factory=dict)
    #: what a reader must know before trusting the numbers (``maps.caveats``); [] if nothing
    warnings: list[str] = field(default_factory=list)
    #: which file this is the map of (``maps.identity``): a re-run skips only the same content
    fingerprint: str = ""
    #: views averaged per tile (1: none; in the model's graph or at run time, ``tta_views``)
    tta_views: int = 1
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    #: columns of summary.csv (scalars only)
    CSV_COLUMNS = (
        "slide", "path", "width", "height", "mpp", "mpp_source", "level", "tile_size",
        "stride", "n_tiles", "n_idc_tiles", "tissue_area_mm2", "idc_area_mm2",
        "idc_fraction", "n_regions", "threshold", "context", "tta", "time_total_s", "model",
        "model_sha256", "demo", "qc_excluded_mm2", "regions", "warnings",
    )  # fmt: skip

    def csv_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.to_dict().items() if k in self.CSV_COLUMNS}
        row["time_total_s"] = self.timings.get("total")
        row["model"] = f"{self.model.get('name')} {self.model.get('version')}"
        row["model_sha256"] = self.model.get("sha256")
        row["regions"] = (f"{self.regions['count']} region(s) in {self.regions['file']}"
                          if self.regions else "")
        row["warnings"] = " | ".join(self.warnings)
        return row


@dataclass
class SlideMap:
    """A mapped slide, in memory: everything the outputs are drawn from."""

    name: str
    path: str
    reader: dict[str, Any]
    mpp: float
    mpp_source: str
    grid: TileGrid
    tile_index: np.ndarray  # classified (tissue) tiles, row-major grid indices
    probabilities: np.ndarray  # P(IDC) per classified tile, with spatial context
    cells: np.ndarray  # (cell_rows, cell_cols) mean P(IDC), NaN where not classified
    thumbnail: np.ndarray  # RGB uint8
    tissue: np.ndarray  # bool tissue mask (its own size: ~16 px per tile or the thumbnail's)
    tissue_threshold: float
    threshold: float
    tta: bool
    model: dict[str, str]
    tissue_params: TissueParams
    #: P(IDC) of each classified tile from its own pixels alone (what /predict would give)
    patch_probabilities: np.ndarray = field(default_factory=lambda: np.empty(0))
    threshold_rule: str = ""
    context: float = 0.0
    stain: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    demo: bool = False
    #: artefact QC: labels over the tissue mask's pixels (``qc.KIND_CODES``; blurred tiles
    #: painted in), and the tissue tiles it left out with the code of each one's artefact
    qc_labels: np.ndarray | None = None
    qc_tile_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    qc_tile_kind: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint8))
    qc_params: QCParams = field(default_factory=QCParams)
    #: the regions scored (on the slide), None for the whole slide
    regions: Regions | None = None
    fingerprint: str = ""
    tta_views: int = 1
    #: the scale the model was trained at (µm/px), for the caveats
    training_mpp: float = TRAINING_MPP

    def qc_origins(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = np.divmod(self.qc_tile_index, self.grid.cols)
        return cols * self.grid.stride, rows * self.grid.stride

    @property
    def thumb_downsample(self) -> tuple[float, float]:
        """Level-0 pixels per thumbnail pixel along x and y."""
        h, w = self.thumbnail.shape[:2]
        return self.grid.width / w, self.grid.height / h

    def tile_origins(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = np.divmod(self.tile_index, self.grid.cols)
        return cols * self.grid.stride, rows * self.grid.stride

    @property
    def idc_cells(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.cells, nan=-1.0) >= self.threshold

    def summary(self, n_regions: int) -> SlideSummary:
        cell_mm2 = self.grid.cell_areas() * (self.mpp * self.mpp) / 1e6
        classified = ~np.isnan(self.cells)
        n_tiles = int(len(self.probabilities))
        n_idc = int(np.count_nonzero(self.probabilities >= self.threshold))
        qc_tiles = {kind: int(np.count_nonzero(self.qc_tile_kind == KIND_CODES[kind]))
                    for kind in KINDS}
        return SlideSummary(
            slide=self.name,
            path=self.path,
            width=self.grid.width,
            height=self.grid.height,
            mpp=self.mpp,
            mpp_source=self.mpp_source,
            level=self.grid.level,
            level_downsample=round(self.grid.level_downsample, 6),
            tile_size=self.grid.tile,
            stride=self.grid.stride,
            n_tiles=n_tiles,
            n_idc_tiles=n_idc,
            tissue_area_mm2=round(float(cell_mm2[classified].sum()), 6),
            idc_area_mm2=round(float(cell_mm2[self.idc_cells].sum()), 6),
            idc_fraction=round(n_idc / n_tiles, 6) if n_tiles else 0.0,
            n_regions=n_regions,
            threshold=self.threshold,
            tta=self.tta,
            threshold_rule=self.threshold_rule,
            context=self.context,
            stain=self.stain,
            reader=str(self.reader.get("backend", "")),
            timings={k: round(v, 4) for k, v in self.timings.items()},
            model=self.model,
            tissue={**self.tissue_params.to_dict(), "saturation_threshold": self.tissue_threshold},
            demo=self.demo,
            qc_excluded_mm2=round(
                len(self.qc_tile_index) * (self.grid.stride * self.mpp) ** 2 / 1e6, 6
            ),
            qc_tiles=qc_tiles,
            qc=self.qc_params.to_dict(),
            regions=self.regions.describe(self.mpp) if self.regions is not None else {},
            warnings=map_caveats(n_tiles, qc_tiles, self.mpp, self.mpp_source,
                                 self.training_mpp),
            fingerprint=self.fingerprint,
            tta_views=self.tta_views,
        )


class NoScale(IdcscanError):
    """A file that records no scale, mapped without one being given: refused, never guessed.

    The message names the command line's ``--mpp``; the server words its own (``name``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"{name} records no scale (µm per pixel): give the scale of its full resolution "
            f"with --mpp (about 0.25 for a 40x scan, 0.5 for 20x, {TRAINING_MPP:g} for an image "
            "already at the training scale). A guessed scale would give a wrong map."
        )


def resolve_mpp(reader: SlideReader, given: float | None) -> tuple[float, str]:
    """The slide's level-0 µm/px: its metadata, else the one given (``--mpp``, the scale
    field). One rule for every front end: a file without a scale is never mapped at a guess."""
    if reader.mpp is not None:
        return float(reader.mpp), "metadata"
    if given is not None:
        if given <= 0:
            raise IdcscanError(f"--mpp must be positive, got {given}.")
        return float(given), "option"
    raise NoScale(reader.name)


def thumbnail_downsample(width: int, height: int, tile: int) -> float:
    """Level-0 pixels per thumbnail pixel: ~16 px per tile, longest side 1024-2048 px."""
    side = max(width, height)
    ds = min(tile / THUMB_PX_PER_TILE, side / THUMB_MIN_SIDE)
    return max(ds, side / THUMB_MAX_SIDE, 1.0)


class TooManyTiles(IdcscanError):
    """A map whose grid has more tiles than the caller allows (a server answers 422)."""

    def __init__(self, name: str, mpp: float, cols: int, rows: int, limit: int) -> None:
        super().__init__(
            f"{name} at {mpp:g} µm/px is a grid of {cols} x {rows} = {cols * rows:,} tiles; "
            f"this server maps at most {limit:,} in one job (check the scale, or map it "
            "with `idcscan slide`)."
        )


def map_slide(
    predictor: Predictor,
    reader: SlideReader,
    options: SlideOptions = SlideOptions(),
    name: str | None = None,
    on_progress: ProgressFn | None = None,
) -> SlideMap:
    """Classify every tissue tile of an open slide; nothing is written."""
    t_start = time.perf_counter()
    card = predictor.card
    if options.stride is not None and not 1 <= options.stride <= card.patch_size:
        raise IdcscanError(
            f"--stride must be between 1 and the patch size ({card.patch_size}), got "
            f"{options.stride}."
        )
    if options.batch_size < 1:
        raise IdcscanError(f"--batch-size must be at least 1, got {options.batch_size}.")
    if options.threshold is None:
        threshold, threshold_rule = area_threshold(card)
    else:
        threshold, threshold_rule = float(options.threshold), "--threshold"
    if not 0.0 <= threshold <= 1.0:
        raise IdcscanError(f"--threshold must be between 0 and 1, got {threshold}.")
    check_context(options.context)

    # a scale coarser than training is said in the summary's warnings (maps.caveats)
    mpp, mpp_source = resolve_mpp(reader, options.mpp)
    grid = plan_grid(reader, mpp, card.mpp, card.patch_size, options.stride)
    if options.max_tiles is not None and grid.n_tiles > options.max_tiles:
        raise TooManyTiles(reader.name, mpp, grid.cols, grid.rows, options.max_tiles)

    t0 = time.perf_counter()
    thumb_ds = thumbnail_downsample(grid.width, grid.height, grid.tile)
    # a coarser pyramid level may be enlarged up to 2x, keeping >= 16 px per tile for the mask
    source_ds = max(thumb_ds, min(grid.tile / THUMB_PX_PER_TILE, 2 * thumb_ds))
    thumbnail = reader.thumbnail(thumb_ds, source_downsample=source_ds)
    # the mask needs ~16 px per tile, no more: finer only slows the morphology down
    mask_ds = max(thumb_ds, grid.tile / THUMB_PX_PER_TILE)
    mask_source = resize(
        thumbnail, max(1, round(grid.width / mask_ds)), max(1, round(grid.height / mask_ds))
    )
    scale_x = grid.width / mask_source.shape[1]
    mask, sat_threshold = tissue_mask(mask_source, mpp * scale_x, options.tissue)
    xs, ys = grid.origins()
    # artefact QC on the same pixels: tissue tiles that are not tissue enough once ink,
    # folds and bubbles are taken away are left out, with the kind that covers most of them
    tile_index, left_out, kinds, labels = screen_tiles(
        mask_source, mask, xs, ys, grid.tile, scale_x, mpp, options.tissue.min_tissue_fraction,
        options.qc,
    )  # fmt: skip
    regions = None
    if options.regions is not None:  # tiles (and QC'd tiles) whose centres lie inside
        regions = options.regions.on_slide(grid.width, grid.height, reader.name)
        inside = regions.tiles_inside(grid)
        tile_index = tile_index[inside[tile_index]]
        left_out, kinds = left_out[inside[left_out]], kinds[inside[left_out]]
    qc_index, qc_kind = [left_out], [kinds]
    t_tissue = time.perf_counter() - t0

    probabilities = np.empty(len(tile_index), dtype=np.float64)
    sharp = np.ones(len(tile_index), dtype=bool)
    done = 0
    t_infer = 0.0
    if on_progress:
        on_progress(0, len(tile_index))
    t0 = time.perf_counter()
    group, stain = slide_stain_group(predictor, reader, grid, tile_index, options.batch_size)
    t_stain = time.perf_counter() - t0
    prefetch = Prefetcher(
        iter_batches(reader, grid, tile_index, options.batch_size), depth=options.prefetch
    )
    for batch in prefetch:
        t0 = time.perf_counter()
        probs = predictor.predict_proba(batch.patches, tta=options.tta, group=group)
        t_infer += time.perf_counter() - t0
        probabilities[done : done + len(probs)] = probs
        sharp[done : done + len(probs)] = ~blurry(batch.patches, options.qc)
        done += len(probs)
        if on_progress:
            on_progress(done, len(tile_index))
    if done != len(tile_index):  # the reader thread stopped early without an error
        raise IdcscanError(
            f"Reading {reader.name} stopped after {done} of {len(tile_index)} tiles."
        )

    qc_index.append(tile_index[~sharp])
    qc_kind.append(np.full(int(np.count_nonzero(~sharp)), KIND_CODES["blur"], dtype=np.uint8))
    tile_index, probabilities = tile_index[sharp], probabilities[sharp]
    order = np.argsort(np.concatenate(qc_index), kind="stable")
    qc_tiles = np.concatenate(qc_index)[order]
    qc_kinds = np.concatenate(qc_kind)[order]
    blur = KIND_CODES["blur"]
    paint_tiles(labels, mask, qc_tiles[qc_kinds == blur], grid.cols, grid.stride, grid.tile,
                scale_x, blur)  # fmt: skip

    rows, cols = np.divmod(tile_index, grid.cols)
    sigma = sigma_in_cells(options.context, grid.tile, grid.stride)
    patch_probabilities = probabilities
    probabilities = smooth_probabilities(rows, cols, patch_probabilities, sigma)
    cells = grid.cell_means(tile_index, probabilities)
    if regions is not None:  # a cell belongs where its centre lies, like a tile
        cells[~regions.cells_inside(grid)] = np.nan
    return SlideMap(
        name=name or Path(reader.name).stem,
        path=reader.name,
        reader=reader.describe(),
        mpp=mpp,
        mpp_source=mpp_source,
        grid=grid,
        tile_index=tile_index,
        probabilities=probabilities,
        cells=cells,
        thumbnail=thumbnail,
        tissue=mask,
        tissue_threshold=sat_threshold,
        threshold=threshold,
        threshold_rule=threshold_rule,
        context=float(options.context),
        stain=stain,
        patch_probabilities=patch_probabilities,
        tta=predictor.tta_views(options.tta) > 1,
        tta_views=predictor.tta_views(options.tta),
        training_mpp=card.mpp,
        model={
            "name": card.name,
            "version": card.version,
            "sha256": card.onnx_sha256,
            "engine": predictor.engine.info.label,
        },
        tissue_params=options.tissue,
        qc_labels=labels,
        qc_tile_index=qc_tiles,
        qc_tile_kind=qc_kinds,
        qc_params=options.qc,
        regions=regions,
        timings={
            "read": prefetch.read_seconds,
            "tissue": t_tissue,
            "stain": t_stain,
            "infer": t_infer,
            "map": time.perf_counter() - t_start,
        },
        demo=card.demo,
    )
