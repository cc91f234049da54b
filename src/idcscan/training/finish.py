"""After fit: the chosen weights, prior correction, temperature and threshold on validation,
then the bundle export and its check against the network, and the run's training curves
(``idcscan.training.train`` calls ``finish`` on rank 0)."""

from __future__ import annotations

import csv
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from idcscan import DISCLAIMER
from idcscan.runtime.model_card import validation_use
from idcscan.training.config import BUNDLE, CONFIG_NAME, CURVES, METRICS, TrainConfig, write_json

#: With --tta, calibration and the threshold are fitted on the TTA outputs of at most this
#: many validation patches (a seeded sample): every view of the whole split cost too much of a
#: CPU budget.
TTA_VAL_MAX = 2048


def needs_tta_val(cfg: TrainConfig) -> bool:
    """Whether anything fitted on validation (temperature, threshold) must see TTA outputs."""
    return cfg.tta and (cfg.calibration != "none" or cfg.threshold_rule == "balanced")


@dataclass
class TrainResult:
    run_dir: Path
    bundle_dir: Path | None  # None on DDP ranks other than 0
    best_checkpoint: Path | None
    validation: dict[str, Any]
    temperature: float
    threshold: float
    schedule: dict[str, Any]
    elapsed_s: float


def write_run_config(run_dir: Path, cfg: TrainConfig, extra: dict[str, Any]) -> None:
    write_json(run_dir / CONFIG_NAME, {"config": cfg.to_dict(), **extra})


def _best_state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own checkpoint
    return {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def _val_logits(net, images: torch.Tensor, batch: int = 256, tta: bool = False,
                views: int = 8) -> np.ndarray:
    """Logits of the (exported) network; with ``tta`` the graph's mean over ``views`` views."""
    from idcscan.training.network import DihedralTTA

    net.eval()
    if tta:
        net, batch = DihedralTTA(net, views), max(1, batch // views)
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out.append(net(images[s: s + batch]).float())
    return torch.cat(out).numpy()


def _threshold(rule: str, labels: np.ndarray, probs: np.ndarray) -> float:
    from idcscan.evaluation.metrics import choose_threshold

    return choose_threshold(labels, probs) if rule == "balanced" else float(rule)


def finish(cfg: TrainConfig, run_dir: Path, module, dm, checkpoint, run_info: dict[str, Any],
            started: float, ema=None) -> TrainResult:
    """Chosen weights -> prior correction -> temperature -> threshold -> bundle -> checks."""
    from idcscan.evaluation.metrics import binary_metrics
    from idcscan.training.calibration import calibrated_probs, fit_temperature
    from idcscan.training.export import export_bundle

    net = module.net.cpu().float().eval()
    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None \
        else math.nan
    if cfg.select == "best" and best_path is not None and best_path.is_file():
        net.load_state_dict(_best_state(best_path))
    elif cfg.select == "ema" and ema is not None and ema.ema is not None:
        net.load_state_dict(ema.averaged_state())
    net = net.to(memory_format=torch.contiguous_format)
    cached = None
    if cfg.select == "best" and module.best_val is not None and \
            math.isclose(module.best_val["auc"], best_score, abs_tol=1e-7):
        cached = module.best_val
    elif cfg.select == "last" and module.last_val is not None and \
            module.last_val["step"] == module.global_step:
        cached = module.last_val
    val_tta = needs_tta_val(cfg)
    if val_tta:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(
            len(dm.val_labels))[:TTA_VAL_MAX])
        logits = _val_logits(net, dm.val_images[keep], tta=True,
                             views=cfg.tta_views).astype(np.float64)
        labels = dm.val_labels.numpy()[keep]
    elif cached is not None:
        logits = cached["logits"].numpy().astype(np.float64)
        labels = cached["labels"].numpy()
    else:
        logits = _val_logits(net, dm.val_images).astype(np.float64)
        labels = dm.val_labels.numpy()
    if cfg.calibration == "temperature":
        shift = module.fold_prior_correction()
        logits = logits + shift
        temperature = fit_temperature(logits, labels)
    else:
        shift, temperature = 0.0, 1.0
    probs = calibrated_probs(logits, temperature)
    threshold = _threshold(cfg.threshold_rule, labels, probs)
    validation = binary_metrics(labels, probs, threshold)
    validation["n_patients"] = int(len(np.unique(dm.packed.subset("val").patient)))
    # What these numbers are: the bundle's graph applies TTA when cfg.tta, but validation is
    # only scored with it where calibration or the threshold depend on it.
    validation["tta"] = val_tta

    schedule = module.schedule.to_dict() if module.schedule else {}
    training = {
        "config": cfg.to_dict(),
        "schedule": schedule,
        **{k: v for k, v in run_info.items() if k != "schedule"},
        "prior_correction": shift,
        "best_checkpoint": best_path.name if best_path else None,
        "best_val_auc": best_score,
        "selected_weights": {"best": "best validation AUC checkpoint", "last": "last step",
                             "ema": f"EMA of the weights, decay {cfg.ema_decay}"}[cfg.select],
        "augmentation": {"preset": cfg.augment, **dm.augment.to_dict()} if dm.augment
        else None,
        "loss": f"BCE with logits, pos_weight {run_info['pos_weight']:.3f}, "
                f"label smoothing {cfg.label_smoothing}",
        "optimizer": f"AdamW, cosine decay per step to {cfg.final_lr_fraction} of the peak "
                     f"after linear warm-up ({cfg.warmup_fraction} of phase 2)",
        "calibration": cfg.calibration,
        "threshold_rule": "max balanced accuracy on the validation patients"
        if cfg.threshold_rule == "balanced" else f"fixed at {cfg.threshold_rule}",
        "head": cfg.head,
    }
    bundle_dir = run_dir / BUNDLE
    tmp = run_dir / f".{BUNDLE}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    export_bundle(
        net, tmp, tta=cfg.tta, tta_views=cfg.tta_views,
        calibration={"method": cfg.calibration, "temperature": temperature},
        threshold=threshold,
        metrics={"validation": validation},
        data={**dm.provenance(), "trained_on": validation_use(
            cfg.select, cfg.calibration, cfg.threshold_rule, cfg.train_on_val)},
        training=training,
    )
    check_onnx(net, tmp, dm.val_images[:32], tta=cfg.tta, views=cfg.tta_views)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    tmp.replace(bundle_dir)

    if (run_dir / METRICS).is_file():
        plot_curves(run_dir / METRICS, run_dir / CURVES)
    elapsed = time.time() - started
    result_info = {"bundle": str(bundle_dir), "best_checkpoint": str(best_path),
                   "temperature": temperature, "threshold": threshold,
                   "validation": validation, "elapsed_s": round(elapsed, 2),
                   "disclaimer": DISCLAIMER}
    write_run_config(run_dir, cfg, {**run_info, "schedule": schedule, "result": result_info})
    return TrainResult(run_dir, bundle_dir, best_path, validation, temperature, threshold,
                       schedule, elapsed)


def check_onnx(net, bundle_dir: Path, images: torch.Tensor, tol: float = 1e-3,
                tta: bool = False, views: int = 8) -> None:
    """The exported graph must score real patches like the network it came from."""
    from idcscan.runtime.engine import REFERENCE_RUNTIME
    from idcscan.runtime.predictor import Predictor
    from idcscan.stain import StainGroup

    if len(images) == 0:
        return
    expected = _val_logits(net, images, tta=tta, views=views)
    # per-group stain normalisation already happened (the data module's, per patient)
    as_given = StainGroup(source=None, matrix=None)
    got = Predictor(bundle_dir, runtime=REFERENCE_RUNTIME).logits(images.numpy(), group=as_given)
    diff = float(np.abs(expected - got).max())
    if not diff <= tol:
        raise RuntimeError(f"ONNX export differs from the PyTorch network by {diff:.2e} "
                           f"(> {tol}); this is a bug in idcscan's export.")


# ----------------------------------------------------------------- training curves


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]


def plot_curves(metrics_csv: Path, out: Path) -> Path:
    """Two panels (loss; validation AUC) against optimizer step, phase 2 start marked."""
    rows = read_metrics(metrics_csv)
    fig = Figure(figsize=(9, 3.6), dpi=120)
    ax_loss, ax_auc = fig.subplots(1, 2)
    step = [r["step"] for r in rows]
    for key, label in (("train_loss", "train loss (weighted, smoothed)"),
                       ("val_loss", "validation loss")):
        pts = [(s, r[key]) for s, r in zip(step, rows) if r.get(key) is not None]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    pts = [(s, r["val_auc"]) for s, r in zip(step, rows) if r.get("val_auc") is not None]
    if pts:
        ax_auc.plot(*zip(*pts), marker="o", color="tab:green")
        best = max(pts, key=lambda p: p[1])
        ax_auc.annotate(f"best {best[1]:.4f}", best, textcoords="offset points", xytext=(0, -14),
                        ha="center")
    phase1 = [s for s, r in zip(step, rows) if r.get("phase") == 1]
    if phase1 and any(r.get("phase") == 2 for r in rows):
        for ax in (ax_loss, ax_auc):
            ax.axvline(max(phase1), color="grey", linestyle=":", label="backbone unfrozen")
    ax_loss.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    ax_auc.set(xlabel="optimizer step", ylabel="AUC", title="Validation AUC")
    ax_loss.legend(fontsize=8)
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(out)
    return out
