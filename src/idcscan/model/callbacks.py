"""Lightning callbacks of a training run: fit the schedule to the budget, log per-round metrics.

The schedule is fitted inside ``setup`` because that is the first moment the DDP process group
exists: rank 0 measures and decides, every rank receives the same schedule (and rank 0's
deadline) by broadcast, so all ranks run the same number of steps and none waits forever.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from idcscan.model.schedule import Rates, Schedule, measure_rates, replan

METRIC_COLUMNS = ["epoch", "phase", "step", "elapsed_s", "train_loss", "val_loss", "val_auc",
                  "lr_head", "lr_backbone"]


class ScheduleFit(L.Callback):
    """Fits the two-phase schedule to the time left (rank 0 measures), and stops at a hard
    deadline as a safety net should the machine slow down mid-run."""

    def __init__(self, datamodule: Any, *, deadline: float | None, make_schedule: Callable[
            [Rates, float], Schedule], export_s: float, autocast: Any = None,
            on_schedule: Callable[[Schedule, float | None], None] | None = None,
            hard_stop_slack_s: float = 0.0) -> None:
        self.datamodule = datamodule
        self.deadline = deadline  # wall clock (time.time()), rank 0's value wins
        self.make_schedule = make_schedule
        self.export_s = export_s
        self.autocast = autocast
        self.on_schedule = on_schedule
        self.hard_stop_slack_s = hard_stop_slack_s
        self.hard_deadline: float | None = None
        self.rates: Rates | None = None
        self._round_start = self._val_start = 0.0
        self._val_s: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        payload: dict[str, Any] | None = None
        if pl_module.schedule is None and trainer.is_global_zero:
            device = trainer.strategy.root_device
            t1, t2, tv = measure_rates(pl_module, self.datamodule, device, autocast=self.autocast)
            rates = Rates(t1, t2, tv, self.datamodule.val_batch_count(trainer.world_size),
                          self.export_s)
            self.rates = rates
            left = (self.deadline - time.time()) if self.deadline is not None else float("inf")
            payload = {"schedule": self.make_schedule(rates, left).to_dict(),
                       "deadline": self.deadline}
        elif trainer.is_global_zero:
            payload = {"schedule": pl_module.schedule.to_dict(), "deadline": self.deadline}
        payload = trainer.strategy.broadcast(payload, src=0)
        schedule = Schedule.from_dict(payload["schedule"])
        self.deadline = payload["deadline"]
        pl_module.schedule = schedule
        self.datamodule.set_schedule(schedule.epoch_steps)
        # Rounds are epochs whose lengths come from the dataloaders. No max_steps: with it,
        # Lightning treats training as iteration-based and resumes an epoch-end checkpoint as
        # if mid-epoch, replaying the epoch end and losing a round.
        trainer.fit_loop.max_epochs = len(schedule.epoch_steps)
        if self.deadline is not None and not schedule.details.get("budget_too_small"):
            # The last moment training can stop and still export on time. The plan ends well
            # before it; this only fires when the machine slows down sharply in the last round.
            tail = schedule.details.get("tail_cost_s", self.export_s)
            self.hard_deadline = self.deadline - tail + self.hard_stop_slack_s
        if self.on_schedule is not None and trainer.is_global_zero:
            self.on_schedule(schedule, self.deadline)

    # ------------------------------------------------------------------ closed-loop re-planning
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._round_start = time.time()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_s = time.time() - self._val_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule: Schedule = pl_module.schedule
        if self.deadline is None or schedule.details.get("mode") != "time budget":
            return
        new_steps = None
        if trainer.is_global_zero:
            epoch = trainer.current_epoch
            steps = schedule.epoch_steps[epoch]
            train_s = max(1e-6, self._val_start - self._round_start)
            if epoch >= schedule.phase1_epochs:
                step_s = train_s / max(1, steps)
            elif self.rates is not None:
                # No phase-2 step seen yet. (Scaling the probe by phase 1's actual pace was
                # tried: forward-only steps predict backward-heavy ones badly, it was worse.)
                step_s = self.rates.phase2_step_s
            else:  # resumed after phase 1 without a probe: scale phase 1's rate
                step_s = 2.5 * train_s / max(1, steps)
            val_s = self._val_s if self._val_s is not None else 0.0
            new_steps = replan(schedule, epoch + 1, self.deadline - time.time(), step_s, val_s)
            if new_steps is not None and new_steps != schedule.epoch_steps:
                schedule.details.setdefault("replans", []).append(
                    {"after_round": epoch, "step_s": round(step_s, 4),
                     "val_s": round(val_s, 2), "epoch_steps": new_steps})
        if trainer.world_size > 1:
            new_steps = trainer.strategy.broadcast(new_steps, src=0)
        if new_steps is None or new_steps == schedule.epoch_steps:
            return
        schedule.resize(new_steps, trainer.current_epoch + 1)
        self.datamodule.set_schedule(schedule.epoch_steps)
        if self.on_schedule is not None and trainer.is_global_zero:
            self.on_schedule(schedule, self.deadline)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.hard_deadline is None:
            return
        stop = time.time() > self.hard_deadline
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            trainer.should_stop = True


class RoundMetricsCSV(L.Callback):
    """One row per validation round in ``RUN/metrics.csv``; a resumed run keeps the rows of the
    rounds its checkpoint covers and continues the file (and the elapsed time) from there."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = Path(path)
        self.started = started
        self.offset_s = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.path.is_file():
            return
        with open(self.path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < trainer.current_epoch]
        if rows:
            self.offset_s = float(rows[-1]["elapsed_s"])
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        lrs = {"head": None, "backbone": None}
        for opt in trainer.optimizers:
            for g in opt.param_groups:
                lrs[g.get("part", "head")] = g["lr"]

        def val(key: str) -> float | None:
            v = m.get(key)
            return float(v) if isinstance(v, torch.Tensor | float) else None

        row = {
            "epoch": trainer.current_epoch,
            "phase": pl_module.phase,
            "step": trainer.global_step,
            "elapsed_s": round(self.offset_s + time.time() - self.started, 2),
            "train_loss": val("train/loss_epoch"),
            "val_loss": val("val/loss"),
            "val_auc": val("val/auc"),
            "lr_head": lrs["head"],
            "lr_backbone": lrs["backbone"],
        }
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
