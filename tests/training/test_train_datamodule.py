"""The training DataModule: batches from the memory map, reproducible order, DDP shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from idcscan.data.datamodule import (
    EvalBatches,
    IDCDataModule,
    PermutationStream,
    WeightedStream,
    patient_weights,
)
from idcscan.errors import IdcscanError


def test_stream_visits_every_patch_once_per_pass():
    stream = PermutationStream(37, seed=3)
    first, second = stream.take(0, 37), stream.take(37, 37)
    assert sorted(first) == list(range(37)) and sorted(second) == list(range(37))
    assert not np.array_equal(first, second)
    # Any window is the same slice of the same stream, wherever it is cut.
    assert np.array_equal(stream.take(30, 20), np.concatenate([first, second])[30:50])
    assert np.array_equal(PermutationStream(37, seed=3).take(5, 50), stream.take(5, 50))


def test_patient_balance_draws_patients_alike_however_many_patches_they_have():
    # one patient with 90 patches, nine with 1 each
    patients = np.array(["big"] * 90 + [f"p{i}" for i in range(9)])
    assert np.allclose(patient_weights(patients, 0.0), 1.0)
    weights = patient_weights(patients, 1.0)
    drawn = WeightedStream(weights, seed=1).take(0, 20_000)
    share_big = np.mean(patients[drawn] == "big")
    assert share_big == pytest.approx(0.1, abs=0.02)  # 1 patient of 10, not 90 patches of 99
    half = WeightedStream(patient_weights(patients, 0.5), seed=1).take(0, 20_000)
    assert 0.1 < np.mean(patients[half] == "big") < 0.9
    # reproducible and cut anywhere, like the permutation stream (resume)
    again = WeightedStream(weights, seed=1)
    assert np.array_equal(again.take(150, 60), drawn[150:210])


def test_patient_balance_weighs_the_class_counts_and_keeps_the_order_reproducible(
        prepared_data):
    plain = IDCDataModule(prepared_data, batch_size=16, seed=0)
    balanced = IDCDataModule(prepared_data, batch_size=16, seed=0, patient_balance=1.0)
    neg, pos = balanced.class_counts()
    assert neg + pos == pytest.approx(sum(plain.class_counts()))
    labels = balanced.train_labels.numpy()
    patients = balanced.packed.subset("train").patient
    share = np.mean([labels[patients == p].mean() for p in np.unique(patients)])
    assert pos / (neg + pos) == pytest.approx(share)  # every patient counts once
    balanced.set_schedule([6])
    again = IDCDataModule(prepared_data, batch_size=16, seed=0, patient_balance=1.0)
    again.set_schedule([6])
    assert torch.equal(again.train_batches(0)[4][0], balanced.train_batches(0)[4][0])


def test_train_batches_match_the_split_and_are_reproducible(prepared_data):
    dm = IDCDataModule(prepared_data, batch_size=16, seed=0)
    dm.set_schedule([5, 7])
    batches = dm.train_batches(epoch=1)
    assert len(batches) == 7
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (16, 50, 50, 3)
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1}
    # Round 1 continues the stream where round 0 stopped, in a fresh object too (resume).
    again = IDCDataModule(prepared_data, batch_size=16, seed=0)
    again.set_schedule([5, 7])
    assert torch.equal(again.train_batches(epoch=1)[3][0], batches[3][0])
    whole = IDCDataModule(prepared_data, batch_size=16, seed=0)
    whole.set_schedule([12])
    assert torch.equal(whole.train_batches(epoch=0)[5][0], batches[0][0])


def test_ddp_ranks_get_disjoint_halves_of_each_global_batch(prepared_data):
    dm = IDCDataModule(prepared_data, batch_size=8, seed=0)
    dm.set_schedule([4])
    single = IDCDataModule(prepared_data, batch_size=16, seed=0)
    single.set_schedule([4])
    r0, r1 = dm.train_batches(0, rank=0, world=2), dm.train_batches(0, rank=1, world=2)
    for i in range(4):
        joined = torch.cat([r0[i][0], r1[i][0]])
        assert torch.equal(joined, single.train_batches(0)[i][0])


def test_validation_covers_val_split_once_across_ranks(prepared_data):
    dm = IDCDataModule(prepared_data, batch_size=16)
    dm.load()
    n = len(dm.val_labels)
    parts = [EvalBatches(dm.val_images, dm.val_labels, 7, rank, 2) for rank in (0, 1)]
    total = sum(len(p[i][1]) for p in parts for i in range(len(p)))
    assert total == n
    assert dm.val_batch_count(world=2) == len(
        EvalBatches(dm.val_images, dm.val_labels, dm.eval_batch_size, 0, 2))


def test_provenance_records_counts_and_split(prepared_data):
    dm = IDCDataModule(prepared_data)
    info = dm.provenance()
    assert info["split_by"] == "patient" and info["split_seed"] == 0
    assert sum(c["total"] for c in info["counts"].values()) == 480
    assert info["n_patients"] == 12
    assert dm.class_counts()[0] + dm.class_counts()[1] == info["counts"]["train"]["total"]


def test_missing_dataset_says_what_to_run(tmp_path):
    with pytest.raises(IdcscanError, match="idcscan prepare"):
        IDCDataModule(tmp_path).load()


def test_train_on_val_trains_on_every_patient_and_still_monitors_validation(prepared_data):
    plain = IDCDataModule(prepared_data, batch_size=16, seed=0)
    every = IDCDataModule(prepared_data, batch_size=16, seed=0, train_on_val=True)
    assert every.n_train == plain.n_train + len(plain.val_labels)
    assert len(every.val_labels) == len(plain.val_labels)  # validation still measured


def test_train_on_val_refuses_choices_made_on_validation(tmp_path):
    from idcscan.training.config import TrainConfig

    TrainConfig(data="d", out="o", train_on_val=True).validate()  # the default recipe is fine
    for bad in ({"select": "best"}, {"calibration": "temperature"},
                {"threshold_rule": "balanced"}):
        with pytest.raises(IdcscanError, match="--train-on-val"):
            TrainConfig(data="d", out="o", train_on_val=True, **bad).validate()
