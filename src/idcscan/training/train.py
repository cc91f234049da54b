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
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from idcscan.errors import IdcscanError
from idcscan.training.config import CHECKPOINTS, CONFIG_NAME, METRICS, TrainConfig
from idcscan.training.finish import (
    TTA_VAL_MAX,
    TrainResult,
    finish,
    needs_tta_val,
    write_run_config,
)
from idcscan.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

#: Seconds that do not scale with the schedule: Trainer start/teardown, loading the best
#: checkpoint, calibration, verifying the ONNX file, plotting, interpreter exit.
POST_FIT_S = 8.0
#: Per validation round: checkpoint writes and dataloader rebuilds.
ROUND_OVERHEAD_S = 0.6


def post_fit_cost_s(cfg: TrainConfig, val_pass_s: float, n_val: int) -> float:
    """Seconds of a budgeted run that do not scale with its steps, reserved before planning
    them: without this a run with more TTA views or EMA would overrun ``--max-minutes``.
    Validation is scored again after fit through every TTA view (of at most ``TTA_VAL_MAX``
    patches) when calibration or the threshold need TTA outputs, or once for EMA weights."""
    fixed = POST_FIT_S + ROUND_OVERHEAD_S * (cfg.val_rounds + 1)
    if needs_tta_val(cfg):
        fixed += val_pass_s * cfg.tta_views * min(1.0, TTA_VAL_MAX / max(1, n_val))
    elif cfg.select == "ema":
        fixed += val_pass_s
    return fixed
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
    from idcscan.training.network import IDCNet

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


def fit_stain_target(cfg: TrainConfig, images: torch.Tensor) -> dict[str, Any]:
    """The normalisation target: Reinhard's from (a seeded sample of) the training patches;
    Macenko's is the published reference H&E (nothing fitted)."""
    from idcscan.stain import MacenkoNorm, fit_target, macenko_reference

    if cfg.stain_norm == "macenko":
        return MacenkoNorm(macenko_reference()).to_dict()
    return fit_target(_sample(images, cfg.seed)).to_dict()


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


def _resolve_pos_weight(spec: str, neg: float, pos: float) -> float:
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


def train(config: TrainConfig, started: float | None = None) -> TrainResult:
    """Train, calibrate and export; ``started`` (time.time()) anchors ``max_minutes``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from idcscan.data.augment import augment_preset, randstain_stats
    from idcscan.data.datamodule import IDCDataModule
    from idcscan.training.callbacks import RoundMetricsCSV, ScheduleFit
    from idcscan.training.module import IDCModule
    from idcscan.stain import MacenkoNorm
    from idcscan.training.callbacks import CompactProgressBar
    from idcscan.training.rates import estimate_export_s
    from idcscan.training.schedule import Schedule, budget_schedule, epoch_schedule
    from idcscan.training.weights import LoadedWeights, load_pretrained

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
                       num_workers=cfg.num_workers, splits=cfg.splits,
                       patient_balance=cfg.patient_balance, train_on_val=cfg.train_on_val)
    dm.load()
    stats = randstain_stats(_sample(dm.train_images, cfg.seed)) if cfg.randstain else None
    dm.augment = augment_preset(cfg.augment, cfg.hed_sigma, cfg.randstain, stats)
    if cfg.stain_norm != "none" and cfg.stain_target is None:
        cfg.stain_target = fit_stain_target(cfg, dm.train_images)
    if cfg.stain_norm == "macenko":
        dm.normalise_per_patient(MacenkoNorm.from_dict(cfg.stain_target))
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
        # --frozen-time-fraction 0 means no frozen phase, with or without a time budget.
        frozen = cfg.frozen_epochs if cfg.frozen_time_fraction > 0 else 0.0
        schedule = epoch_schedule(steps_per_pass, frozen, cfg.finetune_epochs,
                                  cfg.warmup_fraction, cfg.final_lr_fraction)
    module = IDCModule(net, schedule, unfreeze=cfg.unfreeze, lr_head=cfg.lr_head,
                       lr_backbone=cfg.lr_backbone, weight_decay=cfg.weight_decay,
                       label_smoothing=cfg.label_smoothing, pos_weight=pos_weight,
                       seed=cfg.seed)
    if schedule is not None:
        dm.set_schedule(schedule.epoch_steps)

    export_s = estimate_export_s(net)

    def make_schedule(rates, seconds_left: float) -> Schedule:
        fixed = post_fit_cost_s(cfg, rates.val_pass_s, len(dm.val_labels))
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
        write_run_config(run_dir, cfg, run_info)

    strategy: Any = "auto"
    if cfg.devices > 1:
        from lightning.pytorch.strategies import DDPStrategy

        # Phase 1 leaves the trainable backbone layers without gradients.
        strategy = DDPStrategy(find_unused_parameters=True,
                               process_group_backend="gloo" if accelerator == "cpu" else None)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINTS, filename="best-epoch{epoch:02d}",
        auto_insert_metric_name=False, monitor="val/auc", mode="max", save_top_k=1,
    )
    # last.ckpt after every round. (Lightning's save_last=True writes it only in rounds that
    # also save a best checkpoint, so it lagged behind whenever validation AUC did not improve:
    # --resume replayed rounds, and the EMA in it was not the final one.)
    latest = ModelCheckpoint(dirpath=run_dir / CHECKPOINTS, filename="last", monitor=None,
                             save_top_k=1, enable_version_counter=False)
    callbacks: list[Any] = [
        ScheduleFit(dm, deadline=deadline, make_schedule=make_schedule, export_s=export_s,
                    autocast=_autocast(precision, accelerator), on_schedule=on_schedule),
        checkpoint,
        latest,
        RoundMetricsCSV(run_dir / METRICS, started),
    ]
    ema = None
    if cfg.select == "ema":
        from idcscan.training.callbacks import WeightEMA

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
    return finish(cfg, run_dir, module, dm, checkpoint, run_info, started, ema)


