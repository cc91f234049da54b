"""The training schedule, fitted to a time budget from measured step rates.

A fixed number of epochs under a time limit either wastes the budget or gets cut off before the
learning rate has decayed, the worst time to stop. Instead we time a few real steps of each
phase (data, augmentation, forward, backward, optimizer) and a validation batch, subtract what
setup, validation rounds, calibration and export will cost, and size both phases to what is
left. A short budget therefore gets a complete, smaller schedule: phase 1, phase 2 with its
warm-up and cosine decay to the end, a validation at every round, then export. After every
round the remaining rounds are re-sized from the rates the run itself showed (``replan``),
and within a phase-2 round the plan is re-fitted from the speed of its latest steps
(``refit``, many times a round): a machine that gets busier mid-round shortens the round and
bends the cosine to end sooner, instead of running into the deadline with the learning rate
still high. Either way the last step runs at the final learning rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


#: Learning rate at the end of the cosine, as a fraction of the peak.
FINAL_LR_FRACTION = 0.02
#: Extra headroom on measured times (a shared CPU is noisy).
SAFETY = 1.10
#: Headroom when re-planning from the run's own measured rounds (better estimates).
REPLAN_SAFETY = 1.05


@dataclass
class Rates:
    """Measured seconds per step/batch (one rank; DDP ranks run in parallel)."""

    phase1_step_s: float
    phase2_step_s: float
    val_batch_s: float
    val_batches: int
    export_s: float

    @property
    def val_pass_s(self) -> float:
        return self.val_batch_s * self.val_batches


@dataclass
class Schedule:
    """Steps per training round (a round ends with validation + checkpoint), by phase."""

    epoch_steps: list[int]
    phase1_epochs: int
    steps_per_pass: int
    warmup_steps: int = 0
    head_warmup_steps: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    final_lr_fraction: float = FINAL_LR_FRACTION
    #: (phase-2 step, cosine progress) pairs pinned by re-plans: the cosine passes through each,
    #: so resizing the rounds left bends its remaining part instead of making the LR jump.
    anchors: list[list[float]] = field(default_factory=list)

    @property
    def phase1_steps(self) -> int:
        return sum(self.epoch_steps[: self.phase1_epochs])

    @property
    def phase2_steps(self) -> int:
        return sum(self.epoch_steps[self.phase1_epochs:])

    @property
    def total_steps(self) -> int:
        return sum(self.epoch_steps)

    def phase(self, step: int) -> int:
        return 1 if step < self.phase1_steps else 2

    def lr_factor(self, step: int, part: str) -> float:
        """Multiplier of a group's peak learning rate at optimizer step ``step``.

        Phase 1: the head warms up briefly, then holds; the backbone is idle (0). Phase 2: both
        warm up linearly, then follow a cosine down to ``final_lr_fraction`` at the last step.
        """
        s1 = self.phase1_steps
        if step < s1:
            if part != "head":
                return 0.0
            return min(1.0, (step + 1) / max(1, self.head_warmup_steps))
        t = step - s1
        if t < self.warmup_steps:
            return (t + 1) / (self.warmup_steps + 1)
        cosine = 0.5 * (1 + math.cos(math.pi * self._progress(t)))
        floor = self.final_lr_fraction
        return floor + (1 - floor) * cosine

    def _progress(self, t: int) -> float:
        """How far along the cosine phase-2 step ``t`` is: piecewise linear through the
        anchors, from 0 at the end of the warm-up to 1 at the last step (index
        ``phase2_steps - 1``: the last step runs at the final learning rate, however close
        to it a re-fit bent the cosine)."""
        xs = [float(self.warmup_steps)] + [a[0] for a in self.anchors]
        ys = [0.0] + [a[1] for a in self.anchors]
        end = max(xs[-1] + 1, self.phase2_steps - 1)
        xs.append(float(end))
        ys.append(1.0)
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if t < x1:
                return y0 + (y1 - y0) * max(0.0, t - x0) / (x1 - x0)
        return 1.0

    def resize(self, epoch_steps: list[int], done_epochs: int, in_round: int = 0) -> None:
        """Take new round lengths after ``done_epochs`` rounds and ``in_round`` steps of the
        next, in place (the LR lambdas hold this object), keeping the learning rate
        continuous at the step where it happens."""
        if done_epochs >= self.phase1_epochs:
            t = sum(self.epoch_steps[self.phase1_epochs:done_epochs]) + in_round
            # (the next step the last one: no pin, it runs at the final learning rate)
            new_end = sum(epoch_steps[self.phase1_epochs:]) - 1
            if self.warmup_steps < t < min(self.phase2_steps - 1, new_end):
                self.anchors.append([float(t), self._progress(t)])
        self.epoch_steps[:] = epoch_steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(phase1_steps=self.phase1_steps, phase2_steps=self.phase2_steps,
                 total_steps=self.total_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        keys = ("epoch_steps", "phase1_epochs", "steps_per_pass", "warmup_steps",
                "head_warmup_steps", "details", "final_lr_fraction", "anchors")
        return cls(**{k: d[k] for k in keys if k in d})


def split_rounds(steps: int, rounds: int) -> list[int]:
    """``steps`` into ``rounds`` near-equal positive parts (fewer if steps < rounds)."""
    rounds = max(1, min(rounds, steps))
    base, extra = divmod(steps, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def _warmups(phase1: int, phase2: int, warmup_fraction: float) -> tuple[int, int]:
    return (max(1, min(20, phase1 // 5)), int(round(phase2 * warmup_fraction)))


def epoch_schedule(steps_per_pass: int, frozen_epochs: float, finetune_epochs: float,
                   warmup_fraction: float,
                   final_lr_fraction: float = FINAL_LR_FRACTION) -> Schedule:
    """No budget: each phase lasts its number of passes, one validation round per pass."""
    s1 = int(round(frozen_epochs * steps_per_pass))
    s2 = int(round(finetune_epochs * steps_per_pass))
    r1 = split_rounds(s1, math.ceil(frozen_epochs)) if s1 else []
    r2 = split_rounds(s2, math.ceil(finetune_epochs)) if s2 else []
    hw, w = _warmups(s1, s2, warmup_fraction)
    return Schedule(epoch_steps=r1 + r2, phase1_epochs=len(r1), steps_per_pass=steps_per_pass,
                    warmup_steps=w, head_warmup_steps=hw, final_lr_fraction=final_lr_fraction,
                    details={"mode": "epochs", "frozen_epochs": frozen_epochs,
                             "finetune_epochs": finetune_epochs})


def budget_schedule(rates: Rates, seconds_left: float, steps_per_pass: int,
                    frozen_epochs: float, finetune_epochs: float, *,
                    frozen_time_fraction: float = 0.08, val_rounds: int = 4,
                    warmup_fraction: float = 0.05, fixed_cost_s: float = 0.0,
                    final_lr_fraction: float = FINAL_LR_FRACTION) -> Schedule:
    """Fit both phases into ``seconds_left`` (what remains for training, validation, export).

    ``fixed_cost_s`` is everything after fit that does not scale with steps (loading the best
    checkpoint, calibration, plots). Epoch counts act as caps: a fast machine stops at them.
    ``frozen_time_fraction`` 0 skips phase 1 (the whole backbone trains from the first step).
    """
    t1, t2 = rates.phase1_step_s * SAFETY, rates.phase2_step_s * SAFETY
    val = rates.val_pass_s * SAFETY
    train_time = seconds_left - rates.export_s * SAFETY - fixed_cost_s
    has1, has2 = frozen_epochs > 0 and frozen_time_fraction > 0, finetune_epochs > 0
    # Fewer validation rounds when a validation pass is a large share of the budget.
    rounds2 = val_rounds if has2 else 0
    # At least two phase-2 rounds: re-planning after the first corrects a misjudged probe.
    while rounds2 > 2 and (rounds2 + int(has1)) * val > 0.15 * train_time:
        rounds2 -= 1
    n_val = rounds2 + int(has1)
    train_time -= n_val * val
    cap1 = int(round(frozen_epochs * steps_per_pass))
    cap2 = int(round(finetune_epochs * steps_per_pass))
    if has1 and has2:
        s1 = min(cap1, max(1, int(frozen_time_fraction * train_time / t1)))
        s2 = min(cap2, max(1, int((train_time - s1 * t1) / t2)))
    else:
        s1 = min(cap1, max(1, int(train_time / t1))) if has1 else 0
        s2 = min(cap2, max(1, int(train_time / t2))) if has2 else 0
    r1 = [s1] if s1 else []
    r2 = split_rounds(s2, max(1, rounds2)) if s2 else []
    hw, w = _warmups(s1, s2, warmup_fraction)
    predicted = s1 * t1 + s2 * t2 + (len(r1) + len(r2)) * val + rates.export_s * SAFETY \
        + fixed_cost_s
    return Schedule(
        epoch_steps=r1 + r2, phase1_epochs=len(r1), steps_per_pass=steps_per_pass,
        warmup_steps=w, head_warmup_steps=hw, final_lr_fraction=final_lr_fraction,
        details={"mode": "time budget", "seconds_left_at_fit": round(seconds_left, 2),
                 "predicted_s": round(predicted, 2), "rates": asdict(rates),
                 "safety_factor": SAFETY, "capped_by_epochs": s1 == cap1 and s2 == cap2,
                 "budget_too_small": train_time <= 0, "phase2_cap": cap2,
                 "tail_cost_s": round(rates.export_s * SAFETY + fixed_cost_s, 2),
                 "replans": []},
    )


def replan(schedule: Schedule, done_epochs: int, seconds_left: float, step_s: float,
           val_s: float) -> list[int] | None:
    """Resize the phase-2 rounds not yet started so the run ends on time.

    Called after each round with the rates the run itself just showed (a shared machine speeds
    up and slows down), this closes the loop the initial plan opened. Past rounds never change,
    so the data order and any checkpoint stay valid; ``Schedule.resize`` then bends the rest of
    the cosine so the learning rate goes on from where it is. Returns the new full ``epoch_steps``, or None when there is nothing to re-plan.
    """
    details = schedule.details
    remaining = len(schedule.epoch_steps) - done_epochs
    if details.get("mode") != "time budget" or remaining <= 0:
        return None
    if done_epochs < schedule.phase1_epochs:
        return None
    budget = seconds_left - details.get("tail_cost_s", 0.0) - remaining * val_s * REPLAN_SAFETY
    done2 = sum(schedule.epoch_steps[schedule.phase1_epochs:done_epochs])
    cap = details.get("phase2_cap", 10**9) - done2
    steps = max(remaining, min(cap, int(budget / (step_s * REPLAN_SAFETY))))
    return schedule.epoch_steps[:done_epochs] + split_rounds(steps, remaining)


def refit(schedule: Schedule, epoch: int, done: int, capacity: int, seconds_left: float,
          step_s: float, val_s: float) -> list[int] | None:
    """Re-fit phase 2 in the middle of round ``epoch``, ``done`` steps into it, from the speed
    of the latest steps (``step_s``): the steps the time left affords, this round's share
    ending it sooner (or later, up to the ``capacity`` its data loader holds) and the rest
    split over the rounds after it, each kept at least one step. The round-end ``replan``
    alone reacts a round late: on a machine that slows down mid-round the deadline would stop
    training with the learning rate still high. Returns the new ``epoch_steps``, or None when
    there is nothing to re-fit (no budget, or still in phase 1)."""
    details = schedule.details
    if details.get("mode") != "time budget" or epoch < schedule.phase1_epochs:
        return None
    after = len(schedule.epoch_steps) - epoch - 1
    budget = seconds_left - details.get("tail_cost_s", 0.0) - (after + 1) * val_s * REPLAN_SAFETY
    done2 = sum(schedule.epoch_steps[schedule.phase1_epochs:epoch]) + done
    cap = details.get("phase2_cap", 10**9) - done2
    steps = max(after, min(cap, int(max(budget, 0.0) / (step_s * REPLAN_SAFETY))))
    here = steps if after == 0 else int(round(steps / (after + 1)))
    here = max(0, min(capacity - done, here))
    later = split_rounds(max(steps - here, after), after) if after else []
    return schedule.epoch_steps[:epoch] + [done + here] + later
