"""CLI command: ``idcscan train DATA --out RUN`` (a thin layer over ``idcscan.training.train``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from idcscan.cli.app import app, console, out, print_disclaimer
from idcscan.cli.recipe import recipe_options
from idcscan.training.config import TrainConfig



def process_start_time() -> float:
    """When this process started (epoch seconds), so ``--max-minutes`` covers interpreter
    start-up and imports too; falls back to now where /proc is not available."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        started = boot + start_ticks / ticks
        return started if 0 <= time.time() - started < 3600 else time.time()
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def _is_worker() -> bool:
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def train_header(config: TrainConfig) -> str:
    """One line before training: what is trained, on which data, for how long, to where."""
    from idcscan.data.packed import load_packed

    weights = {"imagenet": "ImageNet weights", "none": "random init"}.get(
        config.weights, f"weights {Path(config.weights).name}"
    )
    data = Path(config.data)
    try:
        packed = load_packed(data, config.splits)  # cv folds train on a splits file
        parts = []
        for split, label in (("train", "train"), ("val", "validation")):
            sel = packed.split == split
            parts.append(f"{int(sel.sum()):,} {label} patches from "
                         f"{len(set(packed.patient[sel].tolist()))} patients")
        what = "; ".join(parts)
    except Exception:  # the training itself reports a bad data folder properly
        what = "the prepared dataset"
    if config.max_minutes is not None:
        budget = f"{config.max_minutes:g} min for the whole command (schedule fitted to it)"
    else:
        budget = (f"up to {config.frozen_epochs:g} + {config.finetune_epochs:g} passes over "
                  "the train split (frozen, then fine-tuned)")
    return (f"Training {config.backbone} ({weights}) on {data.name}: {what}. Budget: {budget}. "
            f"Output: {Path(config.out) / 'bundle'}")


@app.command()
@recipe_options
def train(
    data: Path = typer.Argument(..., help="Packed dataset folder written by `idcscan prepare`."),
    run: Path = typer.Option(..., "--out", help="Run folder (checkpoints, metrics, bundle/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    splits: Path | None = typer.Option(
        None, help="CSV (row, split) replacing the dataset's split column (cv writes these)."),
    recipe: dict | None = None,
) -> None:
    """Train a classifier on a prepared dataset and export RUN/bundle (ONNX + model card)."""
    started = process_start_time()
    # Busy-waiting OpenMP threads collapse throughput when the cores are shared (measured: 10x
    # slower on 2 busy cores); passive waiting costs little when they are not. Must precede
    # the torch import to take effect.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from idcscan.training.train import train as run_training  # heavy: torch, lightning, timm

    config = TrainConfig(data=str(data), out=str(run), resume=resume,
                         splits=str(splits) if splits else None, **(recipe or {}))
    if not _is_worker():
        console.print(train_header(config), highlight=False)
    result = run_training(config, started=started)
    if result.bundle_dir is None:  # a DDP worker process: rank 0 reports
        return
    v = result.validation
    console.print(
        f"validation: AUC {v.get('auc') or float('nan'):.4f}, balanced accuracy "
        f"{v.get('balanced_accuracy') or float('nan'):.4f} at the review threshold "
        f"P(IDC) >= {result.threshold:.2%} (temperature {result.temperature:.3f}); "
        f"{result.elapsed_s / 60:.1f} min",
        highlight=False,
    )
    out.print(str(result.bundle_dir))
    print_disclaimer()
