"""What a training step costs on this machine: measured on a throwaway copy of the model.

``schedule`` plans from these figures; they live apart from it because measuring needs the
real LightningModule (``training.module``), which itself follows the schedule.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from idcscan.training.module import IDCModule


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_rates(module: Any, datamodule: Any, device: torch.device, *, autocast: Any = None,
                  steps: int = 3, warmup: int = 1) -> tuple[float, float, float]:
    """Seconds per phase-1 step, phase-2 step and validation batch, on a throwaway copy.

    The copy goes through the real code path (batch indexing, augmentation, ``compute_loss``,
    AdamW on the same parameter groups), so the numbers include everything a step costs.
    """
    probe = IDCModule(copy.deepcopy(module.net).to(device), None, unfreeze=module.unfreeze,
                      label_smoothing=module.label_smoothing)
    probe.pos_weight = module.pos_weight.to(device)
    optimizer = torch.optim.AdamW(probe.param_groups(), lr=1e-6)
    batches = datamodule.train_batches_for_probe(warmup + steps)
    ctx = autocast or _null_context
    results = []
    for phase in (1, 2):
        probe.train()
        probe.set_phase(phase)
        times = []
        for i, (images, labels) in enumerate(batches):
            _sync(device)
            start = time.perf_counter()
            images, labels = images.to(device), labels.to(device)
            images = datamodule.augment_train(images)
            with ctx():
                loss, _ = probe.compute_loss(images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        results.append(float(sorted(times)[(len(times) - 1) // 2]))  # median (lower)
    probe.eval()
    val = datamodule.val_batches_for_probe(warmup + 2)
    times = []
    with torch.no_grad():
        for images, _ in val:
            _sync(device)
            start = time.perf_counter()
            with ctx():
                probe.net(images.to(device))
            _sync(device)
            times.append(time.perf_counter() - start)
    # Warm passes only, unless the validation set is a single batch (then: conservative).
    warm = sorted(times[warmup:] or times)
    results.append(float(warm[(len(warm) - 1) // 2]))
    del probe, optimizer
    return results[0], results[1], results[2]


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def estimate_export_s(net: torch.nn.Module) -> float:
    """ONNX export time grows with the number of graph nodes, i.e. modules (measured: a
    200-module EfficientNet-Lite0 exports in ~17 s on 2 busy cores; see tests)."""
    n_modules = sum(1 for _ in net.modules())
    return EXPORT_BASE_S + EXPORT_PER_MODULE_S * n_modules


EXPORT_BASE_S = 2.0
EXPORT_PER_MODULE_S = 0.055
