"""The time-fitted schedule: complete two-phase schedules that fit the budget, and the LR shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idcscan.training.calibration import calibrated_probs, fit_temperature, nll
from idcscan.training.schedule import (
    FINAL_LR_FRACTION,
    Rates,
    Schedule,
    budget_schedule,
    epoch_schedule,
    split_rounds,
)

RATES = Rates(phase1_step_s=0.1, phase2_step_s=0.3, val_batch_s=0.5, val_batches=16,
              export_s=15.0)


@pytest.mark.parametrize("seconds", [30, 120, 720, 3600])
def test_budget_schedule_fits_the_time_and_has_both_phases(seconds):
    s = budget_schedule(RATES, seconds, steps_per_pass=290, frozen_epochs=1,
                        finetune_epochs=6, fixed_cost_s=5)
    assert s.phase1_steps >= 1 and s.phase2_steps >= 1
    assert s.details["predicted_s"] <= seconds + 1e-6 or s.details["budget_too_small"]
    assert s.phase1_steps <= 290 and s.phase2_steps <= 6 * 290
    if seconds >= 720:
        # The budget is used, not wasted: at least 85% of it is predicted to be spent.
        assert s.details["predicted_s"] >= 0.85 * seconds or s.details["capped_by_epochs"]
    assert Schedule.from_dict(s.to_dict()).epoch_steps == s.epoch_steps


def test_longer_budget_gives_longer_phase_two_and_caps_hold():
    short = budget_schedule(RATES, 300, 290, 1, 6)
    long = budget_schedule(RATES, 900, 290, 1, 6)
    assert long.phase2_steps > 2 * short.phase2_steps
    capped = budget_schedule(RATES, 10**6, 290, 0.5, 2)
    assert capped.phase1_steps == 145 and capped.phase2_steps == 580
    assert capped.details["capped_by_epochs"]


def test_a_budget_too_small_still_gives_a_complete_minimal_schedule():
    s = budget_schedule(RATES, 1.0, 290, 1, 6)
    assert s.details["budget_too_small"]
    assert s.phase1_steps == 1 and s.phase2_steps == 1


def test_lr_shape_frozen_backbone_then_warmup_and_cosine():
    s = epoch_schedule(steps_per_pass=100, frozen_epochs=1, finetune_epochs=4,
                       warmup_fraction=0.05)
    assert s.epoch_steps == [100, 100, 100, 100, 100] and s.phase1_epochs == 1
    assert all(s.lr_factor(i, "backbone") == 0 for i in range(100))
    assert s.lr_factor(99, "head") == 1.0
    assert s.phase(99) == 1 and s.phase(100) == 2
    warm = [s.lr_factor(100 + i, "backbone") for i in range(s.warmup_steps + 1)]
    assert warm == sorted(warm) and warm[0] < 0.1
    tail = [s.lr_factor(i, "backbone") for i in range(100 + s.warmup_steps, 500)]
    assert all(a >= b for a, b in zip(tail, tail[1:]))  # monotone decay
    assert tail[-1] == pytest.approx(FINAL_LR_FRACTION, abs=1e-3)


def test_split_rounds():
    assert split_rounds(10, 3) == [4, 3, 3]
    assert split_rounds(2, 5) == [1, 1]


def test_temperature_scaling_recovers_overconfidence(rng):
    true_logit = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = 3.0 * true_logit
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.08)
    assert nll(overconfident, labels, t) < nll(overconfident, labels, 1.0)
    probs = calibrated_probs(overconfident, t)
    assert np.all((probs >= 0) & (probs <= 1))
    # Ranking (hence AUC) is untouched by the temperature.
    assert np.array_equal(np.argsort(probs), np.argsort(overconfident))


def test_temperature_degenerate_inputs_fall_back_to_one():
    assert fit_temperature(np.array([1.0, 2.0]), np.array([1, 1])) == 1.0
    assert fit_temperature(np.array([]), np.array([])) == 1.0


def test_replan_resizes_only_future_phase_two_rounds_to_the_time_left():
    from idcscan.training.schedule import replan

    s = budget_schedule(RATES, 720, 290, 1, 6, fixed_cost_s=5)
    first = s.epoch_steps[:2]
    # The machine turned out twice as slow as probed: the remaining rounds shrink.
    left = 400.0
    slow = replan(s, 2, left, step_s=2 * RATES.phase2_step_s, val_s=RATES.val_pass_s)
    assert slow[:2] == first and len(slow) == len(s.epoch_steps)
    remaining = sum(slow[2:])
    spent = remaining * 2 * RATES.phase2_step_s + len(slow[2:]) * RATES.val_pass_s
    assert spent + s.details["tail_cost_s"] <= left
    assert spent + s.details["tail_cost_s"] >= 0.85 * left
    # Faster than probed: more steps, but never past the epoch cap.
    fast = replan(s, 2, 10**5, step_s=0.01, val_s=1.0)
    assert sum(fast[s.phase1_epochs:]) == s.details["phase2_cap"]
    # Nothing to re-plan without a budget, or before phase 2 starts.
    assert replan(epoch_schedule(100, 1, 2, 0.05), 1, 100, 0.1, 1) is None
    assert replan(s, 0, 100, 0.1, 1) is None


def test_a_replan_bends_the_cosine_without_a_jump_and_keeps_the_past():
    """A probe that judged the machine twice too slow plans half the steps; the re-plan after
    the first round doubles what is left. The learning rate must go on from where it was
    (a jump back up would be an accidental warm restart), past steps keep their values (a
    resumed run rebuilds them from config.json), and the cosine still ends at its floor."""
    from idcscan.training.schedule import replan

    slow_probe = Rates(phase1_step_s=0.1, phase2_step_s=0.6, val_batch_s=0.5, val_batches=16,
                       export_s=15.0)
    s = budget_schedule(slow_probe, 720, 290, 0, 10, frozen_time_fraction=0, val_rounds=2,
                        warmup_fraction=0.0)
    assert s.phase1_epochs == 0 and len(s.epoch_steps) == 2
    first = s.epoch_steps[0]
    before = [s.lr_factor(i, "backbone") for i in range(s.total_steps)]
    left = 720 - first * 0.3 - 8.0
    new = replan(s, 1, left, step_s=0.3, val_s=8.0)
    assert new[0] == first and sum(new) > 1.5 * s.total_steps
    s.resize(new, 1)
    after = [s.lr_factor(i, "backbone") for i in range(s.total_steps)]
    assert after[:first] == pytest.approx(before[:first], abs=1e-12)
    assert after[first] == pytest.approx(before[first], abs=0.01)
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(FINAL_LR_FRACTION, abs=1e-3)
    # The bend survives config.json: a resumed run rebuilds the same learning rates.
    again = Schedule.from_dict(s.to_dict())
    assert [again.lr_factor(i, "backbone") for i in range(s.total_steps)] == after


def test_without_a_replan_the_cosine_is_the_plain_one():
    import math

    s = budget_schedule(RATES, 720, 290, 0, 10, frozen_time_fraction=0, val_rounds=2,
                        warmup_fraction=0.0)
    n = s.phase2_steps
    for t in (0, n // 3, n - 1):  # the last step (n - 1) runs at the final learning rate
        expect = FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, t / (n - 1))))
        assert s.lr_factor(t, "backbone") == pytest.approx(expect)
    assert s.lr_factor(n - 1, "backbone") == pytest.approx(FINAL_LR_FRACTION)


def test_the_default_budgeted_run_has_a_round_to_replan_after():
    from idcscan.training.config import TrainConfig

    cfg = TrainConfig(data="DATA", out="RUN")
    s = budget_schedule(RATES, 720, 290, cfg.frozen_epochs, cfg.finetune_epochs,
                        frozen_time_fraction=cfg.frozen_time_fraction,
                        val_rounds=cfg.val_rounds)
    assert len(s.epoch_steps) - s.phase1_epochs >= 2


def test_the_budget_reserves_one_validation_pass_per_tta_view_fitted_on() -> None:
    """A budgeted run scores validation again after fit through every view when calibration
    or the threshold is fitted on TTA outputs; that time must come out of the steps, or a run
    with more views overruns --max-minutes."""
    from idcscan.training.config import TrainConfig
    from idcscan.training.finish import TTA_VAL_MAX
    from idcscan.training.train import post_fit_cost_s

    def config(**fields) -> TrainConfig:
        return TrainConfig(data=Path("DATA"), out=Path("RUN"), **fields)

    fitted = {"calibration": "temperature"}
    plain = post_fit_cost_s(config(), 2.0, 1000)
    for views in (2, 4, 8):
        cost = post_fit_cost_s(config(**fitted, tta_views=views), 2.0, 1000)
        assert cost == pytest.approx(plain + views * 2.0)
    # only TTA_VAL_MAX patches are scored per view, so a large validation set costs a share
    large = post_fit_cost_s(config(**fitted, tta_views=8), 2.0, 4 * TTA_VAL_MAX)
    assert large == pytest.approx(plain + 8 * 2.0 / 4)
    # nothing fitted on validation: no second pass; EMA weights: one pass without views
    assert post_fit_cost_s(config(tta_views=8), 2.0, 1000) == plain
    assert post_fit_cost_s(config(select="ema"), 2.0, 1000) == pytest.approx(plain + 2.0)
    assert post_fit_cost_s(config(**fitted, tta=False), 2.0, 1000) == plain


def test_a_refit_mid_round_ends_the_round_sooner_and_still_anneals():
    """Half-way through the first phase-2 round the machine is found three times slower: the
    round is cut, the rest shrinks, the learning rate goes on from where it was, and the last
    step still runs at the final learning rate."""
    from idcscan.training.schedule import refit

    s = budget_schedule(RATES, 720, 290, 0, 10, frozen_time_fraction=0, val_rounds=2,
                        warmup_fraction=0.0)
    first = s.epoch_steps[0]
    half = first // 2
    before = [s.lr_factor(i, "backbone") for i in range(s.total_steps)]
    left = 720 - half * 0.5 - 100  # much of the budget gone: the steps are 3x slower
    new = refit(s, 0, half, capacity=first, seconds_left=left, step_s=3 * RATES.phase2_step_s,
                val_s=RATES.val_pass_s)
    assert half < new[0] < first and sum(new) < s.total_steps
    s.resize(new, 0, in_round=half)
    after = [s.lr_factor(i, "backbone") for i in range(s.total_steps)]
    assert after[:half + 1] == pytest.approx(before[:half + 1], abs=1e-12)
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(FINAL_LR_FRACTION)
    assert refit(epoch_schedule(100, 1, 2, 0.05), 1, 10, 100, 60, 0.1, 1) is None
