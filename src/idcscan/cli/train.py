"""CLI command: ``idcscan train DATA --out RUN`` (a thin layer over ``idcscan.model.train``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from idcscan.cli.app import app, console, out, print_disclaimer
from idcscan.model.config import TrainConfig

_D = TrainConfig(data="", out="")


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
        packed = load_packed(data)
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
def train(
    data: Path = typer.Argument(..., help="Packed dataset folder written by `idcscan prepare`."),
    run: Path = typer.Option(..., "--out", help="Run folder (checkpoints, metrics, bundle/)."),
    backbone: str = typer.Option(_D.backbone, help="Any timm model name."),
    weights: str = typer.Option(
        _D.weights, help="imagenet | none | PATH (.safetensors/.pth state_dict)."
    ),
    input_size: int = typer.Option(_D.input_size, help="Network input size (patches are 50 px)."),
    frozen_epochs: float = typer.Option(
        _D.frozen_epochs, help="Phase 1 (frozen backbone) length cap, in passes over train."
    ),
    finetune_epochs: float = typer.Option(
        _D.finetune_epochs, help="Phase 2 (unfrozen backbone) length cap, in passes over train."
    ),
    batch_size: int = typer.Option(_D.batch_size, help="Patches per step and device."),
    devices: int = typer.Option(_D.devices, help="Devices (GPUs, or CPU processes) for DDP."),
    max_minutes: float | None = typer.Option(
        None, help="Time budget for the whole command; the schedule is fitted to it."
    ),
    seed: int = typer.Option(_D.seed, help="Seed for sampling, augmentation and init."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    unfreeze: str = typer.Option(
        _D.unfreeze,
        help="Phase 2 trains 'all' of the backbone, its last N layers (30), or a share (0.7).",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a classifier on a prepared dataset and export RUN/bundle (ONNX + model card)."""
    started = process_start_time()
    # Busy-waiting OpenMP threads collapse throughput when the cores are shared (measured: 10x
    # slower on 2 busy cores); passive waiting costs little when they are not. Must precede
    # the torch import to take effect.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from idcscan.model.train import train as run_training  # heavy: torch, lightning, timm

    config = TrainConfig(
        data=str(data), out=str(run), backbone=backbone, weights=weights, input_size=input_size,
        frozen_epochs=frozen_epochs, finetune_epochs=finetune_epochs, batch_size=batch_size,
        devices=devices, max_minutes=max_minutes, seed=seed, resume=resume, unfreeze=unfreeze,
        progress=progress,
    )
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
