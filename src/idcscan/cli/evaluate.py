"""CLI command: ``idcscan evaluate BUNDLE DATA --out REPORT`` (ONNX only; never imports torch)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from idcscan.cli.app import app, out, print_disclaimer
from idcscan.cli.arguments import BUNDLE_HELP, TTA_HELP, apply_runtime, runtime_option
from idcscan.data.packed import SPLITS


@app.command()
def evaluate(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP, show_default=False),
    data: Path = typer.Argument(..., help="Packed dataset directory written by `idcscan prepare`."),
    report: Path = typer.Option(..., "--out", "-o", help="Directory for the report (replaced)."),
    split: str = typer.Option("test", help=f"Split to evaluate: {', '.join(SPLITS)}."),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    batch_size: int = typer.Option(256, help="Patches per model call."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples (over patients) for the CIs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    runtime: str | None = runtime_option(),
) -> None:
    """Score a dataset split with a bundle; write metrics with patient-level 95% CIs and plots."""
    from idcscan.evaluation.evaluate import REPORT_FILE
    from idcscan.evaluation.evaluate import evaluate as run_evaluation
    from idcscan.evaluation.report import METRIC_LABELS

    apply_runtime(runtime)
    print_disclaimer()
    if tta:
        from idcscan.cli.app import print_warning
        from idcscan.cli.arguments import tta_note
        from idcscan.runtime.bundle import load_bundle

        note = tta_note(load_bundle(bundle, verify=False).card, tta)
        if note:
            print_warning(note)
    result = run_evaluation(
        bundle, data, split=split, out=report, tta=tta, batch_size=batch_size,
        n_boot=n_boot, seed=seed,
    )
    table = Table(
        title=f"{result['bundle']['name']} on {split}: {result['n_patches']:,} patches, "
        f"{result['n_patients']} patients (threshold {result['threshold']:.3f})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI (patients)", justify="right")
    for key, label in METRIC_LABELS.items():
        value = result[key]
        low, high = result["ci95"][key]
        table.add_row(
            label,
            "n/a" if value is None else f"{value:.4f}",
            "n/a" if low is None else f"{low:.4f} - {high:.4f}",
        )
    out.print(table)
    print_disclaimer()
    out.print(f"Report: {report / REPORT_FILE}", highlight=False, soft_wrap=True)
