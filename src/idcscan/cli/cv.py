"""CLI command: ``idcscan cv DATA --folds K --out DIR [train options]`` (over evaluation.cv)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from idcscan.cli.app import app, console, out, print_disclaimer
from idcscan.cli.arguments import apply_runtime, runtime_option
from idcscan.cli.recipe import recipe_options


@app.command()
@recipe_options
def cv(
    data: Path = typer.Argument(..., help="Packed dataset folder written by `idcscan prepare` "
                                          "(all its patients are cross-validated)."),
    folder: Path = typer.Option(..., "--out", help="CV folder (fold-N/, cv.json, ...); "
                                                   "re-running continues it."),
    folds: int = typer.Option(5, help="Number of folds (K)."),
    repeats: int = typer.Option(1, help="Repeats of K-fold with different patient shuffles."),
    fold_seed: int | None = typer.Option(
        None, help="Seed for the folds alone (default: --seed). Keep it and change --seed to "
                   "see a recipe's training luck on the same patients."),
    val_frac: float = typer.Option(
        0.2, help="Share of each training fold's patients held out for checkpointing, "
                  "calibration and threshold."),
    max_folds: int | None = typer.Option(
        None, help="Train at most this many new folds now (a re-run does the rest)."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples (over patients) for the CIs."),
    export_ensemble: bool = typer.Option(
        False, "--export-ensemble", help="When all folds are done, write DIR/ensemble: one "
                                         "bundle whose graph averages the folds' P(IDC)."),
    runtime: str | None = runtime_option(),
    recipe: dict | None = None,
) -> None:
    """Patient-grouped, stratified K-fold cross-validation of a training recipe."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see `idcscan train`
    apply_runtime(runtime)
    from idcscan.training.cv import CVSettings, run_cv

    recipe = dict(recipe or {})
    fold_seed = recipe.get("seed", 0) if fold_seed is None else fold_seed
    settings = CVSettings(folds=folds, repeats=repeats, seed=fold_seed,
                          val_frac=val_frac, max_folds=max_folds, n_boot=n_boot,
                          progress=recipe.get("progress", True),
                          export_ensemble=export_ensemble)
    print_disclaimer()
    result = run_cv(data, folder, recipe, settings)
    table = Table(title=f"{result['folds_done']} of {result['folds_planned']} folds")
    for col in ("metric", "mean ± sd", "pooled OOF (95% CI)"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    pooled = result["pooled"] or {}
    for key in ("auc", "balanced_accuracy", "f1"):
        mean, sd = result["mean"][key], result["sd"][key]
        ci = (pooled.get("ci95") or {}).get(key) or [None, None]
        table.add_row(
            key, "n/a" if mean is None else f"{mean:.4f} ± {sd or 0:.4f}",
            "n/a" if pooled.get(key) is None else
            f"{pooled[key]:.4f} ({ci[0]:.4f}-{ci[1]:.4f})" if ci[0] is not None
            else f"{pooled[key]:.4f}")
    out.print(table)
    if not result["complete"]:
        console.print("Not all folds are done; run the same command again to continue.")
    elif result.get("ensemble"):
        out.print(f"Ensemble bundle: {result['ensemble']}", highlight=False, soft_wrap=True)
    print_disclaimer()
    out.print(f"Report: {folder / 'cv.md'}", highlight=False, soft_wrap=True)
