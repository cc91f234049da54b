"""CLI commands: ``idcscan slide`` (IDC maps of large images) and ``idcscan mosaic``."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from idcscan.cli.app import app, console, out, print_disclaimer, print_warning
from idcscan.cli.arguments import BUNDLE_HELP, TTA_HELP, runtime_option
from idcscan.errors import IdcscanError


@app.command()
def slide(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP, show_default=False),
    inputs: list[Path] = typer.Argument(
        ...,
        help="Slides or large images (SVS, NDPI, pyramidal TIFF, MRXS*, PNG, JPEG, TIFF) or "
        "folders of them. *MRXS and other OpenSlide-only formats need OpenSlide: "
        "pip install openslide-bin openslide-python.",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Output folder: one subfolder per slide."
    ),
    mpp: float | None = typer.Option(
        None,
        help="µm per pixel of the full resolution, for files that record no scale (needed for "
        "those: a scale is never guessed). About 0.25 for a 40x scan, 0.5 for 20x, 4 for an "
        "image already at the training scale. `idcscan mosaic` output records its own.",
    ),
    stride: int | None = typer.Option(
        None,
        help="Tile step in training-scale pixels (1 to the patch size, 50). Smaller = "
        "overlapping tiles, probabilities averaged per stride-sized cell. Default: no overlap.",
    ),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    shard: str | None = typer.Option(
        None,
        help="i/n: process only the i-th (1-based) of n shares of the sorted inputs, e.g. "
        "--shard $SLURM_ARRAY_TASK_ID/4 with #SBATCH --array=1-4.",
    ),
    batch_size: int = typer.Option(64, help="Tiles per model call."),
    threshold: float | None = typer.Option(
        None, help="P(IDC) from which a tile counts towards the IDC area. Default: IDC more "
        "likely than not at the training IDC share (for a class-balanced bundle w/(1+w), w "
        "its pos_weight; else 0.5), which keeps areas unbiased."
    ),
    context: float | None = typer.Option(
        None, help="Spatial context: each tile's P(IDC) is the Gaussian-weighted mean log-odds "
        "of the tissue tiles around it, sigma in patches (default 1); 0 scores each tile alone."
    ),
    cluster: str | None = typer.Option(
        None,
        help="Run on Dask, one task per slide: local (a worker process per core the machine "
        "can feed), local:N (N workers), tcp://HOST:PORT or a scheduler file (an existing "
        "cluster whose workers see the same paths). Also writes OUT/report.html.",
    ),
    regions: Path | None = typer.Option(
        None, "--regions", help="GeoJSON of annotations in level-0 pixels (QuPath: File > "
        "Export objects as GeoJSON): score only the tissue inside them (a tile counts when its "
        "centre lies inside); areas and the IDC fraction are over the regions. One slide only."
    ),
    runtime: str | None = runtime_option(),
) -> None:
    """Map IDC over whole slides / large images: heatmap, tiles.csv, GeoJSON, summary.

    Writes OUT/<slide>/{heatmap.png, tissue.png, tiles.csv, idc.geojson, tiles.geojson, summary.json} and OUT/summary.csv; tiles.geojson opens in QuPath (File > Import objects from file). Tiles are 50 px at the training scale (4 µm/px); background is never scored. A slide already mapped there from the same file, unchanged, by the same model with the same --context, --threshold and --regions, is skipped, so re-running a command resumes it; mapped otherwise, or a different file with the same name, it is refused (map it into another --out).
    """  # noqa: E501  (one line per paragraph: the help wraps it)
    from idcscan.runtime.bundle import load_bundle
    from idcscan.runtime.predictor import Predictor
    from idcscan.cli.arguments import apply_runtime, check_bundle_first, tta_note
    from idcscan.maps.mapper import ScaleWarning, SlideOptions
    from idcscan.maps.run import run_slides

    check_bundle_first("slide", bundle, inputs)
    drawn = _read_regions(regions, inputs) if regions is not None else None
    apply_runtime(runtime)  # local Dask workers inherit it; a remote cluster's read their own
    # one load (and checksum) of the bundle here; cohort workers load their own
    predictor = Predictor(bundle, batch_size=batch_size) if cluster is None else None
    card = predictor.card if predictor is not None else load_bundle(bundle).card
    if card.demo:
        print_warning("DEMO model trained on synthetic data: its maps mean nothing.")
    note = tta_note(card, tta)
    if note:
        print_warning(note)
    options = SlideOptions(
        mpp=mpp, stride=stride, tta=tta, batch_size=batch_size, threshold=threshold,
        regions=drawn,
        **({} if context is None else {"context": context}),  # None: the library's default
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScaleWarning)
        if predictor is not None:
            report = run_slides(predictor, inputs, out_dir, options, shard=shard,
                                console=console, progress=console.is_terminal)
        else:
            from idcscan.cohorts.run import run_cohort

            report = run_cohort(
                bundle, inputs, out_dir, options, cluster=cluster, shard=shard, console=console
            )
    for w in caught:
        if issubclass(w.category, ScaleWarning):
            print_warning(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if report.skipped:
        console.print(
            f"Skipped {len(report.skipped)} slide(s) already mapped in {out_dir} from the same "
            f"file, unchanged (delete their folders to redo them): "
            + ", ".join(p.name for p in report.skipped),
            highlight=False,
        )
    for s in report.done:
        inside = (f" inside {s.regions['count']} drawn region(s) of "
                  f"{s.regions['area_mm2']:.2f} mm²" if s.regions else "")
        caution = "".join(f" CAUTION: {w}" for w in s.warnings)
        out.print(
            f"{s.slide}: IDC (P(IDC) >= {s.threshold:.2%}) in {s.idc_fraction:.1%} of "
            f"{s.n_tiles} tissue tiles{inside} "
            f"({s.idc_area_mm2:.2f} of {s.tissue_area_mm2:.2f} mm², {s.n_regions} IDC region(s)) "
            f"in {s.timings.get('total', 0):.1f} s -> {out_dir / s.slide}.{caution}",
            highlight=False,
        )
    if report.summary_csv is not None:
        out.print(f"Summary of all finished slides: {report.summary_csv}", highlight=False)
    if getattr(report, "report_html", None) is not None:
        out.print(f"Cohort report: {report.report_html}", highlight=False)
    print_disclaimer()
    if len(report.failed) == 1 and not report.done:
        raise IdcscanError(report.failed[0][1])
    if report.failed:
        details = "; ".join(msg if str(p) in msg else f"{p}: {msg}" for p, msg in report.failed)
        raise IdcscanError(f"{len(report.failed)} of {len(report.failed) + len(report.done)} "
                           f"slides failed: {details}")


def _read_regions(path: Path, inputs: list[Path]):  # -> Regions
    """The regions of ``--regions``, for the one slide they were drawn on (an ``--out`` that
    holds the slide's map over other regions is refused by ``maps.identity``)."""
    from idcscan.maps.regions import read_regions

    if len(inputs) != 1 or inputs[0].is_dir():
        raise IdcscanError("--regions were drawn on one slide: give that one slide file, not "
                           f"{'a folder' if inputs and inputs[0].is_dir() else len(inputs)} "
                           "(map other slides in separate commands).")
    return read_regions(path)


@app.command()
def mosaic(
    patient_dir: Path = typer.Argument(..., help="One Kaggle patient folder (<pid>/0, <pid>/1)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder."),
) -> None:
    """Tile a Kaggle patient's patches back into one image with its ground-truth IDC mask.

    Writes <patient>.png (at the training scale, 4 µm/px, recorded in the file), <patient>_truth.png, <patient>_truth.csv (x, y, label in mosaic pixels) and <patient>_mosaic.json: a slide with known answers for `idcscan slide`, named after the patient so that mosaics of several patients share a folder.
    """  # noqa: E501
    from idcscan.data.mosaic import make_mosaic

    result, paths = make_mosaic(patient_dir, out_dir)
    n_idc = sum(p.label for p in result.patches)
    w, h = result.size
    out.print(
        f"Patient {result.patient}: {len(result.patches)} patches ({n_idc} IDC) -> "
        f"{w} x {h} px mosaic at {result.mpp:g} µm/px in {out_dir}",
        highlight=False,
    )
    out.print(f"Map it: idcscan slide BUNDLE {paths['image']} --out SLIDES", highlight=False)
