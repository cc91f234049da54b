"""Batch augmentation: right shapes and ranges, exact symmetries, stain jitter that stays close."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from idcscan.data.augment import AugmentConfig, augment_batch, hed_jitter

NO_COLOUR = dict(hed_sigma=0.0, brightness=0.0, contrast=0.0, saturation=0.0)


@pytest.fixture
def batch(rng) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, 256, (64, 50, 50, 3), dtype=np.uint8))


def test_output_is_float_nhwc_in_pixel_range(batch):
    out = augment_batch(batch, AugmentConfig())
    assert out.dtype == torch.float32 and out.shape == batch.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert not torch.allclose(out, batch.float())  # it did something


def test_dihedral_only_gives_exact_symmetries_of_each_patch(batch):
    torch.manual_seed(0)
    out = augment_batch(batch, AugmentConfig(rotate_degrees=0, zoom=0, **NO_COLOUR))
    x = batch.float()
    views = []
    for flip in (False, True):
        base = x.flip(2) if flip else x
        views += [torch.rot90(base, k, dims=(1, 2)) for k in range(4)]
    views = torch.stack(views, 1)  # (N, 8, H, W, C)
    err = (views - out[:, None]).abs().amax(dim=(2, 3, 4))  # (N, 8)
    assert float(err.min(dim=1).values.max()) < 1e-2  # each output is one of its 8 views
    used = set(err.argmin(dim=1).tolist())
    assert len(used) >= 6  # and the draws cover the group


def test_small_rotation_and_zoom_keep_the_patch_content(batch):
    smooth = torch.nn.functional.avg_pool2d(batch.permute(0, 3, 1, 2).float(), 9, 1, 4)
    smooth = smooth.permute(0, 2, 3, 1).contiguous()
    out = augment_batch(smooth, AugmentConfig(dihedral=False, **NO_COLOUR))
    assert float((out - smooth).abs().mean()) < 10  # same picture, slightly moved


def test_hed_jitter_is_identity_at_zero_and_bounded_otherwise(batch):
    x = batch.float()
    assert torch.allclose(hed_jitter(x, 0.0), x, atol=1e-2)
    torch.manual_seed(1)
    jittered = hed_jitter(x, 0.05)
    # Stain strength changes a little per patch: colours move but stay recognisable.
    diff = (jittered.clamp(0, 255) - x).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 40 and float(diff.mean()) > 0.5


def test_augmentation_is_much_cheaper_than_a_training_step(batch):
    """The data pipeline must never be what the CPU waits for (>= 5x the step rate)."""
    from idcscan.training.network import IDCNet
    from idcscan.training.train import preprocessing_for

    def best_of(fn, n=3):
        """CPU seconds this thread spent (torch runs on it with one thread): unlike a wall
        clock, unaffected by other processes competing for the cores."""
        fn()
        times = []
        for _ in range(n):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        return min(times)

    net = IDCNet("tf_efficientnet_lite0", preprocessing_for("tf_efficientnet_lite0", 64))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    labels = torch.randint(0, 2, (len(batch),)).float()

    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(batch.float()), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the ratio, not the machine's load, is under test
    try:
        augment_s, step_s = best_of(lambda: augment_batch(batch)), best_of(step, n=2)
    finally:
        torch.set_num_threads(threads)
    assert augment_s * 5 < step_s, (augment_s, step_s)
