"""``train(config)``: packed dataset in, run directory with an exported bundle out.

RUN/
  config.json        resolved settings + the fitted schedule (what ``--resume`` reads back)
  metrics.csv        one row per validation round;  curves.png: its plot
  checkpoints/       Lightning checkpoints (best by validation AUC, and last)
  logs/              Lightning's step-level CSV log
  bundle/            model.onnx + model.json, calibrated, with threshold and provenance
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from idcscan import DISCLAIMER
from idcscan.errors import IdcscanError
from idcscan.model.config import CONFIG_NAME, TrainConfig, write_json
from idcscan.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

CHECKPOINTS = "checkpoints"
BUNDLE = "bundle"
METRICS = "metrics.csv"
CURVES = "curves.png"
#: Seconds that do not scale with the schedule: Trainer start/teardown, loading the best
#: checkpoint, calibration, verifying the ONNX file, plotting, interpreter exit.
POST_FIT_S = 8.0
#: Per validation round: checkpoint writes and dataloader rebuilds.
ROUND_OVERHEAD_S = 0.6
#: With --tta, calibration and the threshold are fitted on the 8-view outputs of at most this
#: many validation patches (a seeded sample): 8 views of the whole split cost too much of a
#: CPU budget.
TTA_VAL_MAX = 2048


def _needs_tta_val(cfg: TrainConfig) -> bool:
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


class _DropTips(logging.Filter):
    """Lightning's notices that are not for our users: a cloud-logger advert, the GPU/TPU/HPU
    inventory (the header says what runs where), and "`Trainer.fit` stopped: max_epochs
    reached", printed before the last epoch's bar and meaning only that training ended as
    planned."""

    NOISE = ("Tip:", "GPU available", "TPU available", "HPU available", "IPU available",
             "`Trainer.fit` stopped", "LOCAL_RANK:")

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not any(word in text for word in self.NOISE)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())


def _is_child_process() -> bool:
    """A DDP worker started by Lightning (or torchrun) rather than the user's command."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def preprocessing_for(backbone: str, input_size: int, normalize: str = "backbone"
                      ) -> Preprocessing:
    """In-graph preprocessing. ``normalize`` "backbone" matches the backbone's pretraining
    normalisation (Lite0's TF weights expect mean = std = 0.5, most timm models ImageNet's
    statistics); "imagenet" and "half" (mean = std = 0.5) force one."""
    if normalize == "half":
        return Preprocessing(input_size=input_size, mean=(0.5,) * 3, std=(0.5,) * 3)
    if normalize == "imagenet":
        return Preprocessing(input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    cfg = timm.get_pretrained_cfg(backbone)
    mean = tuple(cfg.mean) if cfg is not None and cfg.mean else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None and cfg.std else IMAGENET_STD
    return Preprocessing(input_size=input_size, mean=mean, std=std)


def build_network(cfg: TrainConfig):
    from idcscan.model.network import IDCNet

    if not timm.is_model(cfg.backbone):
        raise IdcscanError(
            f"Unknown backbone {cfg.backbone!r}; use a timm model name such as "
            "tf_efficientnet_lite0 or efficientnet_b0 (see timm.list_models())."
        )
    pre = preprocessing_for(cfg.backbone, cfg.input_size, cfg.normalize)
    if cfg.stain_norm != "none":
        if cfg.stain_target is None:
            raise IdcscanError("--stain-norm needs a fitted target; train() fits it.")
        pre = dataclasses.replace(pre, stain_norm=cfg.stain_target)
    return IDCNet(cfg.backbone, pre, drop_path_rate=cfg.drop_path_rate, head=cfg.head)


def _sample(images: torch.Tensor, seed: int, n: int = 4096) -> np.ndarray:
    """A seeded sample of the training patches (for stain statistics)."""
    pick = np.random.default_rng(seed).permutation(len(images))[:n]
    return images[torch.from_numpy(np.sort(pick))].numpy()


def fit_stain_target(images: torch.Tensor, seed: int) -> dict[str, Any]:
    """The Reinhard target from (a seeded sample of) the training patches."""
    from idcscan.stain import fit_target

    return fit_target(_sample(images, seed)).to_dict()


def _precision(cfg: TrainConfig, accelerator: str) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _accelerator(cfg: TrainConfig) -> str:
    if cfg.accelerator != "auto":
        return cfg.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def _autocast(precision: str, accelerator: str):
    if accelerator != "gpu" or "mixed" not in precision:
        return None
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def _resolve_pos_weight(spec: str, neg: int, pos: int) -> float:
    if spec == "none":
        return 1.0
    if spec == "balanced":
        return neg / max(pos, 1)
    return float(spec)


def _load_resume(cfg: TrainConfig, run_dir: Path) -> tuple[TrainConfig, dict[str, Any], Path]:
    saved_path = run_dir / CONFIG_NAME
    last = run_dir / CHECKPOINTS / "last.ckpt"
    if not saved_path.is_file() or not last.is_file():
        raise IdcscanError(
            f"Nothing to resume in {run_dir} (need {CONFIG_NAME} and {CHECKPOINTS}/last.ckpt); "
            "start the run without --resume."
        )
    import json

    saved = json.loads(saved_path.read_text())
    resumed = TrainConfig.from_dict(saved["config"])
    resumed.resume = True
    resumed.progress = cfg.progress
    resumed.max_minutes = cfg.max_minutes  # a new hard stop for the remaining work, if given
    resumed.out = cfg.out  # where the run lives now (it may have been moved)
    if cfg.splits is not None:
        resumed.splits = cfg.splits
    return resumed, saved, last


def _write_config(run_dir: Path, cfg: TrainConfig, extra: dict[str, Any]) -> None:
    write_json(run_dir / CONFIG_NAME, {"config": cfg.to_dict(), **extra})


def _best_state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own checkpoint
    return {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def _val_logits(net, images: torch.Tensor, batch: int = 256, tta: bool = False) -> np.ndarray:
    """Logits of the (exported) network; with ``tta`` the graph's 8-view mean."""
    from idcscan.model.network import DihedralTTA

    net.eval()
    if tta:
        net, batch = DihedralTTA(net), max(1, batch // 8)
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out.append(net(images[s: s + batch]).float())
    return torch.cat(out).numpy()


def train(config: TrainConfig, started: float | None = None) -> TrainResult:
    """Train, calibrate and export; ``started`` (time.time()) anchors ``max_minutes``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from idcscan.data.augment import augment_preset, randstain_stats
    from idcscan.data.datamodule import IDCDataModule
    from idcscan.model.callbacks import RoundMetricsCSV, ScheduleFit
    from idcscan.model.module import IDCModule
    from idcscan.model.progress_bar import CompactProgressBar
    from idcscan.model.schedule import Schedule, budget_schedule, epoch_schedule, \
        estimate_export_s
    from idcscan.model.weights import LoadedWeights, load_pretrained

    started = time.time() if started is None else started
    _quiet_lightning()
    cfg = config
    cfg.validate()
    run_dir = Path(cfg.out)
    child = _is_child_process()
    saved: dict[str, Any] = {}
    resume_ckpt: Path | None = None
    if cfg.resume:
        cfg, saved, resume_ckpt = _load_resume(cfg, run_dir)
    elif (run_dir / CONFIG_NAME).exists() and not child:
        raise IdcscanError(
            f"{run_dir} already holds a training run; pass --resume to continue it, or choose "
            "another --out."
        )
    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes else None

    accelerator = _accelerator(cfg)
    precision = _precision(cfg, accelerator)
    if accelerator == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.devices))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = IDCDataModule(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed,
                       num_workers=cfg.num_workers, splits=cfg.splits)
    dm.load()
    stats = randstain_stats(_sample(dm.train_images, cfg.seed)) if cfg.randstain else None
    dm.augment = augment_preset(cfg.augment, cfg.hed_sigma, cfg.randstain, stats)
    if cfg.stain_norm != "none" and cfg.stain_target is None:
        cfg.stain_target = fit_stain_target(dm.train_images, cfg.seed)
    net = build_network(cfg)
    if cfg.resume or child:
        # Weights come from the checkpoint (resume) or DDP's broadcast from rank 0 (child).
        loaded = LoadedWeights(cfg.weights, "restored from checkpoint" if cfg.resume
                               else "broadcast from rank 0")
        if saved.get("weights"):
            loaded.details = {k: v for k, v in saved["weights"].items()
                              if k not in ("spec", "source")}
            loaded.source = saved["weights"].get("source", loaded.source)
    else:
        loaded = load_pretrained(net, cfg.weights)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)

    neg, pos = dm.class_counts()
    pos_weight = _resolve_pos_weight(cfg.pos_weight, neg, pos)
    steps_per_pass = dm.steps_per_pass(cfg.devices)
    schedule: Schedule | None = None
    if saved.get("schedule"):
        schedule = Schedule.from_dict(saved["schedule"])
    elif deadline is None:
        schedule = epoch_schedule(steps_per_pass, cfg.frozen_epochs, cfg.finetune_epochs,
                                  cfg.warmup_fraction, cfg.final_lr_fraction)
    module = IDCModule(net, schedule, unfreeze=cfg.unfreeze, lr_head=cfg.lr_head,
                       lr_backbone=cfg.lr_backbone, weight_decay=cfg.weight_decay,
                       label_smoothing=cfg.label_smoothing, pos_weight=pos_weight,
                       seed=cfg.seed)
    if schedule is not None:
        dm.set_schedule(schedule.epoch_steps)

    export_s = estimate_export_s(net)

    def make_schedule(rates, seconds_left: float) -> Schedule:
        fixed = POST_FIT_S + ROUND_OVERHEAD_S * (cfg.val_rounds + 1)
        # Scoring validation again after fit: 8 views (of a sample) for TTA; once for EMA.
        if _needs_tta_val(cfg):
            fixed += rates.val_pass_s * 8 * min(1.0, TTA_VAL_MAX / max(1, len(dm.val_labels)))
        elif cfg.select == "ema":
            fixed += rates.val_pass_s
        return budget_schedule(
            rates, seconds_left, steps_per_pass, cfg.frozen_epochs, cfg.finetune_epochs,
            frozen_time_fraction=cfg.frozen_time_fraction, val_rounds=cfg.val_rounds,
            warmup_fraction=cfg.warmup_fraction, fixed_cost_s=fixed,
            final_lr_fraction=cfg.final_lr_fraction,
        )

    run_info = {
        "weights": loaded.to_dict(),
        "pos_weight": pos_weight,
        "accelerator": accelerator,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "train_patches": dm.n_train,
        "steps_per_pass": steps_per_pass,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
    }

    def on_schedule(sched: Schedule, _deadline: float | None) -> None:
        run_info["schedule"] = sched.to_dict()
        _write_config(run_dir, cfg, run_info)

    strategy: Any = "auto"
    if cfg.devices > 1:
        from lightning.pytorch.strategies import DDPStrategy

        # Phase 1 leaves the trainable backbone layers without gradients.
        strategy = DDPStrategy(find_unused_parameters=True,
                               process_group_backend="gloo" if accelerator == "cpu" else None)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINTS, filename="best-epoch{epoch:02d}",
        auto_insert_metric_name=False, monitor="val/auc", mode="max", save_top_k=1,
        save_last=True,
    )
    callbacks: list[Any] = [
        ScheduleFit(dm, deadline=deadline, make_schedule=make_schedule, export_s=export_s,
                    autocast=_autocast(precision, accelerator), on_schedule=on_schedule),
        checkpoint,
        RoundMetricsCSV(run_dir / METRICS, started),
    ]
    ema = None
    if cfg.select == "ema":
        from idcscan.model.ema import WeightEMA

        ema = WeightEMA(cfg.ema_decay)
        callbacks.append(ema)
    if cfg.progress:
        callbacks.append(CompactProgressBar())
    run_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*reload_dataloaders_every_n_epochs.*")
        warnings.filterwarnings("ignore", ".*It is recommended to use `self.log.*sync_dist.*")
        warnings.filterwarnings("ignore", ".*all_gather is deprecated.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        trainer = L.Trainer(
            accelerator=accelerator, devices=cfg.devices, strategy=strategy,
            precision=precision, max_epochs=len(schedule.epoch_steps) if schedule else 1,
            num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1,
            use_distributed_sampler=False, logger=CSVLogger(run_dir, name="logs", version=""),
            callbacks=callbacks, enable_model_summary=False, enable_progress_bar=cfg.progress,
            log_every_n_steps=10, default_root_dir=run_dir, benchmark=accelerator == "gpu",
        )
        if schedule is not None and trainer.is_global_zero and not cfg.resume:
            on_schedule(schedule, deadline)
        trainer.fit(module, datamodule=dm, ckpt_path=resume_ckpt)
    if not trainer.is_global_zero:
        return TrainResult(run_dir, None, None, {}, 1.0, 0.5,
                           module.schedule.to_dict() if module.schedule else {},
                           time.time() - started)
    return _finish(cfg, run_dir, module, dm, checkpoint, run_info, started, ema)


def _threshold(rule: str, labels: np.ndarray, probs: np.ndarray) -> float:
    from idcscan.evaluation.metrics import choose_threshold

    return choose_threshold(labels, probs) if rule == "balanced" else float(rule)


def _finish(cfg: TrainConfig, run_dir: Path, module, dm, checkpoint, run_info: dict[str, Any],
            started: float, ema=None) -> TrainResult:
    """Chosen weights -> prior correction -> temperature -> threshold -> bundle -> checks."""
    from idcscan.evaluation.metrics import binary_metrics
    from idcscan.model.calibration import calibrated_probs, fit_temperature
    from idcscan.model.export import export_bundle
    from idcscan.model.history import plot_curves

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
    val_tta = _needs_tta_val(cfg)
    if val_tta:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(
            len(dm.val_labels))[:TTA_VAL_MAX])
        logits = _val_logits(net, dm.val_images[keep], tta=True).astype(np.float64)
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
        net, tmp, tta=cfg.tta,
        calibration={"method": cfg.calibration, "temperature": temperature},
        threshold=threshold,
        metrics={"validation": validation},
        data=dm.provenance(),
        training=training,
    )
    _check_onnx(net, tmp, dm.val_images[:32], tta=cfg.tta)
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
    _write_config(run_dir, cfg, {**run_info, "schedule": schedule, "result": result_info})
    return TrainResult(run_dir, bundle_dir, best_path, validation, temperature, threshold,
                       schedule, elapsed)


def _check_onnx(net, bundle_dir: Path, images: torch.Tensor, tol: float = 1e-3,
                tta: bool = False) -> None:
    """The exported graph must score real patches like the network it came from."""
    from idcscan.inference.predictor import Predictor

    if len(images) == 0:
        return
    expected = _val_logits(net, images, tta=tta)
    got = Predictor(bundle_dir).logits(images.numpy())
    diff = float(np.abs(expected - got).max())
    if not diff <= tol:
        raise RuntimeError(f"ONNX export differs from the PyTorch network by {diff:.2e} "
                           f"(> {tol}); this is a bug in idcscan's export.")
