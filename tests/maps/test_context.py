"""Slide mode's spatial context (``idcscan.maps.context``) and area call
(``idcscan.runtime.labels.area_threshold``)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.maps.context import (
    check_context,
    sigma_in_cells,
    smooth_probabilities,
    within_reach,
)
from idcscan.runtime.labels import area_threshold


def _grid(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(~np.isnan(values))
    return rows, cols, values[rows, cols]


def test_without_context_each_tile_keeps_its_own_value() -> None:
    rows, cols, p = _grid(np.array([[0.1, 0.9], [0.4, np.nan]]))
    assert np.array_equal(smooth_probabilities(rows, cols, p, 0.0), p)


def test_a_lone_false_alarm_is_outvoted_and_a_hole_in_a_tumour_is_filled() -> None:
    field = np.full((9, 9), 0.05)
    field[2, 2] = 0.9  # one tile alone says IDC among confident non-IDC
    field[5:9, 5:9] = 0.95
    field[7, 7] = 0.3  # one doubtful tile inside a confident region
    rows, cols, p = _grid(field)
    out = np.full(field.shape, np.nan)
    out[rows, cols] = smooth_probabilities(rows, cols, p, 1.0)
    assert out[2, 2] < 0.5 and out[7, 7] > 0.5
    assert out[0, 0] < 0.1 and out[8, 8] > 0.9  # confident areas stay confident


def test_glass_and_the_slide_edge_do_not_pull_a_uniform_region() -> None:
    field = np.full((6, 8), np.nan)
    field[1:5, 2:7] = 0.8  # tissue surrounded by unscored glass
    rows, cols, p = _grid(field)
    assert np.allclose(smooth_probabilities(rows, cols, p, 1.5), 0.8)
    rows, cols, p = _grid(np.full((3, 3), 0.7))  # reaching the grid's own edge
    assert np.allclose(smooth_probabilities(rows, cols, p, 1.0), 0.7)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.0, 2.0])
def test_part_of_a_slide_scored_with_its_reach_maps_as_the_whole_slide(sigma: float) -> None:
    rng = np.random.default_rng(0)
    field = rng.uniform(0.01, 0.99, size=(30, 40))
    field[rng.uniform(size=field.shape) < 0.2] = np.nan  # glass here and there
    rows, cols, p = _grid(field)
    whole = smooth_probabilities(rows, cols, p, sigma)
    part = np.zeros(field.shape, dtype=bool)
    part[8:17, 11:25] = True  # a drawn region
    reach = within_reach(part.ravel(), *field.shape, sigma).reshape(field.shape)
    assert reach[part].all() and reach.sum() < field.size
    scored = reach[rows, cols]
    mapped = smooth_probabilities(rows[scored], cols[scored], p[scored], sigma)
    inside = part[rows, cols]
    assert np.allclose(mapped[part[rows[scored], cols[scored]]], whole[inside], atol=1e-12)
    if sigma > 0:  # without the ring the border tiles would read other neighbours
        alone = smooth_probabilities(rows[inside], cols[inside], p[inside], sigma)
        assert not np.allclose(alone, whole[inside], atol=1e-3)


def test_context_is_measured_in_patches_whatever_the_stride() -> None:
    assert sigma_in_cells(1.0, tile=800, stride=800) == 1.0
    assert sigma_in_cells(1.0, tile=800, stride=400) == 2.0  # overlapping tiles
    assert sigma_in_cells(0.0, tile=800, stride=400) == 0.0
    check_context(0.0)
    for bad in (-1.0, float("nan"), 11.0):
        with pytest.raises(IdcscanError, match="--context"):
            check_context(bad)


def _card(method: str, pos_weight: object, prior_correction: object = None) -> SimpleNamespace:
    training = {} if pos_weight is None else {"pos_weight": pos_weight}
    if prior_correction is not None:
        training["prior_correction"] = prior_correction
    return SimpleNamespace(calibration=SimpleNamespace(method=method, temperature=1.0),
                           training=training)


def test_a_class_balanced_bundle_counts_area_at_the_training_share() -> None:
    # pos_weight 3 = three non-IDC patches per IDC patch: 25% IDC in training. The class-
    # balanced logit carries +log 3, so "more likely than not at 25%" is P >= 3/4.
    threshold, rule = area_threshold(_card("none", 3.0))
    assert threshold == pytest.approx(0.75)
    assert "class-balanced" in rule
    # a bundle calibrated to its training share, or trained unweighted, calls at 50%
    assert area_threshold(_card("temperature", 3.0))[0] == 0.5
    assert area_threshold(_card("none", 1.0))[0] == 0.5
    assert area_threshold(_card("none", None))[0] == 0.5
    # what export removed decides, not the label: a class-balanced bundle of an earlier
    # version was labelled "temperature" (T = 1) with nothing removed
    assert area_threshold(_card("temperature", 3.0, 0.0))[0] == pytest.approx(0.75)
    assert area_threshold(_card("temperature", 3.0, -math.log(3.0)))[0] == 0.5
