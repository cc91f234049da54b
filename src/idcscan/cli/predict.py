"""CLI: ``idcscan predict BUNDLE INPUT...`` scores image files and folders (no torch)."""

from __future__ import annotations

from pathlib import Path

import typer

from idcscan.progress import progress_bar
from idcscan.cli.app import app, console, out, print_disclaimer


@app.command()
def predict(
    bundle: Path = typer.Argument(..., help="Model bundle directory (model.onnx + model.json)."),
    inputs: list[Path] = typer.Argument(
        ..., help="Image files and/or folders (searched recursively for images)."
    ),
    out_file: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write rows to FILE.csv or FILE.json (probabilities as fractions 0..1). "
        "Without it, print a table.",
    ),
    tta: bool = typer.Option(False, "--tta", help="Average over the 8 flips/rotations."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Patches per model call."),
) -> None:
    """Predict IDC for image files and folders: one row per image (unreadable files get an
    error row). Research use only."""
    from rich.table import Table

    from idcscan.inference.folder import collect_images, output_format, predict_files
    from idcscan.inference.folder import write_predictions
    from idcscan.inference.predictor import Predictor

    if out_file is not None:
        output_format(out_file)  # refuse a bad suffix before any work
    paths = collect_images(inputs)
    predictor = Predictor(bundle, batch_size=batch_size)
    with progress_bar(unit="images", console=console, transient=out_file is None) as progress:
        task = progress.add_task("predict", total=len(paths))
        rows = list(
            predict_files(
                predictor,
                paths,
                tta=tta,
                batch_size=batch_size,
                on_progress=lambda n: progress.advance(task, n),
            )
        )
    failed = sum(r.error is not None for r in rows)
    positive = sum(r.predicted_class == 1 for r in rows)
    if out_file is not None:
        write_predictions(rows, out_file, predictor, tta=tta)
        console.print(f"Wrote {len(rows)} rows to {out_file}", highlight=False)
    else:
        table = Table(title=f"{predictor.card.name} (threshold {predictor.threshold:.3f})")
        for column in ("path", "class", "P(IDC)", "confidence", "error"):
            table.add_column(column, overflow="fold")
        for r in rows:
            if r.error is not None:
                table.add_row(r.path, "-", "-", "-", f"[red]{r.error}[/]")
            else:
                style = "bold red" if r.predicted_class == 1 else "green"
                table.add_row(
                    r.path,
                    f"[{style}]{r.class_name}[/]",
                    f"{r.probability_positive:.4f}",
                    f"{r.confidence:.4f}",
                    "",
                )
        out.print(table)
    console.print(
        f"{len(rows)} images: {positive} IDC Positive, {len(rows) - positive - failed} "
        f"IDC Negative, {failed} unreadable.",
        highlight=False,
    )
    print_disclaimer()
