"""Slide mode: map IDC over a whole slide or large image, at the training scale, in bounded memory.

``map_slide`` does the work in memory (thumbnail -> tissue mask -> tile grid -> streamed,
prefetched batches through ``Predictor.predict_proba`` -> per-cell probabilities);
``analyse_slide`` also writes the outputs other tools open (see ``slide_outputs``) into
``OUT/<slide name>/``, atomically; ``run_slides`` does many slides with resume and sharding.
``idcscan slide`` and ``POST /slide`` are thin layers over these.

Timings: ``read`` is the time the prefetch thread spent reading and resizing tiles, which
overlaps ``infer`` (ONNX Runtime); ``total`` is the wall time, so read + infer can exceed it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idcscan import DISCLAIMER
from idcscan.progress import progress_bar
from idcscan.errors import IdcscanError
from idcscan.inference.context import (
    CONTEXT_SIGMA,
    area_threshold,
    check_context,
    sigma_in_cells,
    smooth_probabilities,
)
from idcscan.inference.predictor import Predictor
from idcscan.inference.qc import KIND_CODES, KINDS, QCParams, blurry, paint_tiles, screen_tiles
from idcscan.inference.slide_failures import clear_failure, read_failures, record_failure
from idcscan.inference.slide_reader import SUPPORTED_SUFFIXES, SlideReader, open_slide, resize
from idcscan.inference.slide_stain import slide_stain_group
from idcscan.inference.tiling import Prefetcher, TileGrid, iter_batches, plan_grid
from idcscan.inference.tissue import TissueParams, tissue_mask

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
#: Thumbnail: about this many pixels per tile for the tissue mask, within these bounds.
THUMB_PX_PER_TILE = 16
THUMB_MIN_SIDE = 1024
THUMB_MAX_SIDE = 2048

ProgressFn = Callable[[int, int], None]


class ScaleWarning(UserWarning):
    """The slide's scale was assumed, or is coarser than the training scale."""


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
    #: IDC share, ``context.area_threshold``; not the 50% patch call nor the review threshold)
    threshold: float | None = None
    #: spatial context: Gaussian sigma in patches over neighbouring tiles' log-odds (0: off)
    context: float = CONTEXT_SIGMA
    tissue: TissueParams = field(default_factory=TissueParams)
    prefetch: int = 2
    #: artefact QC (pen, blur, fold, bubble) before scoring; see ``idcscan.inference.qc``
    qc: QCParams = field(default_factory=QCParams)


@dataclass
class SlideSummary:
    """What ``summary.json`` holds (and one row of ``summary.csv``)."""

    slide: str
    path: str
    width: int
    height: int
    mpp: float
    mpp_source: str  # "metadata", "option" (--mpp) or "assumed" (training scale)
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
    #: why ``threshold`` has its value (the area call; see ``idcscan.inference.context``)
    threshold_rule: str = ""
    #: spatial context sigma, in patches (0: each tile alone, as in summaries written before slide mode had context)
    context: float = 0.0
    #: the slide's own stains, for a bundle that normalises per group ({} otherwise)
    stain: dict[str, Any] = field(default_factory=dict)
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    #: columns of summary.csv (scalars only)
    CSV_COLUMNS = (
        "slide", "path", "width", "height", "mpp", "mpp_source", "level", "tile_size",
        "stride", "n_tiles", "n_idc_tiles", "tissue_area_mm2", "idc_area_mm2",
        "idc_fraction", "n_regions", "threshold", "context", "tta", "time_total_s", "model",
        "model_sha256", "demo", "qc_excluded_mm2",
    )  # fmt: skip

    def csv_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.to_dict().items() if k in self.CSV_COLUMNS}
        row["time_total_s"] = self.timings.get("total")
        row["model"] = f"{self.model.get('name')} {self.model.get('version')}"
        row["model_sha256"] = self.model.get("sha256")
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
            qc_tiles={
                kind: int(np.count_nonzero(self.qc_tile_kind == KIND_CODES[kind]))
                for kind in KINDS
            },
            qc=self.qc_params.to_dict(),
        )


def resolve_mpp(
    reader: SlideReader, fallback: float | None, training_mpp: float
) -> tuple[float, str]:
    """The slide's level-0 µm/px: its metadata, else ``--mpp``, else the training scale.

    Only plain pictures (PNG, JPEG; ``idcscan mosaic`` output) may fall back to the training
    scale, with a warning: a whole-slide file without a scale is refused (its scale could
    be anything from 0.1 to 20 µm/px; a guess would silently give a wrong map).
    """
    if reader.mpp is not None:
        return float(reader.mpp), "metadata"
    if fallback is not None:
        if fallback <= 0:
            raise IdcscanError(f"--mpp must be positive, got {fallback}.")
        return float(fallback), "option"
    if reader.backend in ("tiffslide", "openslide") and reader.level_count > 1:
        raise IdcscanError(
            f"{reader.name} carries no scale (µm/px) a microscope would give; pass --mpp "
            "(µm per pixel of its full resolution) to map it."
        )
    warnings.warn(
        f"{reader.name} carries no scale (µm/px); assuming it is already at the training scale "
        f"({training_mpp:g} µm/px). Pass --mpp if it is not.",
        ScaleWarning,
        stacklevel=3,
    )
    return training_mpp, "assumed"


def thumbnail_downsample(width: int, height: int, tile: int) -> float:
    """Level-0 pixels per thumbnail pixel: ~16 px per tile, longest side 1024-2048 px."""
    side = max(width, height)
    ds = min(tile / THUMB_PX_PER_TILE, side / THUMB_MIN_SIDE)
    return max(ds, side / THUMB_MAX_SIDE, 1.0)


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

    mpp, mpp_source = resolve_mpp(reader, options.mpp, card.mpp)
    if mpp > card.mpp * 1.25:
        warnings.warn(
            f"{reader.name} is at {mpp:g} µm/px, coarser than the training scale "
            f"({card.mpp:g} µm/px): tiles are upsampled and the model sees less detail than it "
            "was trained on.",
            ScaleWarning,
            stacklevel=2,
        )
    grid = plan_grid(reader, mpp, card.mpp, card.patch_size, options.stride)

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
        tta=options.tta,
        model={
            "name": card.name,
            "version": card.version,
            "sha256": card.onnx_sha256,
        },
        tissue_params=options.tissue,
        qc_labels=labels,
        qc_tile_index=qc_tiles,
        qc_tile_kind=qc_kinds,
        qc_params=options.qc,
        timings={
            "read": prefetch.read_seconds,
            "tissue": t_tissue,
            "stain": t_stain,
            "infer": t_infer,
            "map": time.perf_counter() - t_start,
        },
        demo=card.demo,
    )


def slide_name(path: str | Path) -> str:
    """Output folder name of a slide: its file name without the (double) extension."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_finished(out_dir: Path, name: str) -> bool:
    return (out_dir / name / SUMMARY_JSON).is_file()


def analyse_slide(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    options: SlideOptions = SlideOptions(),
    on_progress: ProgressFn | None = None,
) -> SlideSummary:
    """Map one slide and write ``out_dir/<slide name>/`` (built aside, then renamed into place).

    A folder with ``summary.json`` is therefore always complete; an interrupted run leaves
    only a hidden ``.<name>.partial-<pid>`` folder, removed when the slide is done again.
    """
    from idcscan.inference.slide_outputs import write_outputs

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    name = slide_name(path)
    with open_slide(path) as reader:
        slide = map_slide(predictor, reader, options, name=name, on_progress=on_progress)
    slide.path = str(path)

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for stale in out_dir.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".{name}.partial-{os.getpid()}"
    tmp.mkdir()
    try:
        summary = write_outputs(slide, tmp, timings_start=(t_start, t0))
        final = out_dir / name
        old = out_dir / f".{name}.old-{os.getpid()}"
        if final.exists():  # moved aside whole (one rename), never half-deleted in place
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clear_failure(out_dir, name)
    return summary


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` (1-based, e.g. ``$SLURM_ARRAY_TASK_ID/4``) -> (i, n); None -> (1, 1)."""
    if shard is None:
        return 1, 1
    try:
        i_text, n_text = shard.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise IdcscanError(f"--shard must look like i/n (e.g. 1/4), got {shard!r}.") from None
    if n < 1 or not 1 <= i <= n:
        raise IdcscanError(f"--shard {shard}: need 1 <= i <= n (i is 1-based).")
    return i, n


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the supported images directly inside them; sorted."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [
                f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
            ]
            if not found:
                kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
                raise IdcscanError(f"{p} holds no supported image ({kinds}).")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise IdcscanError(f"{p} does not exist.")
    paths = sorted(set(paths), key=lambda q: str(q))
    names: dict[str, Path] = {}
    for p in paths:
        other = names.setdefault(slide_name(p), p)
        if other != p:
            raise IdcscanError(
                f"{other} and {p} would both write {slide_name(p)}/; rename one of them or "
                "run them into different --out folders."
            )
    return paths


def select_shard(paths: Sequence[Path], shard: tuple[int, int]) -> list[Path]:
    """Shard i of n takes every n-th slide of the sorted list, starting at the i-th."""
    i, n = shard
    return list(paths[i - 1 :: n])


@dataclass
class RunReport:
    done: list[SlideSummary] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    summary_csv: Path | None = None


#: after the summary columns: ``ok`` or ``failed``, and why it failed
STATUS_COLUMNS = ("status", "error")


def write_summary_csv(out_dir: Path) -> Path | None:
    """``summary.csv``: one row per finished slide folder in ``out_dir`` (all shards), and one
    per slide that failed (``status`` failed, ``error``) and has not been mapped since."""
    rows = []
    for summary_path in sorted(out_dir.glob(f"*/{SUMMARY_JSON}")):
        try:
            data = json.loads(summary_path.read_text())
            fields = SlideSummary.__dataclass_fields__
            summary = SlideSummary(**{k: data[k] for k in fields if k in data})
        except (json.JSONDecodeError, TypeError, KeyError):
            continue
        rows.append({**summary.csv_row(), "status": "ok", "error": ""})
    finished = {row["slide"] for row in rows}
    for failure in read_failures(out_dir):
        if failure["slide"] not in finished:
            rows.append(
                {"slide": failure["slide"], "path": failure.get("path", ""), "status": "failed",
                 "error": failure.get("error", "")}
            )  # fmt: skip
    if not rows:
        return None
    rows.sort(key=lambda row: str(row["slide"]))
    target = out_dir / SUMMARY_CSV
    tmp = out_dir / f".{SUMMARY_CSV}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        columns = [*SlideSummary.CSV_COLUMNS, *STATUS_COLUMNS]
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(target)
    return target


def run_slides(
    predictor: Predictor,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: SlideOptions = SlideOptions(),
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    console: Any = None,
) -> RunReport:
    """Map many slides into ``out_dir``; finished slides are skipped, failures reported.

    One slide failing (unreadable file) does not stop the others; the report lists it.
    """

    out_dir = Path(out_dir)
    shard_t = shard if isinstance(shard, tuple) else parse_shard(shard)
    paths = select_shard(expand_inputs(inputs), shard_t)
    report = RunReport()
    with progress_bar(progress, unit="tiles", console=console) as bar:
        for path in paths:
            name = slide_name(path)
            if is_finished(out_dir, name):
                report.skipped.append(path)
                continue
            task = bar.add_task(name, total=None)

            def update(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            try:
                report.done.append(analyse_slide(predictor, path, out_dir, options, update))
            except IdcscanError as exc:
                report.failed.append((path, str(exc)))
                record_failure(out_dir, name, path, str(exc))
                bar.remove_task(task)  # the caller reports the failure in words
    out_dir.mkdir(parents=True, exist_ok=True)
    report.summary_csv = write_summary_csv(out_dir)
    return report
