"""CLI commands about model bundles: ``quantize`` a bundle, build the ``demo`` bundle, print a
bundle's ``card``, list the shipped ``models``, ``export wsinfer`` a bundle for WSInfer and
QuPath."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from idcscan.cli.app import app, command_group, console, out, print_disclaimer
from idcscan.cli.arguments import BUNDLE_HELP
from idcscan.errors import IdcscanError


@app.command()
def quantize(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP, show_default=False),
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
        from idcscan.runtime.quantize import QuantizeConfig, optimize_bundle, quantize_bundle
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


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out", help="Where the demo pipeline writes."),
    minutes: float = typer.Option(3.0, help="Training budget in minutes (whole train command)."),
    data: Path | None = typer.Option(
        None, help="A Kaggle-layout folder to train on instead of synthetic data."
    ),
    seed: int = typer.Option(0, help="Seed for data, split and training."),
) -> None:
    """Build the demo bundle (cached) and its evaluation report; `make demo` then serves it."""
    from idcscan.training.pipelines import build_demo

    result = build_demo(out_dir, minutes=minutes, data=data, seed=seed)
    state = "trained" if result.trained else "reused (cached)"
    console.print(f"bundle {state}: {result.bundle}", highlight=False)
    console.print(f"evaluation report: {result.report / 'report.md'}", highlight=False)
    out.print(str(result.bundle))
    print_disclaimer()


@app.command()
def card(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP, show_default=False),
    report: Path | None = typer.Option(
        None, help="The `idcscan evaluate` folder of this bundle (default: found next to it)."
    ),
) -> None:
    """Print the model card in Markdown: classes, decision rule, data, validation and test metrics.

    model.json keeps every detail for machines; this is the summary a person reads. Test metrics with 95% CIs appear when an evaluation report of this very bundle exists.
    """  # noqa: E501
    from idcscan.runtime.bundle import load_bundle
    from idcscan.runtime.model_card import card_markdown, find_report, load_report
    from idcscan.runtime.model_card import readable_card

    loaded = load_bundle(bundle)
    folder = report if report is not None else find_report(loaded.path, loaded.card)
    # Relative to where the command runs: a card shows no absolute paths.
    link = os.path.relpath(folder / "report.md") if folder is not None else None
    out.print(card_markdown(readable_card(loaded.card, load_report(folder), link)),
              markup=False, highlight=False)  # the card carries the disclaimer


@app.command()
def models() -> None:
    """List the models that ship with idcscan: name, network, what data, expected accuracy."""
    from rich.table import Table

    from idcscan.runtime.bundle import load_bundle
    from idcscan.runtime.shipped_card import shipped_summary
    from idcscan.runtime.shipped import DEFAULT, shipped_models

    found = shipped_models()
    if not found:
        raise IdcscanError("This install ships no model; train one with `idcscan train`.")
    table = Table(title="Shipped models (use the name wherever a BUNDLE is asked for)")
    for column in ("name", "network", "trained on", "expected on new patients"):
        table.add_column(column, overflow="fold")
    for model in found:
        summary = shipped_summary(load_bundle(model.path).card)
        name = f"{model.name}\n({DEFAULT})" if model.is_default else model.name
        table.add_row(name, summary["network"], summary["data"], summary["expected"])
    out.print(table)
    print_disclaimer()


@app.command("build-shipped")
def build_shipped(
    kaggle: Path = typer.Argument(..., help="The Kaggle patches (IDC_regular_ps50_idx5/ or its "
                                            "parent)."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where the bundle goes. Default: the package's shipped models "
        "(src/idcscan/shipped/NAME in a checkout), made the default there."),
    work: Path = typer.Option(Path("shipped-build"), help="Working folder: packed data and "
                                                          "the members' runs (resumable)."),
    oof: list[Path] = typer.Option(
        [], help="Out-of-fold predictions of each member's recipe under CV (one CSV per "
                 "member, in order): the card's expected accuracy comes from them. Without "
                 "it, the estimate of the model being replaced is kept."),
    examples: bool = typer.Option(
        True, "--examples/--no-examples", help="With the default --out, also write the "
        "example patches and section that ship beside the model."),
) -> None:
    """Rebuild the shipped model from the Kaggle data: the recipe chosen under CV, trained on
    every patient with a fixed seed (docs/MODELS.md)."""
    import shlex
    import sys

    from idcscan.training.pipelines import SHIPPED_RECIPE, install_shipped
    from idcscan.training.pipelines import build_shipped as build

    command = shlex.join(["idcscan", *sys.argv[1:]])
    target = out_dir or work / "bundle-out"
    with console.status(f"Training {len(SHIPPED_RECIPE.members)} member(s) of "
                        f"{SHIPPED_RECIPE.name} on every patient..."):
        result = build(kaggle, target, work, oof=oof, command=command)
        if out_dir is None:
            result = install_shipped(result, kaggle, examples=examples)
    card = result.bundle.card
    out.print(f"{card.name}: {result.bundle.path} ({card.data.get('n_patients')} patients, "
              f"{card.data.get('n_patches'):,} patches)", highlight=False, soft_wrap=True)
    print_disclaimer()


export = command_group("export", "Export a model for other tools (WSInfer and QuPath).")


@export.command("wsinfer")
def export_wsinfer(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP, show_default=False),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="The model folder to write; QuPath lists the model under its "
        "name."),
    force: bool = typer.Option(
        False, "--force", help="Replace an earlier export at --out (never a folder that holds "
        "anything else)."),
) -> None:
    """Write a WSInfer / QuPath model folder: config.json, torchscript_model.pt, README.md.

    The TorchScript model outputs two logits (non-IDC, IDC) whose softmax is idcscan's P(IDC) for the same patch, the model's TTA and calibration included; it is checked against ONNX Runtime before it is written. Copy the folder to <QuPath user directory>/wsinfer/local/ for QuPath's WSInfer extension, or run `wsinfer run -c config.json -p torchscript_model.pt`. See docs/QUPATH.md.
    """  # noqa: E501
    try:
        from idcscan.interop.wsinfer import export_wsinfer as export_folder
    except ImportError as exc:
        raise IdcscanError(f"Exporting for WSInfer needs torch and onnx2torch ({exc}); install "
                           "them with `pip install 'idcscan[interop]'`.") from exc

    with console.status("Converting the model to TorchScript and checking it…"):
        result = export_folder(str(bundle), out_dir, overwrite=force)
    out.print(f"WSInfer model folder written to [bold]{result.path}[/] (torch "
              f"{result.torch_version}).", highlight=False)
    out.print(f"P(IDC) matches ONNX Runtime on {result.check['patches']} patches (largest "
              f"difference {result.check['max_abs_prob_diff']:.1e}).", highlight=False)
    out.print(f"QuPath: copy it to <QuPath user directory>/wsinfer/local/{result.name}/ ; "
              f"WSInfer: wsinfer run -i SLIDES -o RESULTS -c {result.path / 'config.json'} "
              f"-p {result.path / 'torchscript_model.pt'}", highlight=False, markup=False)
    print_disclaimer()
