"""CLI command: ``idcscan card BUNDLE`` prints the model card as a person reads it (Markdown)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from idcscan.cli.app import app, out


@app.command()
def card(
    bundle: Path = typer.Argument(..., help="Model bundle directory (model.onnx + model.json)."),
    report: Path | None = typer.Option(
        None, help="The `idcscan evaluate` folder of this bundle (default: found next to it)."
    ),
) -> None:
    """Print the model card in Markdown: classes, decision rule, data, validation and test metrics.

    model.json keeps every detail for machines; this is the summary a person reads. Test metrics with 95% CIs appear when an evaluation report of this very bundle exists.
    """  # noqa: E501
    from idcscan.inference.bundle import load_bundle
    from idcscan.inference.model_card import card_markdown, find_report, load_report
    from idcscan.inference.model_card import readable_card

    loaded = load_bundle(bundle)
    folder = report if report is not None else find_report(loaded.path, loaded.card)
    # Relative to where the command runs: a card shows no absolute paths.
    link = os.path.relpath(folder / "report.md") if folder is not None else None
    out.print(card_markdown(readable_card(loaded.card, load_report(folder), link)),
              markup=False, highlight=False)  # the card carries the disclaimer
