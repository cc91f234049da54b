"""What a mapped slide is: ``SlideMap`` in memory (everything the outputs are drawn from) and
``SlideSummary``, its numbers as ``summary.json`` and a row of ``summary.csv`` hold them.

``maps.mapper`` makes a SlideMap; ``maps.outputs`` writes its files; the cohort report, the
viewer and the command line read the summary back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from idcscan import DISCLAIMER
from idcscan.maps.caveats import map_caveats
from idcscan.maps.regions import Regions
from idcscan.preprocessing import TRAINING_MPP
from idcscan.slides.qc import KIND_CODES, KINDS, QCParams
from idcscan.slides.tiling import TileGrid
from idcscan.slides.tissue import TissueParams

SUMMARY_JSON = "summary.json"


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
