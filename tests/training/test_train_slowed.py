"""A training budget that ends annealed on a machine that slows down mid-run.

The run is real (Lightning, the IDCModule, the data module, ScheduleFit), but time is a clock
of the test's own: a callback "sleeps" on it, each step costing a fixed time, four times more
once the machine gets busy a little way into phase 2. Everything ScheduleFit decides comes
from that clock, so the outcome is the same on any machine, however loaded: no assertion here
depends on how fast the test runs.

The plan is made for the quiet machine. Re-planned only at round ends, the run met its hard
deadline in the middle of a long round with the learning rate far from its floor (what issue
26 saw: a 6-minute run stopped at step 132 of 299 at 88% of its peak). Re-fitted within rounds
from the speed of its latest steps, it ends inside the budget with the last step at the final
learning rate.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real (tiny) training run, twice

PHASE1_STEP_S, PHASE2_STEP_S, VAL_S = 0.05, 0.1, 0.4
BUDGET_S = 14.0
BUSY_FROM = 20  # the machine gets busy after this many steps (early in phase 2)...
SLOWDOWN = 4.0  # ... and every step then takes four times as long


class Clock:
    """The run's time: moves only when the run "spends" some."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(prepared_data: Path, refits: bool, monkeypatch) -> dict:
    import lightning as L
    import torch

    from idcscan.data.datamodule import IDCDataModule
    from idcscan.preprocessing import Preprocessing
    from idcscan.training.callbacks import ScheduleFit
    from idcscan.training.module import IDCModule
    from idcscan.training.network import IDCNet
    from idcscan.training.schedule import FINAL_LR_FRACTION, Rates, budget_schedule

    if not refits:  # the run as it was: re-planned at round ends only
        monkeypatch.setattr(ScheduleFit, "_refit", lambda self, *a: None)
    clock = Clock()
    torch.manual_seed(0)
    dm = IDCDataModule(prepared_data, batch_size=16, seed=0, augment=None)
    dm.load()
    net = IDCNet("test_efficientnet", Preprocessing(input_size=32))
    rates = Rates(PHASE1_STEP_S, PHASE2_STEP_S, VAL_S / 2, 2, export_s=1.0)
    schedule = budget_schedule(rates, BUDGET_S, dm.steps_per_pass(), frozen_epochs=2,
                               finetune_epochs=200, val_rounds=2, warmup_fraction=0.05,
                               fixed_cost_s=1.0)
    module = IDCModule(net, schedule, lr_head=1e-3, lr_backbone=5e-4)
    dm.set_schedule(schedule.epoch_steps)
    deadline = clock() + BUDGET_S
    steps_lr: list[float] = []

    class BusyMachine(L.Callback):
        """Each step costs its time on the clock; from BUSY_FROM on, SLOWDOWN times more."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx < pl_module.schedule.epoch_steps[trainer.current_epoch]:
                backbone = [g["lr"] for g in trainer.optimizers[0].param_groups
                            if g["part"] == "backbone"]
                steps_lr.append(backbone[0])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = PHASE1_STEP_S if pl_module.phase == 1 else PHASE2_STEP_S
            clock.sleep(step * (SLOWDOWN if trainer.global_step > BUSY_FROM else 1.0))

        def on_validation_end(self, trainer, pl_module) -> None:
            clock.sleep(VAL_S)

    fit = ScheduleFit(dm, deadline=deadline, make_schedule=None, export_s=1.0, clock=clock)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=len(schedule.epoch_steps), num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[BusyMachine(), fit],  # the machine's time passes before ScheduleFit looks
    )
    trainer.fit(module, datamodule=dm)
    final = module.schedule  # ScheduleFit's copy, as re-fitted
    return {
        "steps": trainer.global_step, "planned": schedule.total_steps,
        "total": final.total_steps, "lr": steps_lr, "end": clock(), "deadline": deadline,
        "tail": final.details["tail_cost_s"], "floor": 5e-4 * FINAL_LR_FRACTION,
        "replans": final.details.get("replans", []), "stopped": trainer.should_stop,
    }


def test_a_slowed_run_ends_within_its_budget_at_the_final_learning_rate(
    prepared_data: Path, monkeypatch
) -> None:
    result = run(prepared_data, refits=True, monkeypatch=monkeypatch)
    assert not result["stopped"]  # the plan ended the run, not the hard deadline
    assert result["steps"] == result["total"]  # every planned step ran...
    assert result["end"] <= result["deadline"] - result["tail"]  # ...inside the budget
    assert result["lr"][-1] == pytest.approx(result["floor"], rel=1e-6)  # annealed
    assert any("in_round" in r for r in result["replans"])  # re-fitted within a round
    # and the learning rate never jumped back up once the cosine had begun
    tail = result["lr"][len(result["lr"]) // 2:]
    assert all(a >= b - 1e-12 for a, b in zip(tail, tail[1:]))


def test_without_in_round_refits_the_same_run_was_cut_off_unannealed(
    prepared_data: Path, monkeypatch
) -> None:
    """The failure the re-fits fix, on the same clock: the deadline stops training mid-round."""
    result = run(prepared_data, refits=False, monkeypatch=monkeypatch)
    assert result["stopped"] and result["steps"] < result["total"]
    assert result["lr"][-1] > 10 * result["floor"] and math.isfinite(result["lr"][-1])
