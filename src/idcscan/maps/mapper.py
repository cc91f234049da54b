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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idcscan.errors import IdcscanError
from idcscan.preprocessing import TRAINING_MPP
from idcscan.maps.context import (
    check_context,
    sigma_in_cells,
    smooth_probabilities,
    within_reach,
)
from idcscan.maps.identity import map_settings
from idcscan.maps.regions import Regions
from idcscan.maps.slide_map import SlideMap
from idcscan.runtime.labels import CONTEXT_SIGMA, area_threshold
from idcscan.runtime.bundle import ModelCard
from idcscan.runtime.predictor import Predictor
from idcscan.slides.qc import KIND_CODES, QCParams, blurry, paint_tiles, screen_tiles
from idcscan.slides.reader import SlideReader, resize
from idcscan.slides.stain import slide_stain_group
from idcscan.slides.tiling import Prefetcher, iter_batches, plan_grid
from idcscan.slides.tissue import TissueParams, tissue_mask

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

    @property
    def regions_key(self) -> str:
        """What a finished folder must have been restricted to for a re-run to skip it
        (``maps.identity.regions_key``): "" for the whole slide."""
        return (self.regions.sha256 or "?") if self.regions is not None else ""

    def area_call(self, card: ModelCard) -> tuple[float, str]:
        """The P(IDC) from which a tile counts towards the IDC area with ``card``'s model,
        and where it comes from."""
        if self.threshold is None:
            return area_threshold(card)
        return float(self.threshold), "--threshold"

    def settings(self, card: ModelCard) -> dict[str, Any]:
        """What a finished folder must have been mapped with for a re-run to skip it
        (``maps.identity.map_settings``): the model, the context and the area call in force,
        the bundle's default included."""
        return map_settings(card.onnx_sha256, self.context, self.area_call(card)[0])


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
    threshold, threshold_rule = options.area_call(card)
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
    sigma = sigma_in_cells(options.context, grid.tile, grid.stride)
    regions, inside = None, None
    if options.regions is not None:  # tiles (and QC'd tiles) whose centres lie inside,
        # scored with the ring of tissue around them that their mapped P(IDC) reads
        regions = options.regions.on_slide(grid.width, grid.height, reader.name)
        inside = regions.tiles_inside(grid)
        tile_index = tile_index[within_reach(inside, grid.rows, grid.cols, sigma)[tile_index]]
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

    blurred = ~sharp if inside is None else ~sharp & inside[tile_index]
    qc_index.append(tile_index[blurred])
    qc_kind.append(np.full(int(np.count_nonzero(blurred)), KIND_CODES["blur"], dtype=np.uint8))
    tile_index, probabilities = tile_index[sharp], probabilities[sharp]
    order = np.argsort(np.concatenate(qc_index), kind="stable")
    qc_tiles = np.concatenate(qc_index)[order]
    qc_kinds = np.concatenate(qc_kind)[order]
    blur = KIND_CODES["blur"]
    paint_tiles(labels, mask, qc_tiles[qc_kinds == blur], grid.cols, grid.stride, grid.tile,
                scale_x, blur)  # fmt: skip

    rows, cols = np.divmod(tile_index, grid.cols)
    patch_probabilities = probabilities
    probabilities = smooth_probabilities(rows, cols, patch_probabilities, sigma)
    if inside is not None:  # the ring gave its evidence; only the tiles inside are the map
        keep = inside[tile_index]
        tile_index, probabilities = tile_index[keep], probabilities[keep]
        patch_probabilities = patch_probabilities[keep]
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
