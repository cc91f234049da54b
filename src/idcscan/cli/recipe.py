"""The training-recipe options, defined once and shared by ``idcscan train`` and ``idcscan cv``.

``recipe_options`` appends these parameters to a command's signature (Typer reads the
signature) and hands the command their values as one ``recipe`` dict of ``TrainConfig``
fields, so cross-validation accepts exactly what training accepts, with the same defaults.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from idcscan.training.config import TrainConfig

_D = TrainConfig(data="", out="")


#: (TrainConfig field, type, typer.Option). Defaults come from TrainConfig.
RECIPE: list[tuple[str, Any, Any]] = [
    ("backbone", str, typer.Option(_D.backbone, help="Any timm model name.")),
    ("weights", str, typer.Option(_D.weights, help="imagenet | none | PATH (.safetensors/.pth "
                                                   "state_dict).")),
    ("input_size", int, typer.Option(_D.input_size,
                                     help="Network input size (patches are 50 px).")),
    ("frozen_epochs", float, typer.Option(
        _D.frozen_epochs, help="Phase 1 (frozen backbone) length cap, in passes over train.")),
    ("finetune_epochs", float, typer.Option(
        _D.finetune_epochs, help="Phase 2 (unfrozen backbone) length cap, in passes over train.")),
    ("batch_size", int, typer.Option(_D.batch_size, help="Patches per step and device.")),
    ("devices", int, typer.Option(_D.devices, help="Devices (GPUs, or CPU processes) for DDP.")),
    ("max_minutes", float | None, typer.Option(
        None, help="Time budget for the whole command (per fold in cv); the schedule is fitted "
                   "to it.")),
    ("seed", int, typer.Option(_D.seed, help="Seed for sampling, augmentation and init (and "
                                             "the folds in cv).")),
    ("unfreeze", str, typer.Option(
        _D.unfreeze, help="Phase 2 trains 'all' of the backbone, its last N layers (30), or a "
                          "share (0.7).")),
    ("lr_head", float, typer.Option(_D.lr_head, help="Peak learning rate of the head.")),
    ("lr_backbone", float, typer.Option(_D.lr_backbone,
                                        help="Peak learning rate of the backbone.")),
    ("weight_decay", float, typer.Option(_D.weight_decay, help="AdamW weight decay.")),
    ("label_smoothing", float, typer.Option(_D.label_smoothing,
                                            help="Label smoothing of the BCE targets.")),
    ("pos_weight", str, typer.Option(
        _D.pos_weight, help="Positive-class weight: balanced (n_neg/n_pos), none, or a number.")),
    ("warmup_fraction", float, typer.Option(
        _D.warmup_fraction, help="Share of phase 2 warming the learning rate up (0: none).")),
    ("frozen_time_fraction", float, typer.Option(
        _D.frozen_time_fraction, help="Share of the budget for phase 1 (0: train the whole "
                                      "network from the first step).")),
    ("final_lr_fraction", float, typer.Option(
        _D.final_lr_fraction, help="Learning rate at the end of the cosine, as a share of the "
                                   "peak (0: decay to zero).")),
    ("val_rounds", int, typer.Option(
        _D.val_rounds, help="Validation rounds in phase 2; with --max-minutes each re-plans "
                            "the rounds left from the run's own pace.")),
    ("drop_path_rate", float, typer.Option(_D.drop_path_rate, help="Stochastic depth rate.")),
    ("head", str, typer.Option(_D.head, help="mlp (the seed's head) | linear.")),
    ("patient_balance", float, typer.Option(
        _D.patient_balance, help="Sample each patch with weight (its patient's patch count) ** "
                                 "-VALUE: 0 every patch alike, 1 every patient alike.")),
    ("train_on_val", bool, typer.Option(
        _D.train_on_val, "--train-on-val/--no-train-on-val",
        help="Train on the validation patients too (a final model on every patient; needs "
             "--select last, --calibration none, a fixed threshold).")),
    ("augment", str, typer.Option(
        _D.augment, help="hed (flips, 90° rotations, light HED stain jitter) | basic (flips "
        "and 90° rotations only) | default | strong.")),
    ("hed_sigma", float | None, typer.Option(
        None, help="HED stain-jitter strength, overriding the --augment preset's.")),
    ("randstain", float, typer.Option(
        _D.randstain, help="RandStainNA-style stain augmentation strength (0: off; 1: stains "
                           "drawn from the training patches' own spread).")),
    ("normalize", str, typer.Option(
        _D.normalize, help="Input normalisation: backbone (its pretraining statistics) | "
                           "imagenet | half (mean = std = 0.5).")),
    ("select", str, typer.Option(
        _D.select, help="Exported weights: best (validation AUC) | last | ema.")),
    ("ema_decay", float, typer.Option(_D.ema_decay, help="Decay of --select ema.")),
    ("calibration", str, typer.Option(
        _D.calibration, help="temperature (prior correction + temperature on validation) | "
                             "none (P = sigmoid(logit)).")),
    ("threshold_rule", str, typer.Option(
        _D.threshold_rule, help="balanced (max balanced accuracy on validation) | a fixed "
                                "number such as 0.5.")),
    ("tta", bool, typer.Option(
        _D.tta, "--tta/--no-tta", help="Bake dihedral TTA into the ONNX graph (every "
                                       "consumer applies it; recorded in model.json).")),
    ("tta_views", int, typer.Option(
        _D.tta_views, help="Views that TTA averages: 8 (all symmetries of the square) | 4 (the "
                           "flips) | 2 (identity + horizontal flip); each is one model "
                           "evaluation per patch.")),
    ("stain_norm", str, typer.Option(
        _D.stain_norm, help="none | reinhard: per-patch Reinhard (lαβ) normalisation to a "
                            "target fitted on the training patches, inside the ONNX graph | "
                            "macenko: Macenko stains estimated per patient (training, "
                            "evaluate), per slide (slide mode) or per --stain-group (predict).")),
    ("progress", bool, typer.Option(True, help="Show progress bars.")),
]


def recipe_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the RECIPE options to ``func``'s CLI; ``func`` receives them as ``recipe``."""
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.name != "recipe"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                               annotation=kind) for name, kind, option in RECIPE]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        recipe = {name: kwargs.pop(name) for name, _, _ in RECIPE if name in kwargs}
        return func(*args, recipe=recipe, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    return wrapper
