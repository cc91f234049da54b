"""CLI command: quantize (int8 or pre-optimised copy of a bundle for faster CPU serving)."""

from __future__ import annotations

from pathlib import Path

import typer

from idcscan.cli.app import app, console, out, print_disclaimer
from idcscan.errors import IdcscanError


@app.command()
def quantize(
    bundle: Path = typer.Argument(
        ..., help="Bundle directory to convert (model.onnx + model.json)."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the new bundle."),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="Calibration patches: a prepared dataset (its validation split is used) or a folder "
        "of patch images. Default: synthetic H&E-like patches (fine for a demo model only).",
    ),
    calibration_size: int = typer.Option(512, help="Patches used to calibrate activation ranges."),
    check_size: int = typer.Option(
        256, help="Further patches on which the int8 model is compared with fp32."
    ),
    fmt: str = typer.Option("qdq", "--format", help="Quantized graph format: qdq or qoperator."),
    method: str = typer.Option("minmax", help="Calibration method: minmax, entropy or percentile."),
    per_channel: bool = typer.Option(True, help="Per-channel weight scales (more accurate)."),
    optimize_only: bool = typer.Option(
        False,
        "--optimize-only",
        help="Instead of int8, save ONNX Runtime's fused fp32 graph (same numbers, faster start).",
    ),
    level: str = typer.Option(
        "extended",
        help="With --optimize-only: basic, extended (portable) or all (tied to this CPU type).",
    ),
    seed: int = typer.Option(0, help="Seed for sampling calibration patches."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Make a faster CPU bundle: static int8 quantization (default) or graph optimisation."""
    try:
        from idcscan.inference.quantize import QuantizeConfig, optimize_bundle, quantize_bundle
    except ImportError as exc:  # onnxruntime.quantization needs the onnx package
        raise IdcscanError(
            f"Quantization needs the training extras ({exc}); install them with "
            "`pip install 'idcscan[train]'`."
        ) from exc

    if optimize_only:
        result = optimize_bundle(bundle, out_dir, level=level, overwrite=force)  # type: ignore[arg-type]
        out.print(f"Optimised bundle written to [bold]{result.path}[/] ({result.card.name}).")
        print_disclaimer()
        return

    if fmt not in ("qdq", "qoperator"):
        raise IdcscanError(f"--format must be qdq or qoperator, not {fmt!r}.")
    if method not in ("minmax", "entropy", "percentile"):
        raise IdcscanError(f"--method must be minmax, entropy or percentile, not {method!r}.")
    if calibration_size < 1 or check_size < 0:
        raise IdcscanError("--calibration-size must be at least 1 and --check-size at least 0.")
    config = QuantizeConfig(
        format=fmt,  # type: ignore[arg-type]
        per_channel=per_channel,
        calibration_size=calibration_size,
        check_size=check_size,
        method=method,  # type: ignore[arg-type]
        seed=seed,
    )
    if calibration is None:
        console.print(
            "[yellow]No --calibration data: calibrating on synthetic H&E-like patches. "
            "For a model trained on real tissue pass its prepared dataset.[/]"
        )
    with console.status("Calibrating and quantizing…"):
        result = quantize_bundle(bundle, out_dir, calibration, config, overwrite=force)
    q = result.card.model_extra["quantization"]
    cal, check = q["calibration"], q["check"]
    out.print(f"int8 bundle written to [bold]{result.path}[/] ({result.card.name}).")
    kind = {"packed": "validation split", "images": "image files", "synthetic": "synthetic"}
    out.print(
        f"Calibrated on {cal['patches']} patches ({kind.get(cal['kind'], cal['kind'])}) "
        f"from {cal['source']}.",
        soft_wrap=True,
    )
    out.print(
        f"Against fp32 on {check['patches']} {'held-out' if check['held_out'] else 'calibration'} "
        f"patches: max |ΔP(IDC)| {check['max_abs_prob_diff']:.4f}, mean "
        f"{check['mean_abs_prob_diff']:.4f}, "
        f"same decision {100 * check['decision_agreement']:.1f}%.",
        soft_wrap=True,
    )
    out.print("Card metrics are the fp32 model's: run `idcscan evaluate` on the new bundle.")
    print_disclaimer()
