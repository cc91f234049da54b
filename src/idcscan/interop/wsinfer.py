"""A bundle as a WSInfer model folder, which QuPath's WSInfer extension and ``wsinfer run`` load.

The folder holds ``config.json`` (WSInfer's model-config spec 1.0, checked against the schema
file the ``wsinfer-zoo`` package ships), ``torchscript_model.pt`` (two logits, non-IDC and IDC,
whose softmax is idcscan's P(IDC): ``idcscan.interop.onnx_torch``) and ``README.md`` (where to
put the folder, what the numbers mean, the model card; the QuPath extension shows it as the
model's description).

The transforms are ``Resize(patch_size)``, ``ToTensor`` and an identity ``Normalize``: every
numeric step idcscan takes after the 50 x 50 px patch (resize to the network's input size,
normalisation, stain normalisation, TTA) is inside the graph, so the tools only have to hand
over the patch, which both of them read as ``patch_size_pixels * spacing_um_px / slide µm/px``
level-0 pixels resized to ``patch_size_pixels``: the same 200 µm tile slide mode reads.
``wsinfer run`` reads that tile at level 0 and shrinks it with the Resize, so the Resize uses
Pillow's box filter, the area averaging idcscan's slide reader uses (torchvision's default
bilinear filter blurs across neighbouring pixels: on the suite's painted scan it moved P(IDC)
by up to 0.28 on tiles at the edge of a tumour, the box filter by 0.002). QuPath's extension
reads the tile at the model's scale itself and uses only the Resize's size.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcscan import DISCLAIMER, __version__
from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import Bundle, ModelCard, load_bundle
from idcscan.runtime.labels import area_threshold, percent
from idcscan.runtime.model_card import card_markdown, readable_card

CONFIG = "config.json"
TORCHSCRIPT = "torchscript_model.pt"
README = "README.md"
#: what an export writes, and all that --force may replace
EXPORT_FILES = frozenset({CONFIG, TORCHSCRIPT, README})
#: in the order of the two logits; QuPath names its measurements after them
CLASS_NAMES = ("non-IDC", "IDC")
#: ``PIL.Image.Resampling.BOX``, as the integer torchvision's Resize accepts from JSON
PIL_BOX = 4
SCHEMA_PACKAGE = "wsinfer-zoo"
SCHEMA_FILE = "wsinfer_zoo/schemas/model-config.schema.json"


@dataclass(frozen=True)
class WSInferExport:
    """What ``export_wsinfer`` wrote, and how exact it is."""

    path: Path
    name: str  # the folder name QuPath lists the model under
    config: dict[str, Any]
    torch_version: str
    check: dict[str, Any]  # compare_with_onnxruntime's answer


def wsinfer_config(card: ModelCard) -> dict[str, Any]:
    """config.json: WSInfer's spec 1.0, nothing else (both readers know only these keys)."""
    p = int(card.patch_size)
    return {
        "spec_version": "1.0",
        "architecture": card.backbone,
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "patch_size_pixels": p,
        "spacing_um_px": float(card.mpp),
        "transform": [
            # 4 is Pillow's BOX filter (torchvision takes Pillow's integer constants): area
            # averaging, as idcscan's slide reader shrinks a tile. QuPath reads "size" only.
            {"name": "Resize", "arguments": {"size": p, "interpolation": PIL_BOX}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}},
        ],
    }


def config_schema() -> dict[str, Any]:
    """WSInfer's model-config schema, from the installed wsinfer-zoo package (read as a file:
    importing wsinfer_zoo creates ~/.wsinfer-zoo)."""
    try:
        path = Path(str(importlib.metadata.distribution(SCHEMA_PACKAGE).locate_file(SCHEMA_FILE)))
    except importlib.metadata.PackageNotFoundError:
        raise IdcscanError("Checking config.json needs the wsinfer-zoo package: "
                           "pip install 'idcscan[interop]'.") from None
    return json.loads(path.read_text(encoding="utf-8"))


def validate_config(config: dict[str, Any]) -> None:
    """Raise IdcscanError unless ``config`` is valid against WSInfer's own schema."""
    import jsonschema

    try:
        jsonschema.validate(config, config_schema())
    except jsonschema.ValidationError as exc:
        raise IdcscanError(f"config.json does not follow WSInfer's schema: {exc.message}") from exc


def _needs_group_stain(preprocessing: dict[str, Any]) -> bool:
    stain = preprocessing.get("stain_norm") or {}
    targets = stain.get("targets") if stain.get("per_member") else [stain]
    return any((t or {}).get("method") == "macenko" for t in targets or [])


def _card_section(card: ModelCard) -> str:
    """``idcscan card``'s Markdown, one heading level down, under this README's title."""
    lines = card_markdown(readable_card(card)).splitlines()
    return "\n".join("#" + line if line.startswith("#") else line for line in lines)


def readme(card: ModelCard, name: str, torch_version: str, check: dict[str, Any]) -> str:
    """README.md of the folder (QuPath's WSInfer extension shows it as the model's info)."""
    area, _ = area_threshold(card)
    p, mpp = card.patch_size, card.mpp
    demo = ("\n> **DEMO MODEL trained on synthetic data: its probabilities mean nothing about "
            "real tissue.**\n" if card.demo else "")
    return f"""# {card.name} {card.version} (idcscan) for WSInfer and QuPath

> **{DISCLAIMER}**
{demo}
Classifies {p} × {p} px H&E breast-tissue patches at {mpp:g} µm/px ({p * mpp:g} µm square) as
invasive ductal carcinoma (IDC) or not. Exported by idcscan {__version__} from the bundle
`{card.name}` {card.version} (model.onnx sha256 `{card.onnx_sha256}`).

## Where to put this folder

- **QuPath 0.6 with the WSInfer extension 0.4**: copy the folder to
  `<QuPath user directory>/wsinfer/local/{name}/`, i.e. into the `local` folder of the
  directory the WSInfer dialog shows under *Additional options → Downloaded model directory*
  (by default `<QuPath user directory>/wsinfer`). Reopen *Extensions → WSInfer Extension →
  WSInfer*; the model is listed as `{name}`.
- **The WSInfer command line**:
  `wsinfer run -i SLIDES/ -o RESULTS/ -c config.json -p {TORCHSCRIPT}`
  wsinfer 0.6.1 needs zarr 2 (it imports zarr 2's `KVStore` on start-up), so give it an
  environment of its own: `pip install wsinfer==0.6.1 "zarr<3"`.

## What the numbers are

- Two classes, `{CLASS_NAMES[0]}` and `{CLASS_NAMES[1]}`: the tools apply softmax to the model's
  two outputs, and the `{CLASS_NAMES[1]}` probability is idcscan's P(IDC) for the same patch,
  the model's own test-time augmentation and calibration included. At export the module was
  compared with ONNX Runtime on the bundle itself: {check['patches']} patches, largest
  difference in P(IDC) {check['max_abs_prob_diff']:.1e}. idcscan itself may run the model
  with OpenVINO in bfloat16 (its `auto` engine on CPUs with native bfloat16), whose P(IDC)
  differs from float32 by up to a few hundredths; `--runtime onnxruntime` gives the float32
  figures this export matches.
- Both tools read a tile of `patch_size_pixels × spacing_um_px / (slide µm per pixel)`
  level-0 pixels and bring it to {p} × {p} px, as idcscan's slide mode does (`wsinfer run`
  with the config's box-filter Resize, the area averaging idcscan uses; QuPath from the
  slide's pyramid). Where a tool resamples differently from idcscan, its P(IDC) can differ
  from `idcscan slide`'s `patch_probability` (tiles.csv) by a few hundredths.
- QuPath's class for each tile is the class with the higher probability: `{CLASS_NAMES[1]}`
  from P(IDC) ≥ 50%, idcscan's patch call. idcscan's slide maps count a tile towards the IDC
  area from P(IDC) ≥ {percent(area)} (the model card's "Slide maps" line); measure IDC area in
  QuPath with that threshold on the `{CLASS_NAMES[1]}` measurement, not with the class.
- Not in this export: slide mode's spatial context (tiles.csv `probability`), its tissue
  detection and artefact QC, and idcscan's optional run-time `--tta`.

## Files

- `{TORCHSCRIPT}`: TorchScript, saved with torch {torch_version}; input float NCHW in [0, 1]
  (ToTensor), output two logits (non-IDC, IDC).
- `{CONFIG}`: WSInfer model configuration, spec 1.0.
- `{README}`: this file.

{_card_section(card)}
"""


def _staging(out_dir: Path, overwrite: bool) -> Path:
    """A staging folder beside ``out_dir``. ``--force`` replaces only a folder an export wrote:
    ``--out`` given as QuPath's ``wsinfer/local`` folder itself, or any folder of the user's,
    must not be deleted with every model and file in it."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir() or out_dir.is_symlink():
            raise IdcscanError(f"{out_dir} exists and is not a folder; choose another --out.")
        held = sorted(p.name for p in out_dir.iterdir())
        if held and not overwrite:
            raise IdcscanError(f"{out_dir} already exists and is not empty; choose another "
                               "--out, or pass --force to replace an earlier export there.")
        others = [name for name in held if name not in EXPORT_FILES]
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise IdcscanError(
                f"{out_dir} holds files an export does not write ({shown}); --force replaces "
                f"only an earlier export. Give the model's own folder, e.g. "
                f"{out_dir / 'idcscan-idc'}.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))


def export_wsinfer(bundle: Bundle | str | Path, out_dir: str | Path,
                   overwrite: bool = False) -> WSInferExport:
    """Write the WSInfer / QuPath model folder of ``bundle`` (a path or a shipped model's name)
    to ``out_dir``, built aside and renamed into place; refuse an export that is not exact."""
    import torch

    from idcscan.interop.onnx_torch import (
        MAX_PROB_DIFF,
        check_patches,
        compare_with_onnxruntime,
        to_torchscript,
    )

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    card = bundle.card
    if _needs_group_stain(card.preprocessing):
        raise IdcscanError(
            f"{card.name} normalises stain per slide (Macenko), before its graph; WSInfer and "
            "QuPath score each tile alone and cannot do that. Export a bundle without "
            "--stain-norm macenko."
        )
    config = wsinfer_config(card)
    validate_config(config)
    out_dir = Path(out_dir)
    staging = _staging(out_dir, overwrite)
    try:
        module = to_torchscript(bundle)
        module.save(str(staging / TORCHSCRIPT))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is what they load
            loaded = torch.jit.load(str(staging / TORCHSCRIPT), map_location="cpu")
        check = compare_with_onnxruntime(loaded, bundle, check_patches(card.patch_size))
        if not check["max_abs_prob_diff"] <= MAX_PROB_DIFF:
            raise IdcscanError(
                f"The TorchScript conversion of {card.name} is not exact: P(IDC) differs from "
                f"ONNX Runtime's by up to {check['max_abs_prob_diff']:.2g} (limit "
                f"{MAX_PROB_DIFF:g}); nothing was written."
            )
        name = out_dir.name
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / README).write_text(readme(card, name, torch.__version__, check),
                                      encoding="utf-8")
        if out_dir.is_dir():  # an earlier export (``_staging`` checked)
            shutil.rmtree(out_dir)
        staging.chmod(0o755)  # mkdtemp made it private
        staging.replace(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WSInferExport(path=out_dir, name=name, config=config,
                         torch_version=torch.__version__, check=check)
