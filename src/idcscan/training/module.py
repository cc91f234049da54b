"""The LightningModule: loss, the two training phases, validation AUC, optimizer and schedule.

Phase 1 trains the head on a frozen backbone: the backbone runs under ``no_grad`` with its
BatchNorm layers in eval mode, so pretrained statistics are not disturbed by a random head's
gradients. Phase 2 also trains the backbone's last layers (``unfreeze``; "all" = full
fine-tuning) at their own learning rate. The phase is a function of the global step alone, so
a resumed run lands in the right phase, and the set of trainable parameters never changes
(layers frozen in both phases are frozen from the start), which keeps DDP's gradient buckets
valid across the phase switch.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC

from idcscan.training.network import IDCNet
from idcscan.training.schedule import Schedule

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def backbone_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's parameterised layers (convs, norms, ...) in definition order.

    "Unfreeze the last N layers" counts these, like the seed's Keras recipe counted layers.
    """
    # "Own parameters", not "leaf": timm's BatchNormAct2d holds its activation as a child.
    return [
        (name, m) for name, m in backbone.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]


def unfrozen_count(unfreeze: str, n_layers: int) -> int:
    """How many trailing layers phase 2 trains: "all", a count ("30"), or a share ("0.7")."""
    if unfreeze == "all":
        return n_layers
    value = float(unfreeze)
    if "." in unfreeze and 0 < value <= 1:
        return int(value * n_layers)
    return min(int(value), n_layers)


def split_backbone(backbone: nn.Module, unfreeze: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """(always-frozen layers, layers trained in phase 2)."""
    layers = [m for _, m in backbone_layers(backbone)]
    n = unfrozen_count(unfreeze, len(layers))
    return layers[: len(layers) - n], layers[len(layers) - n:]


def smooth_targets(labels: torch.Tensor, eps: float) -> torch.Tensor:
    return labels.to(torch.float32) * (1 - eps) + eps / 2


class IDCModule(L.LightningModule):
    """IDCNet + the recipe that trains it."""

    def __init__(self, net: IDCNet, schedule: Schedule | None = None, *, unfreeze: str = "all",
                 lr_head: float = 1e-3, lr_backbone: float = 5e-4, weight_decay: float = 0.02,
                 label_smoothing: float = 0.05, pos_weight: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.net = net
        self.schedule = schedule
        self.unfreeze = unfreeze
        self.lr_head, self.lr_backbone = lr_head, lr_backbone
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)
        frozen, tail = split_backbone(net.backbone, unfreeze)
        for layer in frozen:
            layer.requires_grad_(False)
        self._frozen_bn = [m for m in frozen if isinstance(m, _BN_TYPES)]
        self._tail_bn = [m for m in tail if isinstance(m, _BN_TYPES)]
        self._tail_params = [p for m in tail for p in m.parameters(recurse=False)]
        self.phase = 1
        self._skipped = False  # the batch just seen ended its round (no optimizer step)
        self.val_auc = BinaryAUROC()
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        #: Gathered validation logits/labels of the best round so far (rank 0 uses them).
        self.best_val: dict[str, Any] | None = None
        #: ... and of the latest round (``--select last`` reuses them when they are final).
        self.last_val: dict[str, Any] | None = None

    # ------------------------------------------------------------------ phases
    def set_phase(self, phase: int) -> None:
        self.phase = phase
        self._apply_bn_modes()

    def _apply_bn_modes(self) -> None:
        if not self.training:
            return
        for m in self._frozen_bn:
            m.eval()
        for m in self._tail_bn:
            m.train(self.phase == 2)

    def train(self, mode: bool = True) -> "IDCModule":
        super().train(mode)
        self._apply_bn_modes()
        return self

    def phase_at(self, step: int) -> int:
        return self.schedule.phase(step) if self.schedule is not None else 2

    # ------------------------------------------------------------------ forward / loss
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def train_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.phase == 1:
            with torch.no_grad():
                fmap = self.net.features(images)
            return self.net.head(fmap.mean(dim=(2, 3)))
        return self.net(images)

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor,
                                                                                   torch.Tensor]:
        logits = self.train_logits(images).float()
        target = smooth_targets(labels, self.label_smoothing)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        return loss, logits

    def on_train_epoch_start(self) -> None:
        # Augmentation and dropout draws depend only on (seed, round, rank), so a round that a
        # resumed run replays is the very round the interrupted run would have trained.
        torch.manual_seed(hash((self.seed, self.current_epoch, self.global_rank)) % (2**63))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # A re-fit on a slowed machine may end the round sooner than its data loader (built
        # at the round's start) would: the round's validation ran after its new last step
        # (``ScheduleFit``), and -1 ends the round here.
        steps = self.schedule.epoch_steps if self.schedule is not None else []
        if self.current_epoch < len(steps) and batch_idx >= steps[self.current_epoch]:
            self._skipped = True
            return -1
        phase = self.phase_at(self.global_step)
        if phase != self.phase:
            self.set_phase(phase)
        self._apply_bn_modes()
        return None

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning steps the scheduler for a batch skipped by ``on_train_batch_start``
        too; the learning rate must follow the optimizer's steps, so that one is left out."""
        if self._skipped:
            self._skipped = False
            return
        scheduler.step() if metric is None else scheduler.step(metric)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        loss, _ = self.compute_loss(images, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(labels))
        self.log("phase", float(self.phase), on_step=False, on_epoch=True)
        return loss

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_logits, self._val_labels = [], []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images).float()
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        self.val_auc.update(logits, labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=False, batch_size=len(labels),
                 sync_dist=True)
        self._val_logits.append(logits.detach())
        self._val_labels.append(labels.detach())

    def on_validation_epoch_end(self) -> None:
        auc = self.val_auc.compute()
        self.val_auc.reset()
        self.log("val/auc", auc, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking or not self._val_logits:
            return
        logits = torch.cat(self._val_logits)
        labels = torch.cat(self._val_labels)
        if self.trainer.world_size > 1:
            logits, labels = self._gather_uneven(logits), self._gather_uneven(labels)
        self.last_val = {"auc": float(auc), "epoch": self.current_epoch,
                         "step": self.global_step, "logits": logits.cpu(),
                         "labels": labels.cpu()}
        if self.best_val is None or float(auc) > self.best_val["auc"]:
            self.best_val = self.last_val

    def _gather_uneven(self, t: torch.Tensor) -> torch.Tensor:
        """all_gather for shards whose lengths differ by at most one (rank-strided split)."""
        n = torch.tensor([len(t)], device=t.device)
        sizes = self.all_gather(n).flatten().tolist()
        pad = torch.zeros(max(sizes) - len(t), dtype=t.dtype, device=t.device)
        gathered = self.all_gather(torch.cat([t, pad]))  # (world, max)
        return torch.cat([gathered[r, : sizes[r]] for r in range(len(sizes))])

    # ------------------------------------------------------------------ optimization
    def param_groups(self) -> list[dict[str, Any]]:
        """Head and trainable backbone layers; no weight decay on norms and biases."""
        tail = {id(p) for p in self._tail_params}
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            part = "backbone" if id(p) in tail else "head"
            decay = p.ndim > 1
            groups.setdefault((part, decay), []).append(p)
        out = []
        for (part, decay), params in sorted(groups.items()):
            lr = self.lr_backbone if part == "backbone" else self.lr_head
            out.append({"params": params, "lr": lr, "initial_lr": lr, "part": part,
                        "weight_decay": self.weight_decay if decay else 0.0})
        return out

    def configure_optimizers(self):
        groups = self.param_groups()
        optimizer = torch.optim.AdamW(groups, lr=self.lr_head)
        schedule = self.schedule
        lambdas = [
            (lambda s, part=g["part"]: schedule.lr_factor(s, part)) if schedule is not None
            else (lambda s: 1.0)
            for g in groups
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ export helpers
    def fold_prior_correction(self) -> float:
        """Remove the log-odds shift that ``pos_weight`` trains into the logit.

        Minimising BCE with positives weighted by ``w`` moves the optimal logit by ``log w``;
        subtracting it from the last bias restores logits on the true-prior scale, so
        temperature scaling only has to fix the scale. Returns the shift applied.
        """
        shift = -math.log(float(self.pos_weight))
        with torch.no_grad():
            self.net.head.fc2.bias.add_(shift)
        return shift
