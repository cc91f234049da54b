"""Per-group Macenko normalisation: torchstain's estimate, one optical-density map per group,
and its record in model.json (applied before the graph by the predictor)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.stain import (
    MACENKO_IO,
    MacenkoNorm,
    StainMatrix,
    StainTarget,
    estimate_stains,
    macenko_reference,
    stain_norm_from_dict,
)



def unit(m: list[list[float]]) -> np.ndarray:
    a = np.array(m, dtype=np.float64)
    return a / np.linalg.norm(a, axis=0)


#: Two labs' H&E: stain vectors (optical density per unit amount; columns H, E).
LAB_A = unit([[0.56, 0.22], [0.72, 0.80], [0.41, 0.56]])
LAB_B = unit([[0.65, 0.20], [0.70, 0.90], [0.29, 0.40]])


def render(he: np.ndarray, amount: float, seed: int = 0, n: int = 6) -> np.ndarray:
    """H&E tissue as Beer-Lambert mixes: eosin everywhere, haematoxylin in round nuclei, a
    strip of glass; ``amount`` scales how much stain the lab's protocol leaves."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:50, :50]
    out = []
    for _ in range(n):
        h = np.zeros((50, 50))
        for cy, cx in rng.uniform(0, 50, (12, 2)):
            h += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
        e = 0.5 + 0.4 * rng.random((50, 50))
        conc = np.stack([h, e], -1) * amount
        conc[:, :6] = 0.0  # glass
        od = conc @ he.T + rng.normal(0, 0.01, (50, 50, 3))
        out.append(np.clip(MACENKO_IO * np.exp(-od), 0, 255))
    return np.round(np.stack(out)).astype(np.uint8)


def test_one_image_normalises_as_torchstain_does():
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    image = render(LAB_A, 1.0, n=1)[0]
    theirs, _, _ = NumpyMacenkoNormalizer().normalize(image, stains=False)
    ours = MacenkoNorm(macenko_reference()).normalise_group(image[None])[0]
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.6  # they truncate to uint8, we round


@pytest.mark.parametrize("he, amount", [(LAB_A, 1.5), (LAB_B, 1.0), (LAB_B, 1.4)],
                         ids=["darker", "other-lab", "other-lab-darker"])
def test_the_same_tissue_stained_elsewhere_normalises_alike(he, amount):
    norm = MacenkoNorm(macenko_reference())
    a, b = render(LAB_A, 1.0), render(he, amount)
    raw = np.abs(a.astype(int) - b.astype(int)).mean()
    after = np.abs(norm.normalise_group(a).astype(int) - norm.normalise_group(b).astype(int))
    assert raw > 8 and after.mean() < 0.15 * raw


def test_groups_are_estimated_apart():
    norm = MacenkoNorm(macenko_reference())
    a, b = render(LAB_A, 1.0), render(LAB_B, 1.6)
    both = norm.normalise_groups(np.concatenate([a, b]), np.array(["a"] * len(a) + ["b"] * len(b)))
    np.testing.assert_array_equal(both[: len(a)], norm.normalise_group(a))
    np.testing.assert_array_equal(both[len(a):], norm.normalise_group(b))


def test_glass_alone_has_no_estimate_and_is_left_as_it_is():
    glass = np.full((3, 50, 50, 3), 245, dtype=np.uint8)
    assert estimate_stains(glass) is None
    group = MacenkoNorm(macenko_reference()).group(glass)
    assert group.to_dict() == {"estimated": False}
    np.testing.assert_array_equal(group.apply(glass), glass)


def test_target_round_trips_through_model_json():
    norm = MacenkoNorm(macenko_reference())
    record = json.loads(json.dumps(norm.to_dict()))
    assert record["method"] == "macenko" and "per group" in record["statistics"]
    assert stain_norm_from_dict(record) == norm
    assert isinstance(stain_norm_from_dict({"method": "reinhard", "mean": [0, 0, 0],
                                            "std": [1, 1, 1]}), StainTarget)
    assert stain_norm_from_dict(None) is None
    estimate = estimate_stains(render(LAB_B, 1.3))
    assert estimate is not None and StainMatrix.from_dict(estimate.to_dict()) == estimate


def test_unknown_method_is_refused():
    with pytest.raises(IdcscanError, match="macenko"):
        stain_norm_from_dict({"method": "vahadane"})
