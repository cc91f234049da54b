"""Seeded, stratified train/val/test splits BY PATIENT.

Patches of one patient are strongly correlated (same scan, stain, tumour), so a patient must
never appear in two splits or validation scores are inflated. Patients also differ a lot in
how much IDC they carry; allocating within bins of similar IDC share keeps the class balance
of each split close to the whole, which plain random assignment of ~30 patients does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from idcscan.errors import IdcscanError

SPLITS = ("train", "val", "test")


def validate_fractions(val_frac: float, test_frac: float) -> None:
    for name, value in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if not (0.0 <= value <= 1.0) or value != value:
            raise IdcscanError(f"{name} must be between 0 and 1, got {value}.")
    if val_frac + test_frac > 1.0 + 1e-9:
        raise IdcscanError(
            f"--val-frac + --test-frac must be at most 1 (got {val_frac} + {test_frac}); "
            "the rest of the patients go to train. Use --val-frac 0 --test-frac 1 to make an "
            "external test set."
        )


def split_sizes(n: int, val_frac: float, test_frac: float) -> dict[str, int]:
    """Patients per split: rounded fractions, at least one wherever a fraction asks for some."""
    validate_fractions(val_frac, test_frac)
    if n < 1:
        raise IdcscanError("No patients to split.")
    train_frac = max(0.0, 1.0 - val_frac - test_frac)
    if train_frac < 1e-9:
        train_frac = 0.0
    fracs = {"train": train_frac, "val": val_frac, "test": test_frac}
    wanted = [s for s in SPLITS if fracs[s] > 0]
    if len(wanted) > n:
        raise IdcscanError(
            f"{n} patient(s) cannot fill {len(wanted)} splits ({', '.join(wanted)}); "
            "use more patients or set unused fractions to 0."
        )
    sizes = {s: int(round(fracs[s] * n)) for s in ("val", "test")}
    for s in ("val", "test"):
        if fracs[s] > 0 and sizes[s] == 0:
            sizes[s] = 1
    if train_frac == 0.0:
        # Everything goes to val/test; give the rounding remainder to test.
        sizes["test"] = n - sizes["val"]
        sizes["train"] = 0
    else:
        sizes["train"] = n - sizes["val"] - sizes["test"]
        while sizes["train"] < 1:
            # Rounding up val/test ate train: take back from the larger of them.
            big = max(("val", "test"), key=lambda s: sizes[s])
            sizes[big] -= 1
            sizes["train"] += 1
    return {s: sizes[s] for s in SPLITS}


def _interleaved_labels(sizes: dict[str, int]) -> list[str]:
    """A sequence with ``sizes[s]`` copies of each split, each spread evenly along it."""
    n = sum(sizes.values())
    taken = dict.fromkeys(SPLITS, 0)
    seq = []
    for i in range(n):
        # Split furthest behind its even share so far; ties in fixed SPLITS order.
        best = max(SPLITS, key=lambda s: ((i + 1) * sizes[s] / n - taken[s], -SPLITS.index(s)))
        taken[best] += 1
        seq.append(best)
    return seq


def _stratified_draw(
    rng: np.random.Generator,
    share: np.ndarray,
    canon: list[int],
    sizes: dict[str, int],
    bin_size: int,
) -> list[str]:
    """One random assignment (split per patient position) stratified by IDC share."""
    tiebreak = np.empty(len(share))
    tiebreak[canon] = rng.random(len(share))
    order = sorted(range(len(share)), key=lambda i: (share[i], tiebreak[i]))
    labels = _interleaved_labels(sizes)
    for start in range(0, len(labels), bin_size):
        chunk = labels[start : start + bin_size]
        labels[start : start + bin_size] = [chunk[j] for j in rng.permutation(len(chunk))]
    out = [""] * len(share)
    for k, i in enumerate(order):
        out[i] = labels[k]
    return out


def _imbalance(
    assigned: list[str], share: np.ndarray, n_patches: np.ndarray, targets: dict[str, float]
) -> float:
    """How far the splits' patch-level IDC share and patch fractions are from the whole."""
    assigned_arr = np.array(assigned)
    positives = share * n_patches
    total, overall = n_patches.sum(), positives.sum() / max(n_patches.sum(), 1)
    score = 0.0
    for s, frac in targets.items():
        sel = assigned_arr == s
        if frac <= 0 or not sel.any():
            continue
        n_s = n_patches[sel].sum()
        score += abs(positives[sel].sum() / max(n_s, 1) - overall)
        score += 0.5 * abs(n_s / total - frac)
    return score


def split_patients(
    patients: Sequence[str],
    idc_share: Sequence[float] | np.ndarray,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 0,
    n_patches: Sequence[int] | np.ndarray | None = None,
    candidates: int = 64,
) -> dict[str, str]:
    """Assign each patient to train/val/test, stratified by IDC share; returns {patient: split}.

    Patients are ordered by IDC share (random tie-break), each split's slots are spread evenly
    along that order, and slots are shuffled within consecutive bins, so every split samples
    the whole range of shares while the assignment stays random. Patients also differ in size,
    so with ``n_patches`` the best of ``candidates`` such draws is kept: the one whose splits
    come closest to the overall patch-level IDC share and to the requested patch fractions.
    Same inputs and seed give the same result, whatever order ``patients`` come in.
    """
    patients = [str(p) for p in patients]
    share = np.asarray(idc_share, dtype=np.float64)
    if len(set(patients)) != len(patients):
        raise IdcscanError("Patient ids must be unique to split by patient.")
    if share.shape != (len(patients),):
        raise IdcscanError("Need one IDC share per patient.")
    sizes = split_sizes(len(patients), val_frac, test_frac)
    rng = np.random.default_rng(int(seed))
    # Canonical order first, so the caller's ordering cannot change the outcome.
    canon = sorted(range(len(patients)), key=lambda i: patients[i])
    train_frac = max(0.0, 1.0 - val_frac - test_frac)
    targets = {"train": train_frac, "val": val_frac, "test": test_frac}
    bin_size = max(2, int(np.ceil(1.0 / min(f for f in targets.values() if f > 1e-9))))
    best = _stratified_draw(rng, share, canon, sizes, bin_size)
    if n_patches is not None and candidates > 1:
        counts = np.asarray(n_patches, dtype=np.float64)
        if counts.shape != share.shape:
            raise IdcscanError("Need one patch count per patient.")
        best_score = _imbalance(best, share, counts, targets)
        for _ in range(candidates - 1):
            draw = _stratified_draw(rng, share, canon, sizes, bin_size)
            score = _imbalance(draw, share, counts, targets)
            if score < best_score - 1e-12:
                best, best_score = draw, score
    return {patients[i]: best[i] for i in range(len(patients))}
