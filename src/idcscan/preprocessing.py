"""The one definition of how pixels become model input.

Everything numeric (channel order, scaling, resizing to the network's input size, mean/std)
happens *inside* the network and therefore inside the exported ONNX graph (see
``PreprocessLayer``). Consumers only have to hand the model raw RGB ``uint8`` patches of
``patch_size`` pixels at the training scale, which ``to_patch`` produces from any image.
Training and serving therefore cannot disagree: they run the same graph on the same bytes.
The dataclass is written into model.json so a reader can see exactly what was done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Kaggle IDC patches are 50x50 px at roughly 4 µm/px (40x scans downsampled ~16:1).
PATCH_SIZE = 50
TRAINING_MPP = 4.0

#: Edge crops (smaller than a patch) are padded with white: the missing part lies beyond the
#: scanned image, i.e. glass, which is white in brightfield H&E. Padding keeps the scale intact
#: where resizing would stretch tissue.
PAD_VALUE = 255


@dataclass(frozen=True)
class Preprocessing:
    """How a raw patch is turned into network input; stored verbatim in model.json."""

    patch_size: int = PATCH_SIZE
    input_size: int = 96
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    input_dtype: str = "uint8"
    input_layout: str = "NHWC"
    pixel_scale: float = 255.0
    pad_value: int = PAD_VALUE
    small_images: str = field(
        default="pad bottom/right with white to patch_size when both sides are <= patch_size"
    )
    large_images: str = field(default="resize to patch_size x patch_size (PIL bilinear)")
    #: Stain normalisation before everything else: None, a ``StainTarget.to_dict()`` (Reinhard
    #: lαβ, per-patch statistics, in the graph) or a ``MacenkoNorm.to_dict()`` (per group,
    #: applied by the predictor before the graph); see ``idcscan.stain``.
    stain_norm: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(x) for x in known[key])
        return cls(**known)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, P, RGBA, I;16, CMYK, ...) to 8-bit RGB.

    Alpha is composited on white (glass), 16-bit data is scaled, not clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return image.convert("RGB")


def pad_to_patch(arr: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Pad an HxWx3 uint8 crop (H, W <= patch_size) at bottom/right with white."""
    h, w = arr.shape[:2]
    if h == patch_size and w == patch_size:
        return arr
    out = np.full((patch_size, patch_size, 3), PAD_VALUE, dtype=np.uint8)
    out[:h, :w] = arr[:patch_size, :patch_size, :3]
    return out


def to_patch(image: Image.Image, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Turn any decoded image into the uint8 RGB patch the model reads (patch_size^2 x 3).

    A crop no larger than a patch keeps its pixels (padded, as in training); anything larger is
    resized, which is what the original web app did with uploads.
    """
    rgb = to_rgb(image)
    if rgb.width <= patch_size and rgb.height <= patch_size:
        return pad_to_patch(np.asarray(rgb, dtype=np.uint8), patch_size)
    resized = rgb.resize((patch_size, patch_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
