"""The first recipe (two phases, partial unfreezing, calibrated P(IDC), balanced threshold),
still an option: tests of those mechanics name it explicitly instead of relying on defaults,
which now follow the plain recipe that won cross-validation (docs/RESULTS.md)."""

FIRST_RECIPE = dict(
    frozen_epochs=1.0, frozen_time_fraction=0.08, unfreeze="0.7", lr_backbone=5e-4,
    weight_decay=0.02,
    label_smoothing=0.05, warmup_fraction=0.05, final_lr_fraction=0.02, drop_path_rate=0.05,
    head="mlp", augment="default", select="best", val_rounds=3, calibration="temperature",
    threshold_rule="balanced", tta=False,
)

FIRST_RECIPE_ARGS = [
    arg
    for key, value in FIRST_RECIPE.items()
    for arg in (
        [f"--{key.replace('_', '-')}", str(value)] if not isinstance(value, bool)
        else [f"--{'' if value else 'no-'}{key}"]
    )
]
