"""The demo pipeline behind ``make demo``: data -> prepare -> train -> evaluate, cached.

With no data it uses the embedded default: a synthetic Kaggle-layout set and the offline
ImageNet EfficientNet-Lite0 weights, so it runs on a fresh machine without internet in a few
CPU minutes. Each stage is skipped when its output already exists, so a second run only
serves. A synthetic-data bundle is marked ``demo: true`` in its model card, which the server
and dashboard show as a banner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import CARD_NAME, load_bundle, write_card

DEMO_BACKBONE = "tf_efficientnet_lite0"
DEMO_PATIENTS = 40
DEMO_PATCHES_PER_PATIENT = 100


@dataclass(frozen=True)
class DemoResult:
    root: Path
    bundle: Path
    report: Path
    trained: bool  # False when a cached bundle was reused


def _bundle_ok(bundle: Path) -> bool:
    if not (bundle / CARD_NAME).is_file():
        return False
    try:
        load_bundle(bundle)
    except IdcscanError:
        return False
    return True


def build_demo(
    out: str | Path = "demo", minutes: float = 3.0, data: str | Path | None = None, seed: int = 0
) -> DemoResult:
    """Build (or reuse) the demo bundle and its evaluation report under ``out``."""
    from idcscan.data.packing import prepare
    from idcscan.data.synthetic import generate_dataset
    from idcscan.evaluation.evaluate import evaluate

    root = Path(out) / ("real" if data else "synthetic")
    prepared, run, report = root / "data", root / "run", root / "report"
    bundle = run / "bundle"
    trained = False
    if not _bundle_ok(bundle):
        if data is None:
            source = root / "kaggle"
            if not source.is_dir():
                generate_dataset(
                    source, patients=DEMO_PATIENTS,
                    patches_per_patient=DEMO_PATCHES_PER_PATIENT, seed=seed, progress=True,
                )
        else:
            source = Path(data)
        if not (prepared / "index.csv").is_file():
            prepare(source, prepared, seed=seed)
        from idcscan.training.config import TrainConfig
        from idcscan.training.train import train

        # A fresh run: an incomplete earlier run of the demo is restarted, not resumed.
        train(
            TrainConfig(
                data=str(prepared), out=str(run), backbone=DEMO_BACKBONE, weights="imagenet",
                max_minutes=minutes, seed=seed,
            )
        )
        if data is None:
            card = load_bundle(bundle).card
            write_card(card.model_copy(update={"demo": True}), bundle)
        trained = True
    if trained or not (report / "metrics.json").is_file():
        evaluate(bundle, prepared, split="test", out=report)
    return DemoResult(root=root, bundle=bundle, report=report, trained=trained)
