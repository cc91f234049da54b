"""Patient-grouped, label-stratified K-fold cross-validation folds.

One split of ~30 test patients is too few to choose a recipe on: patients differ in stain,
tissue make-up and how coarsely their IDC was outlined, so a default that wins on one split
may lose on the next. K folds put every patient in exactly one test fold (per repeat). Folds
are grouped by patient (a patient's patches never straddle train and test) and stratified by
each patient's IDC share, binned into quantiles with the IDC-free patients as a bin of their
own, via scikit-learn's ``StratifiedGroupKFold`` over patients (so each test fold gets its
share of every stratum, counted in patients, whatever their patch counts). Each
training fold then carves its own inner validation patients, grouped and stratified the same
way (``split_patients``), for checkpointing, calibration and the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from idcscan.data.packed import PackedDataset
from idcscan.data.splits import split_patients
from idcscan.errors import IdcscanError


@dataclass(frozen=True)
class Fold:
    """One train/val/test assignment of patients; ``index`` runs over repeats x folds."""

    index: int
    repeat: int
    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def split_of(self) -> dict[str, str]:
        return {**dict.fromkeys(self.train, "train"), **dict.fromkeys(self.val, "val"),
                **dict.fromkeys(self.test, "test")}

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PatientStats:
    """Per patient, in sorted patient order: IDC share and number of patches."""

    patients: tuple[str, ...]
    idc_share: np.ndarray
    n_patches: np.ndarray


def patient_stats(data: PackedDataset) -> PatientStats:
    patients, inverse = np.unique(data.patient, return_inverse=True)
    n = np.bincount(inverse, minlength=len(patients))
    pos = np.bincount(inverse, weights=data.label.astype(np.float64), minlength=len(patients))
    return PatientStats(tuple(str(p) for p in patients), pos / np.maximum(n, 1), n)


def share_bins(share: Sequence[float] | np.ndarray, n_bins: int) -> np.ndarray:
    """Stratum per patient: 0 for no IDC at all, then ``n_bins - 1`` quantile bins of the
    positive shares (by rank, so ties cannot empty a bin)."""
    share = np.asarray(share, dtype=np.float64)
    out = np.zeros(len(share), dtype=np.int64)
    positive = np.flatnonzero(share > 0)
    if len(positive) == 0 or n_bins < 2:
        return out
    order = positive[np.argsort(share[positive], kind="stable")]
    q = n_bins - 1 if (share == 0).any() else n_bins
    out[order] = 1 + (np.arange(len(order)) * q) // len(order)
    return out - out.min()


def default_bins(n_patients: int, k: int) -> int:
    """As many strata as keep about two patients per stratum in every fold, at most 5."""
    return int(max(1, min(5, n_patients // (2 * k))))


def make_folds(
    stats: PatientStats,
    k: int,
    repeats: int = 1,
    seed: int = 0,
    val_frac: float = 0.2,
    n_bins: int | None = None,
) -> list[Fold]:
    """``repeats`` x ``k`` folds; the same inputs and seed always give the same folds."""
    n = len(stats.patients)
    if k < 2:
        raise IdcscanError(f"--folds must be at least 2, got {k}.")
    if repeats < 1:
        raise IdcscanError(f"--repeats must be at least 1, got {repeats}.")
    if n < k:
        raise IdcscanError(f"{n} patients cannot fill {k} folds; use fewer --folds.")
    if not 0 < val_frac < 1:
        raise IdcscanError(f"--val-frac must be between 0 and 1, got {val_frac}.")
    strata = share_bins(stats.idc_share, n_bins or default_bins(n, k))
    groups = np.arange(n)  # one sample per patient: the patient is the unit
    folds = []
    for r in range(repeats):
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True,
                                    random_state=int(np.random.SeedSequence([seed, r])
                                                     .generate_state(1)[0]))
        for f, (train_idx, test_idx) in enumerate(sgkf.split(groups, strata, groups)):
            test = sorted({stats.patients[g] for g in groups[test_idx]})
            rest = np.unique(groups[train_idx])
            inner = split_patients(
                [stats.patients[g] for g in rest], stats.idc_share[rest], val_frac=val_frac,
                test_frac=0.0, seed=int(np.random.SeedSequence([seed, r, f]).generate_state(1)[0]),
                n_patches=stats.n_patches[rest])
            folds.append(Fold(
                index=r * k + f, repeat=r, fold=f,
                train=tuple(sorted(p for p, s in inner.items() if s == "train")),
                val=tuple(sorted(p for p, s in inner.items() if s == "val")),
                test=tuple(test),
            ))
    return folds


def fold_splits(data: PackedDataset, fold: Fold) -> np.ndarray:
    """The split of every entry of ``data`` under ``fold`` (for a splits file)."""
    of = fold.split_of()
    missing = sorted(set(np.unique(data.patient)) - set(of))
    if missing:
        raise IdcscanError(f"Patient {missing[0]} is in no fold; the folds were made for "
                           "other data.")
    return np.array([of[p] for p in data.patient], dtype=str)
