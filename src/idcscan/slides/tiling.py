"""The tile grid at the training scale, and streaming tiles off a reader in bounded memory.

A tile is the area the model was trained to look at: ``patch_size`` pixels at the training
scale (50 px at 4 µm/px = 200 µm), i.e. ``round(50 * 4 / mpp0)`` level-0 pixels. Tiles start
every ``stride`` (given in training-scale pixels) from the top-left corner and cover the
whole image; tiles running past the right/bottom edge are padded with white, exactly as
the Kaggle edge crops were.

The reader picks the coarsest pyramid level not coarser than the training scale (no
upsampling of a coarse level when a finer one exists); each tile's region there is resized to
``patch_size`` by area averaging (antialiased; see ``slide_reader.resize``).

Tiles are read row by row: each row's tissue tiles are grouped in runs and each run is read as
one region, so memory holds one band of tiles and a few batches, never the whole slide.
With overlapping tiles (``stride`` < ``patch_size``) the output is a finer grid of
``stride``-sized cells, each given the mean probability of the tiles covering its centre.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from idcscan.slides.reader import SlideReader, resize

#: A run of tiles read as one region is at most this wide (level pixels).
MAX_RUN_PIXELS = 8192
#: Background tiles between two tissue tiles are read rather than split the run, up to this.
MAX_GAP_TILES = 2


@dataclass(frozen=True)
class TileGrid:
    """Where tiles lie (level-0 pixels) and at which pyramid level they are read."""

    width: int  # level-0 image size
    height: int
    tile: int  # tile side, level-0 pixels
    stride: int  # distance between tile origins, level-0 pixels
    cols: int
    rows: int
    level: int
    level_downsample: float
    level_tile: int  # tile side at the read level, in that level's pixels
    patch_size: int

    @property
    def n_tiles(self) -> int:
        return self.cols * self.rows

    def origins(self) -> tuple[np.ndarray, np.ndarray]:
        """(xs, ys) of every tile's top-left corner, row-major (index = row * cols + col)."""
        xs = np.tile(np.arange(self.cols, dtype=np.int64) * self.stride, self.rows)
        ys = np.repeat(np.arange(self.rows, dtype=np.int64) * self.stride, self.cols)
        return xs, ys

    # -- the output cell grid ---------------------------------------------------------
    @property
    def cells_per_tile(self) -> int:
        """Cells (of side ``stride``) whose centres a tile covers, per axis."""
        return max(1, math.ceil(self.tile / self.stride - 0.5))

    @property
    def cell_cols(self) -> int:
        return math.ceil(self.width / self.stride)

    @property
    def cell_rows(self) -> int:
        return math.ceil(self.height / self.stride)

    def cell_areas(self) -> np.ndarray:
        """Level-0 pixel area of each cell, clipped to the image (edge cells are smaller)."""
        xs = np.arange(self.cell_cols) * self.stride
        ys = np.arange(self.cell_rows) * self.stride
        widths = np.minimum(xs + self.stride, self.width) - xs
        heights = np.minimum(ys + self.stride, self.height) - ys
        return np.outer(heights, widths).astype(np.float64)

    def cell_means(self, tile_index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per cell, the mean of ``values`` over the tiles covering it (NaN where none)."""
        total = np.zeros((self.cell_rows, self.cell_cols), dtype=np.float64)
        count = np.zeros_like(total)
        rows, cols = np.divmod(tile_index, self.cols)
        k = self.cells_per_tile
        for dr in range(k):
            for dc in range(k):
                r, c = rows + dr, cols + dc
                ok = (r < self.cell_rows) & (c < self.cell_cols)
                np.add.at(total, (r[ok], c[ok]), values[ok])
                np.add.at(count, (r[ok], c[ok]), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def grid_shape(
    width: int, height: int, mpp: float, target_mpp: float, patch_size: int,
    stride_px: int | None,
) -> tuple[int, int, int, int]:
    """(tile, stride, cols, rows) in level-0 pixels of the grid ``plan_grid`` lays: known
    from the slide's size alone, so a server can refuse a job before it opens the slide."""
    scale = target_mpp / mpp  # level-0 pixels per training-scale pixel
    tile = max(1, round(patch_size * scale))
    stride_px = patch_size if stride_px is None else stride_px
    stride = max(1, round(stride_px * scale))
    cols = math.ceil(max(width - tile, 0) / stride) + 1
    rows = math.ceil(max(height - tile, 0) / stride) + 1
    return tile, stride, cols, rows


#: Tiles are read from a pyramid level at least this many times finer than the training
#: scale, then shrunk. A scanner's level at about 4 µm/px is JPEG, mostly with 4:2:0 chroma,
#: which at the model's own scale smears the stain colours it reads: a section stored so
#: mapped at 0-17% IDC instead of 34%, and read from a level twice as fine at 30-34%
#: (docs/RESULTS.md section 0).
READ_FINER = 2


def plan_grid(
    reader: SlideReader, mpp: float, target_mpp: float, patch_size: int, stride_px: int | None
) -> TileGrid:
    """Lay tiles at the training scale over a slide whose level 0 is ``mpp`` µm/px."""
    width, height = reader.dimensions
    tile, stride, cols, rows = grid_shape(width, height, mpp, target_mpp, patch_size, stride_px)
    level = reader.best_level(target_mpp / mpp / READ_FINER)
    ds = reader.level_downsamples[level]
    return TileGrid(
        width=width,
        height=height,
        tile=tile,
        stride=stride,
        cols=cols,
        rows=rows,
        level=level,
        level_downsample=ds,
        level_tile=max(1, round(tile / ds)),
        patch_size=patch_size,
    )


@dataclass
class Batch:
    index: np.ndarray  # int64 tile indices (row-major in the grid)
    patches: np.ndarray  # uint8 (n, patch, patch, 3)


def iter_batches(
    reader: SlideReader, grid: TileGrid, tile_index: np.ndarray, batch_size: int
) -> Iterator[Batch]:
    """Read the selected tiles (sorted row-major indices) as batches of model-ready patches."""
    p = grid.patch_size
    ds = grid.level_downsample
    lt = grid.level_tile
    buf = np.empty((batch_size, p, p, 3), dtype=np.uint8)
    idx = np.empty(batch_size, dtype=np.int64)
    n = 0
    rows, cols = np.divmod(np.asarray(tile_index, dtype=np.int64), grid.cols)
    bounds = np.flatnonzero(np.diff(rows)) + 1
    for row_tiles in np.split(np.arange(len(rows)), bounds):
        if len(row_tiles) == 0:
            continue
        row = int(rows[row_tiles[0]])
        ly = math.floor(row * grid.stride / ds)
        for run in _runs(cols[row_tiles], grid, lt):
            run_cols = cols[row_tiles[run]]
            lx = [math.floor(int(c) * grid.stride / ds) for c in run_cols]
            region = reader.read_level(grid.level, lx[0], ly, lx[-1] - lx[0] + lt, lt)
            for k, c in zip(run, lx):
                crop = region[:, c - lx[0] : c - lx[0] + lt]
                buf[n] = resize(crop, p, p) if lt != p else crop
                idx[n] = tile_index[row_tiles[k]]
                n += 1
                if n == batch_size:
                    yield Batch(idx.copy(), buf.copy())
                    n = 0
    if n:
        yield Batch(idx[:n].copy(), buf[:n].copy())


def _runs(cols: np.ndarray, grid: TileGrid, level_tile: int) -> Iterator[np.ndarray]:
    """Split a row's (sorted) tile columns into runs worth reading as one region."""
    step = grid.stride / grid.level_downsample
    start = 0
    for i in range(1, len(cols) + 1):
        end_run = i == len(cols)
        if not end_run:
            gap = (cols[i] - cols[i - 1]) * step > (MAX_GAP_TILES + 1) * level_tile
            too_wide = (cols[i] - cols[start]) * step + level_tile > MAX_RUN_PIXELS
            end_run = gap or too_wide
        if end_run:
            yield np.arange(start, i)
            start = i


class Prefetcher:
    """Run a batch iterator in a thread, ``depth`` batches ahead of the consumer.

    Decoding (tiffslide/imagecodecs, Pillow resize) releases the GIL, so reading the next
    batch overlaps ONNX Runtime scoring the current one. Memory: ``depth`` batches at most.
    ``read_seconds`` is the time the thread spent producing batches.
    """

    _DONE = object()

    def __init__(self, batches: Iterator[Batch], depth: int = 2) -> None:
        self._batches = batches
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.read_seconds = 0.0
        self._thread = threading.Thread(target=self._work, name="idcscan-tile-reader", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    batch = next(self._batches)
                except StopIteration:
                    break
                finally:
                    self.read_seconds += time.perf_counter() - start
                if not self._put(batch):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[Batch]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
