"""CLI commands for data: ``synth``, ``download``, ``prepare``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from idcscan.cli.app import app, console, out, print_disclaimer


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to write the dataset into."),
    patients: int = typer.Option(40, "--patients", min=1, help="Number of synthetic patients."),
    patches_per_patient: int = typer.Option(
        100, "--patches-per-patient", min=1, help="Patches per patient."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same bytes."),
) -> None:
    """Write a synthetic H&E-like dataset in the exact Kaggle layout (for tests and demos)."""
    from idcscan.data.synthetic import generate_dataset

    summary = generate_dataset(
        out_dir,
        patients=patients,
        patches_per_patient=patches_per_patient,
        seed=seed,
        progress=True,
    )
    out.print(
        f"wrote {summary.n_patches} patches ({summary.n_positive} IDC, "
        f"{summary.n_edge_crops} edge crops) for {len(summary.patients)} synthetic patients "
        f"to {summary.root}",
        highlight=False,
    )
    out.print(f"next: idcscan prepare {summary.root} --out DATA", highlight=False)
    print_disclaimer()


@app.command()
def download(
    out_dir: Path | None = typer.Option(
        None, "--out", help="Folder to place the dataset in (default: kagglehub's cache)."
    ),
) -> None:
    """Download the Kaggle Breast Histopathology Images set (needs internet + a Kaggle API key)."""
    from idcscan.data.kaggle import download as download_dataset

    with console.status("downloading from Kaggle (about 3 GB)"):
        path = download_dataset(out_dir)
    out.print(f"dataset at {path}", highlight=False)
    out.print(f"next: idcscan prepare {path} --out DATA", highlight=False)
    print_disclaimer()


@app.command()
def prepare(
    src: Path = typer.Argument(
        ..., help="Kaggle folder (IDC_regular_ps50_idx5/ or the folder that contains it)."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the packed dataset."),
    val_frac: float = typer.Option(0.15, "--val-frac", help="Fraction of PATIENTS for validation."),
    test_frac: float = typer.Option(0.15, "--test-frac", help="Fraction of PATIENTS for test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient split."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Decoding processes (default: all cores)."
    ),
) -> None:
    """Check, decode and pack Kaggle patches into patches.npy + index.csv, split by patient.

    Use --val-frac 0 --test-frac 1 to turn a folder into an external test set.
    """
    from idcscan.data.packing import prepare as prepare_dataset

    summary = prepare_dataset(
        src, out_dir, val_frac=val_frac, test_frac=test_frac, seed=seed, workers=workers
    )
    table = Table(title=f"Prepared {summary.n_patches} patches", title_justify="left")
    for col in ("split", "patients", "patches", "non-IDC", "IDC", "IDC share"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, c in summary.counts.items():
        share = f"{c['1'] / c['total']:.1%}" if c["total"] else "-"
        table.add_row(
            split, str(summary.patients[split]), str(c["total"]), str(c["0"]), str(c["1"]), share
        )
    out.print(table)
    out.print(f"padded edge crops: {summary.padded}", highlight=False)
    out.print(f"duplicate files ignored (same name twice): {summary.duplicates}", highlight=False)
    skipped = f"skipped files: {summary.skipped}"
    if summary.skipped_reasons:
        skipped += " (" + ", ".join(f"{k}: {v}" for k, v in summary.skipped_reasons.items())
        skipped += "; each file and reason is listed in prepare.json)"
    out.print(skipped, highlight=False)
    out.print(f"patches: {summary.patches_path}", highlight=False)
    out.print(f"index:   {summary.index_path}", highlight=False)
    out.print(f"details: {summary.meta_path}", highlight=False)
    print_disclaimer()
