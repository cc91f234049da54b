"""Patient splits on plain arrays: sizes, validation, stratification, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from idcscan.data.splits import split_patients, split_sizes
from idcscan.errors import IdcscanError


def fake_patients(n: int, seed: int = 1) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    share = rng.beta(0.6, 1.4, n)  # skewed like the real set: many low-IDC patients
    sizes = rng.integers(20, 400, n)
    return [f"p{i:04d}" for i in range(n)], share, sizes


def test_split_sizes_follow_fractions_of_patients() -> None:
    assert split_sizes(100, 0.15, 0.15) == {"train": 70, "val": 15, "test": 15}
    assert split_sizes(12, 0.15, 0.15) == {"train": 8, "val": 2, "test": 2}
    assert split_sizes(3, 0.15, 0.15) == {"train": 1, "val": 1, "test": 1}  # at least one each
    assert split_sizes(10, 0.0, 0.2) == {"train": 8, "val": 0, "test": 2}
    assert split_sizes(7, 0.0, 1.0) == {"train": 0, "val": 0, "test": 7}
    assert split_sizes(7, 0.5, 0.5) == {"train": 0, "val": 4, "test": 3}


@pytest.mark.parametrize(
    "val, test, message",
    [
        (-0.1, 0.2, "--val-frac must be between 0 and 1"),
        (0.2, 1.5, "--test-frac must be between 0 and 1"),
        (0.6, 0.6, "at most 1"),
        (float("nan"), 0.1, "--val-frac"),
    ],
)
def test_bad_fractions_are_refused(val: float, test: float, message: str) -> None:
    with pytest.raises(IdcscanError, match=message):
        split_sizes(50, val, test)


def test_too_few_patients_for_the_splits_asked_for() -> None:
    with pytest.raises(IdcscanError, match="cannot fill 3 splits"):
        split_patients(["a", "b"], [0.1, 0.5], 0.15, 0.15)
    with pytest.raises(IdcscanError, match="No patients"):
        split_sizes(0, 0.15, 0.15)


def test_external_test_set_puts_everyone_in_test() -> None:
    pids, share, sizes = fake_patients(23)
    result = split_patients(pids, share, val_frac=0, test_frac=1, seed=3, n_patches=sizes)
    assert set(result.values()) == {"test"} and set(result) == set(pids)


def test_every_patient_gets_exactly_one_split_with_requested_counts() -> None:
    pids, share, sizes = fake_patients(209)
    result = split_patients(pids, share, 0.15, 0.15, seed=0, n_patches=sizes)
    assert sorted(result) == sorted(pids)
    counts = {s: sum(v == s for v in result.values()) for s in ("train", "val", "test")}
    assert counts == split_sizes(209, 0.15, 0.15)


def test_stratified_by_idc_share() -> None:
    pids, share, _ = fake_patients(300, seed=7)
    result = split_patients(pids, share, 0.15, 0.15, seed=0)
    by = {s: share[[result[p] == s for p in pids]] for s in ("train", "val", "test")}
    for s, values in by.items():
        assert abs(values.mean() - share.mean()) < 0.02, s
        # The whole range is sampled, not just the middle: quartiles match too.
        np.testing.assert_allclose(
            np.quantile(values, [0.25, 0.5, 0.75]), np.quantile(share, [0.25, 0.5, 0.75]), atol=0.06
        )


def test_stratification_beats_random_assignment() -> None:
    """Across seeds, stratified val splits stay closer to the overall share than random ones."""
    pids, share, _ = fake_patients(60, seed=11)
    strat, rand = [], []
    for seed in range(30):
        result = split_patients(pids, share, 0.15, 0.15, seed=seed)
        strat.append(share[[result[p] == "val" for p in pids]].mean())
        perm = np.random.default_rng(seed).permutation(60)
        rand.append(share[perm[:9]].mean())
    assert np.std(strat) < 0.6 * np.std(rand)


def test_patch_counts_balance_patch_level_idc_share() -> None:
    pids, share, sizes = fake_patients(120, seed=5)
    overall = (share * sizes).sum() / sizes.sum()

    def worst(result: dict[str, str]) -> float:
        devs = []
        for s in ("train", "val", "test"):
            sel = np.array([result[p] == s for p in pids])
            devs.append(abs((share[sel] * sizes[sel]).sum() / sizes[sel].sum() - overall))
        return max(devs)

    plain = split_patients(pids, share, 0.15, 0.15, seed=0)
    balanced = split_patients(pids, share, 0.15, 0.15, seed=0, n_patches=sizes)
    assert worst(balanced) <= worst(plain)
    assert worst(balanced) < 0.02


def test_seeded_deterministic_and_order_independent() -> None:
    pids, share, sizes = fake_patients(50)
    a = split_patients(pids, share, 0.2, 0.2, seed=4, n_patches=sizes)
    b = split_patients(pids, share, 0.2, 0.2, seed=4, n_patches=sizes)
    order = np.random.default_rng(0).permutation(50)
    c = split_patients(
        [pids[i] for i in order], share[order], 0.2, 0.2, seed=4, n_patches=sizes[order]
    )
    d = split_patients(pids, share, 0.2, 0.2, seed=5, n_patches=sizes)
    assert a == b == c
    assert a != d


def test_patient_ids_must_be_unique() -> None:
    with pytest.raises(IdcscanError, match="unique"):
        split_patients(["a", "a", "b"], [0.1, 0.2, 0.3], 0.3, 0.3)
