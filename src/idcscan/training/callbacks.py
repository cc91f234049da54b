"""Lightning callbacks of a training run: fit the schedule to the budget, log per-round metrics,
average the weights (``--select ema``) and show a one-line progress bar.

The schedule is fitted inside ``setup`` because that is the first moment the DDP process group
exists: rank 0 measures and decides, every rank receives the same schedule (and rank 0's
deadline) by broadcast, so all ranks run the same number of steps and none waits forever.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme
from timm.utils import ModelEmaV3

from idcscan.training.rates import measure_rates
from idcscan.training.schedule import Rates, Schedule, refit, replan

METRIC_COLUMNS = ["epoch", "phase", "step", "elapsed_s", "train_loss", "val_loss", "val_auc",
                  "lr_head", "lr_backbone"]


#: phase-2 re-fits per round (``schedule.refit``), from the speed of the steps since the last
REFITS_PER_ROUND = 16
#: ... and one sooner whenever this share of the time left has passed since the last
REFIT_TIME_SHARE = 0.05


class ScheduleFit(L.Callback):
    """Fits the two-phase schedule to the time left (rank 0 measures), re-fits it from the
    run's own speed after every round and many times within each phase-2 round, and stops at a
    hard deadline as a last safety net.

    ``clock`` (default ``time.time``) is the only time source: a test gives it a clock of its
    own, so that how a plan follows a slowed-down run does not depend on the machine running
    the test."""

    def __init__(self, datamodule: Any, *, deadline: float | None, make_schedule: Callable[
            [Rates, float], Schedule], export_s: float, autocast: Any = None,
            on_schedule: Callable[[Schedule, float | None], None] | None = None,
            hard_stop_slack_s: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.datamodule = datamodule
        self.deadline = deadline  # on ``clock`` (wall clock), rank 0's value wins
        self.make_schedule = make_schedule
        self.export_s = export_s
        self.autocast = autocast
        self.on_schedule = on_schedule
        self.hard_stop_slack_s = hard_stop_slack_s
        self.clock = clock
        self.hard_deadline: float | None = None
        self.rates: Rates | None = None
        self._round_start = self._val_start = 0.0
        self._val_s: float | None = None
        #: within a round: its data loader's length, and the last re-fit's time and step
        self._capacity = 0
        self._window = (0.0, 0)

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
            left = (self.deadline - self.clock()) if self.deadline is not None else float("inf")
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
        self._round_start = self.clock()
        self._window = (self._round_start, 0)
        schedule = pl_module.schedule
        if schedule is not None and trainer.current_epoch < len(schedule.epoch_steps):
            self._capacity = schedule.epoch_steps[trainer.current_epoch]

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_s = self.clock() - self._val_start

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
            new_steps = replan(schedule, epoch + 1, self.deadline - self.clock(), step_s, val_s)
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

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.hard_deadline is None:
            return
        new_steps, stop = None, False
        if trainer.is_global_zero:
            now = self.clock()
            new_steps = self._refit(trainer, pl_module.schedule, batch_idx + 1, now)
            stop = now > self.hard_deadline
        if trainer.world_size > 1:
            new_steps, stop = trainer.strategy.broadcast((new_steps, stop), src=0)
        schedule: Schedule = pl_module.schedule
        if new_steps is not None and new_steps != schedule.epoch_steps:
            schedule.resize(new_steps, trainer.current_epoch, in_round=batch_idx + 1)
            self.datamodule.set_schedule(schedule.epoch_steps)
            # The round's validation follows its (new) last step: Lightning validates at the
            # batch count it took from the round's data loader, recomputed every round; the
            # module then ends the round (``IDCModule.on_train_batch_start``).
            trainer.val_check_batch = schedule.epoch_steps[trainer.current_epoch]
            if self.on_schedule is not None and trainer.is_global_zero:
                self.on_schedule(schedule, self.deadline)
        if stop:
            trainer.should_stop = True

    def _refit(self, trainer: L.Trainer, schedule: Schedule, done: int, now: float
               ) -> list[int] | None:
        """Rank 0: a re-fit of phase 2 from the steps since the last one, when it is due (every
        round/REFITS_PER_ROUND steps, or sooner once REFIT_TIME_SHARE of the time left has
        passed) and before the round's last step (whose round-end re-plan follows)."""
        epoch = trainer.current_epoch
        if epoch < schedule.phase1_epochs or done >= schedule.epoch_steps[epoch]:
            return None
        since, at = self._window
        every = max(1, self._capacity // REFITS_PER_ROUND)
        due = done - at >= every or now - since >= REFIT_TIME_SHARE * (self.deadline - now)
        if not due or done == at:
            return None
        step_s = max(1e-9, (now - since) / (done - at))
        self._window = (now, done)
        val_s = self._val_s if self._val_s is not None else \
            (self.rates.val_pass_s if self.rates is not None else 0.0)
        new_steps = refit(schedule, epoch, done, self._capacity, self.deadline - now, step_s,
                          val_s)
        if new_steps is not None and new_steps != schedule.epoch_steps:
            schedule.details.setdefault("replans", []).append(
                {"in_round": epoch, "after_step": done, "step_s": round(step_s, 4),
                 "epoch_steps": new_steps})
        return new_steps


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


class WeightEMA(L.Callback):
    """Keeps ``ema.module``: the moving average of ``pl_module.net`` after every step.

    Exponential moving average of the weights (``--select ema``), as a Lightning callback.

    Averaging the weights over the last part of training smooths out the noise of the final steps
    without choosing a checkpoint on the validation patients (a choice that may not transfer to
    other patients). The average is timm's ``ModelEmaV3`` with its warm-up, so early, random
    weights fade out quickly; it is kept in the checkpoint, so ``--resume`` continues it.
    """

    def __init__(self, decay: float = 0.998) -> None:
        self.decay = decay
        self.ema: ModelEmaV3 | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is None:
            self.ema = ModelEmaV3(pl_module.net, decay=self.decay, use_warmup=True)
        if self._pending is not None:
            self.ema.module.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
                           ) -> None:
        self.ema.update(pl_module.net, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {}
        return {"ema": {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("ema"):
            self._pending = state_dict["ema"]

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The averaged weights, on the CPU (what the bundle exports)."""
        return {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}


#: Logged name -> shown name, in display order.
SHOWN = (("train/loss_step", "loss"), ("val/auc", "val AUC"))


class CompactProgressBar(RichProgressBar):
    """The training progress bar: Lightning's RichProgressBar with one short line of metrics.
    
    Lightning's bar lists every logged metric under its full name (``train/loss_step: 1.066
    val/auc: 0.725 train/loss_epoch: 1.066``), which wraps onto several lines on a normal
    terminal. Users need two numbers: the running training loss and the last validation AUC.
    """

    def __init__(self) -> None:
        # Off a terminal (a log file, CI) rich assumes 80 columns and wraps the metrics under
        # the bar; a log line may be as long as it needs.
        console = None if sys.stdout.isatty() else {"width": 200}
        super().__init__(
            leave=True,
            theme=RichProgressBarTheme(metrics_text_delimiter="  ", metrics_format=".3f"),
            console_kwargs=console,
        )

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        return {label: items[key] for key, label in SHOWN if key in items}
