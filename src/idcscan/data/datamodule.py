"""The training data: a LightningDataModule over a packed dataset, whole batches at a time.

The train split (~140 MB for the Kaggle subset) is read from the memory map once into a uint8
tensor, so a batch is a single fancy-index, not 64 file reads and 64 collate calls. Augmentation
runs on the whole batch after it reaches the device (``on_after_batch_transfer``), on the GPU
when there is one.

Training "epochs" here are the schedule's validation rounds (``epoch_steps``), not passes over
the data: the time-budgeted schedule decides how many steps fit, and a validation + checkpoint
closes each round. The sample order is one endless stream of seeded permutations of the train
split, cut into global batches and dealt to DDP ranks, so every round, every rank and every
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from idcscan.data.augment import AugmentConfig, augment_batch
from idcscan.data.packed import PackedDataset, load_packed
from idcscan.errors import IdcscanError


class PermutationStream:
    """Indices ``0..n-1`` in an endless sequence of seeded permutations (one per pass)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed

    @functools.lru_cache(maxsize=4)
    def permutation(self, pass_index: int) -> np.ndarray:
        return np.random.default_rng([self.seed, pass_index]).permutation(self.n)

    def take(self, start: int, count: int) -> np.ndarray:
        pos = np.arange(start, start + count)
        passes, offsets = np.divmod(pos, self.n)
        out = np.empty(count, dtype=np.int64)
        for p in np.unique(passes):
            sel = passes == p
            out[sel] = self.permutation(int(p))[offsets[sel]]
        return out


class WeightedStream(PermutationStream):
    """Indices drawn with replacement, ``n`` per pass, index ``i`` with probability
    ``weights[i]``: each pass is seeded like a permutation, so a resumed run draws the same."""

    def __init__(self, weights: np.ndarray, seed: int) -> None:
        super().__init__(len(weights), seed)
        self.p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))

    @functools.lru_cache(maxsize=4)
    def permutation(self, pass_index: int) -> np.ndarray:
        return np.random.default_rng([self.seed, pass_index]).choice(self.n, self.n, p=self.p)


def patient_weights(patients: np.ndarray, balance: float) -> np.ndarray:
    """Sampling weight of each patch: its patient's patch count to the power ``-balance``.

    0 samples every patch alike (patients with many patches dominate); 1 samples every patient
    alike; 0.5 is between. In the shared Kaggle subset 19 of 209 patients hold three quarters
    of the patches, so without it the model mostly learns those 19 patients' tissue and stain.
    """
    _, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.float64) ** -float(balance)


class TrainBatches(Dataset):
    """Item ``i`` is this rank's ``i``-th batch of one training round (a whole batch)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, stream: PermutationStream,
                 first_step: int, steps: int, batch_size: int, rank: int, world: int) -> None:
        self.images, self.labels, self.stream = images, labels, stream
        self.first_step, self.steps = first_step, steps
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        global_batch = self.batch_size * self.world
        start = (self.first_step + i) * global_batch + self.rank * self.batch_size
        idx = torch.from_numpy(self.stream.take(start, self.batch_size))
        return self.images[idx], self.labels[idx]


class EvalBatches(Dataset):
    """Consecutive batches of a fixed set; with DDP each rank takes every world-th patch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 rank: int = 0, world: int = 1) -> None:
        keep = torch.arange(rank, len(images), world)
        self.images, self.labels = images[keep], labels[keep]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.images[sl], self.labels[sl]


def split_tensors(data: PackedDataset, split: str | tuple[str, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    part = data.subset(split)
    images = torch.from_numpy(np.ascontiguousarray(part.images()))
    labels = torch.from_numpy(part.label.astype(np.int64))
    return images, labels


class IDCDataModule(L.LightningDataModule):
    """Train/val batches from a packed dataset directory (``idcscan prepare`` output)."""

    def __init__(self, data_dir: str | Path, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0, augment: AugmentConfig | None = AugmentConfig(),
                 eval_batch_size: int = 256, splits: str | Path | None = None,
                 patient_balance: float = 0.0, train_on_val: bool = False) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        #: Optional splits file (row, split) that overrides index.csv's split column.
        self.splits = Path(splits) if splits is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.augment = augment
        self.eval_batch_size = eval_batch_size
        #: Exponent of ``patient_weights`` (0: every patch once per pass, in a permutation).
        self.patient_balance = patient_balance
        #: Train on the validation patients too (validation then only monitors, in-sample):
        #: for a final model on every patient, whose accuracy comes from cross-validation.
        self.fit_splits: tuple[str, ...] = ("train", "val") if train_on_val else ("train",)
        self.epoch_steps: list[int] = []
        self.packed: PackedDataset | None = None
        self.train_images = self.train_labels = self.val_images = self.val_labels = None

    # ------------------------------------------------------------------ data
    def load(self) -> None:
        """Read train and val splits into memory (idempotent)."""
        if self.packed is not None:
            return
        data = load_packed(self.data_dir, self.splits)
        for split in ("train", "val"):
            if not (data.split == split).any():
                raise IdcscanError(
                    f"{self.data_dir} has no {split!r} patches; training needs both train and "
                    "val patients (re-run `idcscan prepare` with --val-frac > 0)."
                )
        self.packed = data
        self.train_images, self.train_labels = split_tensors(data, self.fit_splits)
        self.val_images, self.val_labels = split_tensors(data, "val")
        for split, labels in (("train", self.train_labels), ("val", self.val_labels)):
            if labels.min() == labels.max():
                raise IdcscanError(
                    f"The {split} split of {self.data_dir} holds only class {int(labels[0])}; "
                    "training and validation need both IDC and non-IDC patches."
                )

    def normalise_per_patient(self, norm: Any) -> None:
        """Stain-normalise train and val patches once, each patient with its own stains
        (``idcscan.stain.MacenkoNorm``), as every consumer of the bundle will."""
        assert self.packed is not None, "load() first"
        for split in ("train", "val"):
            images = getattr(self, f"{split}_images")
            patients = self.packed.subset(split).patient
            fixed = norm.normalise_groups(images.numpy(), patients)
            setattr(self, f"{split}_images", torch.from_numpy(fixed))

    def setup(self, stage: str | None = None) -> None:
        self.load()

    @property
    def n_train(self) -> int:
        self.load()
        return len(self.train_labels)

    def sampling_weights(self) -> np.ndarray | None:
        """Per training patch, its chance of being drawn (None: a permutation per pass)."""
        self.load()
        if not self.patient_balance:
            return None
        return patient_weights(self.packed.subset(self.fit_splits).patient,
                               self.patient_balance)

    def class_counts(self) -> tuple[float, float]:
        """(negatives, positives) in the train split, as the sampler draws them: with
        patient balancing, each patch counts by its sampling weight (scaled to the split's
        size), so a class-balanced loss balances what training actually sees."""
        self.load()
        labels = self.train_labels.numpy()
        weights = self.sampling_weights()
        if weights is None:
            pos = int(labels.sum())
            return len(labels) - pos, pos
        weights = weights * len(labels) / weights.sum()
        pos = float(weights[labels == 1].sum())
        return float(weights.sum()) - pos, pos

    def _stream(self, seed: int) -> PermutationStream:
        weights = self.sampling_weights()
        if weights is None:
            return PermutationStream(len(self.train_labels), seed)
        return WeightedStream(weights, seed)

    def steps_per_pass(self, world: int = 1) -> int:
        """Optimizer steps for one pass over the training split."""
        return max(1, -(-self.n_train // (self.batch_size * world)))

    def set_schedule(self, epoch_steps: list[int]) -> None:
        self.epoch_steps = list(epoch_steps)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_batches(self, epoch: int, rank: int = 0, world: int = 1) -> TrainBatches:
        self.load()
        if not self.epoch_steps:
            raise RuntimeError("set_schedule() must be called before training")
        return TrainBatches(
            self.train_images, self.train_labels, self._stream(self.seed),
            first_step=sum(self.epoch_steps[:epoch]), steps=self.epoch_steps[epoch],
            batch_size=self.batch_size, rank=rank, world=world,
        )

    def train_batches_for_probe(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` training batches for timing steps (drawn from the same data, another seed)."""
        self.load()
        stream = self._stream(self.seed + 7919)
        batches = TrainBatches(self.train_images, self.train_labels, stream, 0, n,
                               self.batch_size, 0, 1)
        return [batches[i] for i in range(n)]

    def val_batches_for_probe(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.load()
        batches = EvalBatches(self.val_images, self.val_labels, self.eval_batch_size)
        return [batches[i] for i in range(min(n, len(batches)))]

    def val_batch_count(self, world: int = 1) -> int:
        self.load()
        per_rank = -(-len(self.val_labels) // world)
        return -(-per_rank // self.eval_batch_size)

    def _loader(self, dataset: Dataset) -> DataLoader:
        # Its own generator: creating an iterator draws a seed, which must not shift the global
        # RNG that augmentation uses (a resumed round would otherwise differ from the original).
        return DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
            persistent_workers=False, pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self._loader(self.train_batches(epoch, rank, world))

    def val_dataloader(self) -> DataLoader:
        self.load()
        rank, world = self._rank_world()
        return self._loader(
            EvalBatches(self.val_images, self.val_labels, self.eval_batch_size, rank, world)
        )

    # ------------------------------------------------------------------ augmentation
    def augment_train(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment is None:
            return images.to(torch.float32)
        return augment_batch(images, self.augment)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            images = self.augment_train(images)
        return images, labels

    # ------------------------------------------------------------------ provenance
    def provenance(self) -> dict[str, Any]:
        """What the model card records about the data it was trained on."""
        self.load()
        data = self.packed
        meta = data.meta
        counts = {}
        patients = {}
        for split in ("train", "val", "test"):
            sel = data.split == split
            counts[split] = {"0": int((data.label[sel] == 0).sum()),
                             "1": int((data.label[sel] == 1).sum()), "total": int(sel.sum())}
            patients[split] = int(len(np.unique(data.patient[sel])))
        return {
            "path": str(self.data_dir.resolve()),
            "source": meta.get("source"),
            "counts": counts,
            "patients_per_split": patients,
            "n_patients": int(len(np.unique(data.patient))),
            "split_seed": meta.get("seed"),
            "val_frac": meta.get("val_frac"),
            "test_frac": meta.get("test_frac"),
            "split_by": meta.get("split_by", "patient"),
            "splits_file": str(self.splits.resolve()) if self.splits is not None else None,
            "prepared_by": meta.get("idcscan_version"),
        }
