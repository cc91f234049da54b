"""Exponential moving average of the weights (``--select ema``), as a Lightning callback.

Averaging the weights over the last part of training smooths out the noise of the final steps
without choosing a checkpoint on the validation patients (a choice that may not transfer to
other patients). The average is timm's ``ModelEmaV3`` with its warm-up, so early, random
weights fade out quickly; it is kept in the checkpoint, so ``--resume`` continues it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from timm.utils import ModelEmaV3


class WeightEMA(L.Callback):
    """Keeps ``ema.module``: the moving average of ``pl_module.net`` after every step."""

    def __init__(self, decay: float = 0.998) -> None:
        self.decay = decay
        self.ema: ModelEmaV3 | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is None:
            self.ema = ModelEmaV3(pl_module.net, decay=self.decay, use_warmup=True)
        if self._pending is not None:
            self.ema.module.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
                           ) -> None:
        self.ema.update(pl_module.net, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {}
        return {"ema": {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("ema"):
            self._pending = state_dict["ema"]

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The averaged weights, on the CPU (what the bundle exports)."""
        return {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
