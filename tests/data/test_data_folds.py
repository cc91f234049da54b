"""Cross-validation folds: grouped by patient, stratified by IDC share, seeded; and the splits
file through which a fold trains and is scored without copying patches."""

from __future__ import annotations

import numpy as np
import pytest

from idcscan.data.folds import PatientStats, fold_splits, make_folds, patient_stats, share_bins
from idcscan.data.packed import load_packed, read_splits, write_splits
from idcscan.errors import IdcscanError


@pytest.fixture
def cohort() -> PatientStats:
    """40 patients: 10 without IDC, 30 with IDC shares spread from 2% to 90%."""
    rng = np.random.default_rng(1)
    share = np.concatenate([np.zeros(10), np.linspace(0.02, 0.9, 30)])
    n = rng.integers(20, 400, size=40)
    return PatientStats(tuple(f"p{i:03d}" for i in range(40)), share, n)


def test_every_patient_in_exactly_one_test_fold_and_splits_are_disjoint(cohort):
    folds = make_folds(cohort, k=5, repeats=2, seed=3)
    assert [f.index for f in folds] == list(range(10))
    for r in range(2):
        tests = [set(f.test) for f in folds if f.repeat == r]
        assert sum(len(t) for t in tests) == 40 and set().union(*tests) == set(cohort.patients)
    for f in folds:
        train, val, test = set(f.train), set(f.val), set(f.test)
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(cohort.patients)
        assert 5 <= len(val) <= 8  # 20% of the 32 training-fold patients


def test_folds_are_stratified_by_idc_share(cohort):
    bins = dict(zip(cohort.patients, share_bins(cohort.idc_share, 4)))
    assert np.bincount(list(bins.values())).tolist() == [10, 10, 10, 10]
    for f in make_folds(cohort, k=5, seed=0, n_bins=4):
        # 10 patients per stratum -> exactly 2 of each in every test fold of 8.
        assert np.bincount([bins[p] for p in f.test], minlength=4).tolist() == [2, 2, 2, 2]


def test_folds_are_deterministic_for_a_seed_and_change_with_it(cohort):
    a = make_folds(cohort, k=4, seed=7)
    assert a == make_folds(cohort, k=4, seed=7)
    assert [f.test for f in a] != [f.test for f in make_folds(cohort, k=4, seed=8)]
    reps = make_folds(cohort, k=4, repeats=2, seed=7)
    assert [f.test for f in reps[:4]] != [f.test for f in reps[4:]]


def test_share_bins_keep_idc_free_patients_apart():
    bins = share_bins([0, 0, 0.1, 0.2, 0.5, 0.9], 3)
    assert list(bins) == [0, 0, 1, 1, 2, 2]
    assert list(share_bins([0.1, 0.2, 0.3, 0.4], 2)) == [0, 0, 1, 1]


def test_too_many_folds_or_bad_settings_are_refused(cohort):
    small = PatientStats(cohort.patients[:3], cohort.idc_share[:3], cohort.n_patches[:3])
    with pytest.raises(IdcscanError, match="fewer --folds"):
        make_folds(small, k=5)
    with pytest.raises(IdcscanError, match="--folds"):
        make_folds(cohort, k=1)
    with pytest.raises(IdcscanError, match="--val-frac"):
        make_folds(cohort, k=3, val_frac=0)


def test_splits_file_overrides_the_split_column(prepared_data, tmp_path):
    data = load_packed(prepared_data)
    stats = patient_stats(data)
    assert len(stats.patients) == 12 and stats.n_patches.sum() == len(data)
    fold = make_folds(stats, k=3, seed=0)[1]
    splits = fold_splits(data, fold)
    path = write_splits(tmp_path / "splits.csv", data.rows, splits)
    assert read_splits(path) == dict(zip(data.rows.tolist(), splits.tolist()))
    fold_data = load_packed(prepared_data, path)
    assert len(fold_data) == len(data)
    assert set(fold_data.subset("test").patient) == set(fold.test)
    assert set(fold_data.subset("val").patient) == set(fold.val)
    # The patches are the dataset's own (same memory map), only the assignment changed.
    assert fold_data.patches is not None and fold_data.patches.shape == data.patches.shape
    assert fold_data.meta["splits_file"] == str(path.resolve())


def test_splits_file_may_leave_rows_out_but_not_invent_them(prepared_data, tmp_path):
    data = load_packed(prepared_data)
    part = write_splits(tmp_path / "part.csv", data.rows[:100], ["train"] * 50 + ["val"] * 50)
    assert len(load_packed(prepared_data, part)) == 100
    bad = write_splits(tmp_path / "bad.csv", [10**9], ["train"])
    with pytest.raises(IdcscanError, match="another dataset"):
        load_packed(prepared_data, bad)
    (tmp_path / "odd.csv").write_text("row,split\n0,holdout\n")
    with pytest.raises(IdcscanError, match="holdout"):
        load_packed(prepared_data, tmp_path / "odd.csv")
