"""``idcscan export wsinfer``: a WSInfer / QuPath model folder whose TorchScript gives idcscan's
P(IDC), run the way WSInfer runs it (the config's own torchvision transforms, softmax).

The bundles are the suite's: the tiny model trained on the two painted textures (exported
through the ``default`` name of a shipped-model shelf, as ``idcscan export wsinfer default``
will be once a model ships), a random Lite0 with TTA in its graph and a temperature, and a
two-member fold ensemble, so the export is tested on every kind of graph a bundle may hold.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app
from idcscan.runtime import shipped
from idcscan.runtime.bundle import load_bundle, write_card
from idcscan.runtime.predictor import Predictor

SCHEMA = "wsinfer_zoo/schemas/model-config.schema.json"


def load_script(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
        return torch.jit.load(str(path), map_location="cpu").eval()


def config_transforms(config: dict):
    """The config's transforms, built the way WSInfer builds them (modellib/transforms.py)."""
    from torchvision import transforms

    known = {"Resize": transforms.Resize, "ToTensor": transforms.ToTensor,
             "Normalize": transforms.Normalize}
    return transforms.Compose([known[t["name"]](**(t.get("arguments") or {}))
                               for t in config["transform"]])


def full_patches(root: Path, start: int, step: int, n: int) -> list[Image.Image]:
    """Whole 50 x 50 px patches (WSInfer always reads whole squares; edge crops are left out)."""
    images = [Image.open(f).convert("RGB") for f in sorted(root.rglob("*.png"))[start::step]]
    return [im for im in images if im.size == (50, 50)][:n]


def wsinfer_proba(folder: Path, images: list[Image.Image]) -> np.ndarray:
    """P(IDC) as WSInfer and QuPath compute it: transforms, the module, softmax, column IDC."""
    config = json.loads((folder / "config.json").read_text())
    module = load_script(folder / "torchscript_model.pt")
    transform = config_transforms(config)
    batch = torch.stack([transform(im.convert("RGB")) for im in images])
    with torch.no_grad():
        probs = torch.softmax(module(batch), dim=1).numpy()
    return probs[:, config["class_names"].index("IDC")].astype(np.float64)


@pytest.fixture(scope="module")
def exported(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """``idcscan export wsinfer default --out DIR`` with the trained bundle shipped as default."""
    shelf = tmp_path_factory.mktemp("shipped")
    shutil.copytree(trained_bundle, shelf / "textures")
    (shelf / "index.json").write_text(json.dumps({"default": "textures",
                                                  "models": ["textures"]}))
    out = tmp_path_factory.mktemp("export") / "idcscan-textures"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shipped, "SHIPPED_DIR", shelf)
        result = CliRunner().invoke(app, ["export", "wsinfer", "default", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_the_folder_holds_what_wsinfer_and_qupath_load(exported) -> None:
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "torchscript_model.pt"]
    assert f"wsinfer/local/{out.name}/" in result.stdout
    assert DISCLAIMER.split(".")[0] in result.output
    config = json.loads((out / "config.json").read_text())
    assert config == {
        "spec_version": "1.0", "architecture": "test_efficientnet", "num_classes": 2,
        "class_names": ["non-IDC", "IDC"], "patch_size_pixels": 50, "spacing_um_px": 4.0,
        "transform": [{"name": "Resize", "arguments": {"size": 50, "interpolation": 4}},
                      {"name": "ToTensor"},
                      {"name": "Normalize", "arguments": {"mean": [0.0, 0.0, 0.0],
                                                         "std": [1.0, 1.0, 1.0]}}],
    }


def test_config_validates_against_the_schema_wsinfer_zoo_ships(exported) -> None:
    import jsonschema

    schema_file = Path(str(importlib.metadata.distribution("wsinfer-zoo").locate_file(SCHEMA)))
    assert importlib.metadata.version("wsinfer-zoo") == "0.6.3"
    schema = json.loads(schema_file.read_text())
    config = json.loads((exported[0] / "config.json").read_text())
    jsonschema.validate(config, schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema does hold a config to it
        jsonschema.validate({**config, "transform": [{"name": "CenterCrop"}]}, schema)


def test_readme_says_where_it_goes_what_made_it_and_what_it_is(exported, trained_bundle) -> None:
    out, _ = exported
    text = (out / "README.md").read_text()
    card = load_bundle(trained_bundle).card
    assert text.startswith("# ")  # QuPath's info popover shows it as the model's description
    assert DISCLAIMER in text
    assert f"`<QuPath user directory>/wsinfer/local/{out.name}/`" in text
    assert "-c config.json -p torchscript_model.pt" in text
    assert f"saved with torch {torch.__version__}" in text
    assert card.onnx_sha256 in text and "## Model card:" in text
    assert "Test-time augmentation" in text and "Calibration" in text


def test_softmax_of_the_two_logits_is_idcscans_p_idc_on_the_same_patch(
        exported, trained_bundle: Path, synthetic_kaggle: Path) -> None:
    """Real-looking patches handed over at 50 x 50 px: Resize is then the identity, so this is
    the model alone, which must be idcscan's to the last digits."""
    images = full_patches(synthetic_kaggle, 0, 7, 64)
    ours = wsinfer_proba(exported[0], images)
    from idcscan.preprocessing import to_patch

    theirs = Predictor(trained_bundle, runtime="onnxruntime").predict_proba(
        np.stack([to_patch(im) for im in images]))
    assert np.abs(ours - theirs).max() < 1e-4
    assert theirs.std() > 0.01  # not a constant model


def test_through_the_configs_transforms_on_a_painted_scan_it_agrees_with_slide_mode(
        exported, painted_map: Path) -> None:
    """Each tile read as WSInfer reads it (patch_size_pixels x spacing / slide µm/px = 800
    level-0 px, resized by the config's Resize) against slide mode's ``patch_probability``."""
    import tiffslide

    rows = list(csv.DictReader((painted_map / "maps" / "scan" / "tiles.csv").open()))
    config = json.loads((exported[0] / "config.json").read_text())
    with tiffslide.TiffSlide(painted_map / "slides" / "scan.tif") as scan:
        mpp = float(scan.properties[tiffslide.PROPERTY_NAME_MPP_X])
        side = round(config["patch_size_pixels"] * config["spacing_um_px"] / mpp)
        images = [scan.read_region((int(r["x"]), int(r["y"])), 0, (side, side)).convert("RGB")
                  for r in rows]
    ours = wsinfer_proba(exported[0], images)
    slide_mode = np.array([float(r["patch_probability"]) for r in rows])
    diff = np.abs(ours - slide_mode)
    assert len(rows) >= 16 and side == 800
    assert np.median(diff) <= 0.03
    assert np.mean(diff > 0.15) <= 0.05
    assert slide_mode.max() - slide_mode.min() > 0.5  # both tissues, told apart


@pytest.fixture(scope="module")
def other_graphs(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path,
                 trained_bundle: Path) -> dict[str, Path]:
    """A random Lite0 with the 8-view TTA in its graph and temperature 1.7, a fold ensemble of
    the two suite bundles (one graph averaging their calibrated P(IDC)), and that ensemble with
    its weights stored in float16."""
    from idcscan.preprocessing import Preprocessing
    from idcscan.training.ensemble import build_ensemble, halve_bundle_weights
    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet

    root = tmp_path_factory.mktemp("graphs")
    torch.manual_seed(1)
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32)).eval()
    export_bundle(net, root / "tta", tta=True, threshold=0.5,
                  calibration={"method": "temperature", "temperature": 1.7},
                  data={"source": "random weights (test)"})
    build_ensemble([tiny_bundle, trained_bundle], root / "ensemble", threshold=0.5,
                   threshold_rule="fixed")
    shutil.copytree(root / "ensemble", root / "float16")
    halve_bundle_weights(root / "float16")  # how the shipped model stores its weights
    return {"tta": root / "tta", "ensemble": root / "ensemble", "float16": root / "float16"}


@pytest.mark.parametrize("kind", ["tta", "ensemble", "float16"])
def test_tta_temperature_ensembles_and_float16_weights_survive_the_conversion_exactly(
        kind: str, other_graphs: dict[str, Path], synthetic_kaggle: Path, tmp_path: Path) -> None:
    from idcscan.interop.wsinfer import export_wsinfer
    from idcscan.preprocessing import to_patch

    result = export_wsinfer(other_graphs[kind], tmp_path / kind)
    assert result.check["max_abs_prob_diff"] < 1e-4 and result.check["patches"] == 64
    images = full_patches(synthetic_kaggle, 3, 11, 40)
    ours = wsinfer_proba(tmp_path / kind, images)
    theirs = Predictor(other_graphs[kind], runtime="onnxruntime").predict_proba(
        np.stack([to_patch(im) for im in images]))
    assert np.abs(ours - theirs).max() < 1e-4


def test_refusals_are_one_line(trained_bundle: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["export", "wsinfer", str(trained_bundle), "--out",
                                      str(busy)])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (busy / "notes.txt").read_text() == "keep me"
    # --force replaces an earlier export, never a folder of other things: QuPath's
    # wsinfer/local given as --out holds every other local model
    local = tmp_path / "wsinfer" / "local"
    (local / "someone-elses-model").mkdir(parents=True)
    (local / "someone-elses-model" / "config.json").write_text("{}")
    for target in (busy, local):
        result = CliRunner().invoke(app, ["export", "wsinfer", str(trained_bundle), "--out",
                                          str(target), "--force"])
        assert result.exit_code == 2 and "replaces only an earlier export" in result.stderr
    assert (busy / "notes.txt").read_text() == "keep me"
    assert (local / "someone-elses-model" / "config.json").is_file()
    # a bundle that normalises stain per slide cannot be run tile by tile
    macenko = tmp_path / "macenko"
    shutil.copytree(trained_bundle, macenko)
    card = load_bundle(macenko).card
    card.preprocessing["stain_norm"] = {"method": "macenko"}
    write_card(card, macenko)
    result = CliRunner().invoke(app, ["export", "wsinfer", str(macenko), "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code == 2 and "Macenko" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and not (tmp_path / "m").exists()
