"""CLI command: ``idcscan demo`` (what ``make demo`` runs before serving)."""

from __future__ import annotations

from pathlib import Path

import typer

from idcscan.cli.app import app, console, out, print_disclaimer


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out", help="Where the demo pipeline writes."),
    minutes: float = typer.Option(3.0, help="Training budget in minutes (whole train command)."),
    data: Path | None = typer.Option(
        None, help="A Kaggle-layout folder to train on instead of synthetic data."
    ),
    seed: int = typer.Option(0, help="Seed for data, split and training."),
) -> None:
    """Build the demo bundle (cached) and its evaluation report; `make demo` then serves it."""
    from idcscan.demo import build_demo

    result = build_demo(out_dir, minutes=minutes, data=data, seed=seed)
    state = "trained" if result.trained else "reused (cached)"
    console.print(f"bundle {state}: {result.bundle}", highlight=False)
    console.print(f"evaluation report: {result.report / 'report.md'}", highlight=False)
    out.print(str(result.bundle))
    print_disclaimer()
