"""CLI command: ``idcscan report`` (the cohort report of a slide-mode output folder)."""

from __future__ import annotations

from pathlib import Path

import typer

from idcscan.cli.app import app, out, print_disclaimer


@app.command()
def report(
    out_dir: Path = typer.Argument(..., help="Output folder of `idcscan slide` (--out)."),
    patients: Path | None = typer.Option(
        None, help="CSV with columns slide and patient: adds a per-patient table."
    ),
    bundle: Path | None = typer.Option(
        None, help="Model to show the card of: a shipped model's name or a bundle folder "
        "(default: OUT/model_card.json if there)."
    ),
) -> None:
    """Write OUT/report.html: every slide with its IDC map, fraction, areas, QC and errors.

    Sortable, with a histogram of IDC fractions, the model card and (with --patients) a patient table. Self-contained: opens offline.
    """  # noqa: E501  (one line per paragraph: the help wraps it)
    from idcscan.cohorts.report import write_report

    print_disclaimer()
    path = write_report(out_dir, patients=patients, bundle=bundle)
    out.print(f"Cohort report: {path}", highlight=False)
