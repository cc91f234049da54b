"""CLI: ``idcscan predict BUNDLE INPUT...`` scores image files and folders (no torch)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from idcscan.cli.app import app, console, out, print_disclaimer, print_warning
from idcscan.cli.arguments import BUNDLE_HELP, TTA_HELP, runtime_option
from idcscan.errors import IdcscanError
from idcscan.progress import progress_bar


@app.command()
def predict(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP, show_default=False),
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="Image files and/or folders (searched recursively for images).",
    ),
    out_file: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write rows to FILE.csv or FILE.json (probabilities as fractions 0..1). "
        "Without it, print a table.",
    ),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Patches per model call."),
    stain_group: str = typer.Option(
        "image", "--stain-group",
        help="For a bundle trained with --stain-norm macenko: whose images share stains. "
        "image: each alone; folder: each folder's images (a patient's, a scan's); all: every "
        "input together. Other bundles ignore it.",
    ),
    runtime: str | None = runtime_option(),
) -> None:
    """Predict IDC for image patches and folders of them: one row per image (files that are not scored get an error row).

    IDC Positive when P(IDC) is at least 50%; confidence is the probability of the class called; "flagged" marks P(IDC) at or above the bundle's review threshold. Images over 512 px on the long side (tissue sections, not patches) are not scored: their row says to map them with `idcscan slide`, and the command exits 2 when nothing was scored. Research use only.
    """  # noqa: E501  (one line per paragraph: the help wraps it)
    from rich.table import Table

    from idcscan.cli.arguments import apply_runtime, check_bundle_first, tta_note
    from idcscan.runtime.predict_files import STAIN_GROUPS, collect_images, output_format
    from idcscan.runtime.predict_files import predict_files
    from idcscan.runtime.predict_files import write_predictions
    from idcscan.runtime.labels import DECISION_THRESHOLD, percent
    from idcscan.runtime.predictor import Predictor

    check_bundle_first("predict", bundle, inputs)
    apply_runtime(runtime)
    if out_file is not None:
        output_format(out_file)  # refuse a bad suffix before any work
    if stain_group not in STAIN_GROUPS:
        raise IdcscanError(f"--stain-group must be one of {', '.join(STAIN_GROUPS)}; "
                           f"got {stain_group!r}.")
    paths = collect_images(inputs)
    predictor = Predictor(bundle, batch_size=batch_size)
    demo = " DEMO model trained on synthetic data: the results mean nothing." \
        if predictor.card.demo else ""
    console.print(
        f"{predictor.card.name}: IDC Positive when P(IDC) >= {percent(DECISION_THRESHOLD)}; "
        f"flagged for review when P(IDC) >= {percent(predictor.threshold)}.{demo}",
        highlight=False,
    )
    note = tta_note(predictor.card, tta)
    if note:
        print_warning(note)
    # Only on a terminal: in a log the bar would leave an empty line behind.
    with progress_bar(console.is_terminal, unit="images", console=console, transient=True) \
            as progress:
        task = progress.add_task("predict", total=len(paths))
        rows = list(
            predict_files(
                predictor,
                paths,
                tta=tta,
                batch_size=batch_size,
                on_progress=lambda n: progress.advance(task, n),
                stain_group=stain_group,
            )
        )
    for r in rows:
        if r.warning:
            print_warning(f"{r.path}: {r.warning}")
    failed = [r for r in rows if r.error is not None]
    positive = sum(r.predicted_class == 1 for r in rows)
    flagged = sum(bool(r.flagged) for r in rows)
    if len(failed) == len(rows):
        first = str(failed[0].error).rstrip(".")
        if len(rows) == 1:
            raise IdcscanError(f"{first}. Nothing was scored.")
        raise IdcscanError(f"None of the {len(rows)} inputs could be scored; the first: {first}.")
    if out_file is not None:
        write_predictions(rows, out_file, predictor, tta=tta, stain_group=stain_group)
        console.print(f"Wrote {_count(len(rows), 'row')} to {out_file}", highlight=False)
    else:
        table = Table(title=None, box=None, pad_edge=False)
        for column in ("path", "call", "P(IDC)", "confidence", "review", "error"):
            table.add_column(column, overflow="fold")
        for r in rows:
            if r.error is not None:
                reason = r.error.removeprefix(f"{r.path}: ")  # the path is in its own column
                table.add_row(escape(r.path), "-", "-", "-", "-", f"[red]{escape(reason)}[/]")
            else:
                style = "bold red" if r.predicted_class == 1 else "green"
                table.add_row(
                    escape(r.path),
                    f"[{style}]{r.class_name}[/]",
                    percent(r.probability_positive),
                    percent(r.confidence),
                    "flagged" if r.flagged else "",
                    "",
                )
        out.print(table)
    scored = len(rows) - len(failed)
    console.print(
        f"{_count(scored, 'image')} scored: {positive} IDC Positive, {scored - positive} IDC "
        f"Negative, {flagged} flagged for review; {len(failed)} not scored.",
        highlight=False,
    )
    print_disclaimer()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
