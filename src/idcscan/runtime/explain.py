"""Heat-map explanations: where in a patch the network saw IDC.

Where the map comes from: the exported ONNX graph has a second output, ``cam`` (N, h, w),
next to ``logit``. It is Grad-CAM of the IDC logit computed *inside the graph in closed form*
(``idcscan.training.network.IDCNet.forward_with_cam``): the head's gradient with respect to the
pooled features has an exact formula in eval mode (BatchNorm scale x ReLU gate x dense weights),
so the graph multiplies the last feature maps by those per-sample weights, sums over channels
and applies ReLU. Serving therefore needs neither torch nor autograd: ``Predictor.
predict_with_cam`` simply asks ONNX Runtime for both outputs. h x w is the backbone's last
feature grid (input size / 32, e.g. 3 x 3 at 96 px), so the map is coarse by construction;
this module only turns it into a picture a person can read.

The picture is on an ABSOLUTE scale, the same on every patch: a cell's CAM value ``v`` is, to
first order, how much that part of the patch adds to the IDC logit (the head reads the mean of
the feature map, so a patch that looked like this cell everywhere would have its logit raised
by ``v``). Divided by the calibration temperature it is in calibrated log-odds of IDC. Full
colour (``CAM_FULL_LOGODDS``) is +2 log-odds, enough to move P(IDC) from 50% to 88%; a map
that nowhere reaches ``EMPTY_HEAT`` of that (+0.2 log-odds) is reported as "nothing here
raised the IDC score" instead of an overlay that would look like the plain patch. The colour
map is matplotlib's perceptual ``inferno`` (dark to bright, readable in grey), not a rainbow,
drawn over a light grey copy of the tissue so that no tint can pass for hematoxylin or eosin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from idcscan.images import png_data_url
from idcscan.preprocessing import PATCH_SIZE

DEFAULT_COLORMAP = "inferno"
#: Calibrated log-odds of IDC drawn at full colour; lower contributions are proportionally dimmer.
CAM_FULL_LOGODDS = 2.0
#: Maps whose hottest point stays under this share of full colour count as empty; the tint
#: fades in over the same range, so anything above it is drawn near full opacity.
EMPTY_HEAT = 0.1
EMPTY_NOTE = "Nothing here raised the IDC score: the explanation map is empty."
DEFAULT_ALPHA = 0.7
#: Overlays of tiny images (a 50 px patch) are enlarged to at least this many pixels on the
#: long side, by an integer factor, so the smooth heat map is not drawn in 50 coarse steps.
MIN_OVERLAY_SIDE = 256


@lru_cache(maxsize=8)
def colormap_lut(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """A (256, 3) uint8 lookup table from a matplotlib colormap (no pyplot, no figure)."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def cam_scale(temperature: float = 1.0) -> float:
    """The CAM value drawn at full colour for a bundle calibrated with ``temperature``."""
    return CAM_FULL_LOGODDS * float(temperature)


def cam_for_image(
    cam: np.ndarray,
    size: tuple[int, int],
    patch_size: int = PATCH_SIZE,
    scale: float | None = None,
) -> np.ndarray:
    """The CAM upsampled (bilinear) onto an image of ``size`` = (width, height), in [0, 1].

    With ``scale`` (see ``cam_scale``) the values are ``cam / scale`` clipped to [0, 1], the
    same scale for every patch; without it the map is divided by its own peak (only useful
    for finding where a map is hottest, never for showing how hot it is).

    The map covers the model's patch. An image no larger than a patch was padded at the
    bottom/right (``to_patch``), so its pixels are the top-left part of the patch: the map is
    upsampled to the patch and cropped. A larger image was resized to the patch, so the map is
    stretched over the whole image.
    """
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.maximum(cam, 0.0)
    width, height = size
    padded = width <= patch_size and height <= patch_size
    target = (patch_size, patch_size) if padded else (width, height)
    up = np.asarray(Image.fromarray(cam).resize(target, Image.Resampling.BILINEAR))
    if padded:
        up = up[:height, :width]
    if scale is not None:
        return np.clip(up / float(scale), 0.0, 1.0) if scale > 0 else np.zeros_like(up)
    peak = float(up.max()) if up.size else 0.0
    return up / peak if peak > 0 else np.zeros_like(up)


def overlay(
    image: Image.Image,
    cam: np.ndarray,
    patch_size: int = PATCH_SIZE,
    alpha: float = DEFAULT_ALPHA,
    colormap: str = DEFAULT_COLORMAP,
    min_side: int = MIN_OVERLAY_SIDE,
    scale: float | None = None,
) -> Image.Image:
    """Blend the coloured heat map over a light grey copy of ``image`` (RGB).

    The colour says how much (the same colour is the same contribution on every patch with
    ``scale``); the blend weight fades in from 0 to ``alpha`` over the first ``EMPTY_HEAT`` of
    the scale, so regions that did not raise the score show the grey tissue untinted.
    """
    rgb = image.convert("RGB")
    factor = max(1, min_side // max(rgb.width, rgb.height))
    if factor > 1:
        rgb = rgb.resize((rgb.width * factor, rgb.height * factor), Image.Resampling.NEAREST)
    heat = cam_for_image(cam, rgb.size, patch_size * factor, scale=scale)
    heat = np.clip(heat, 0.0, 1.0)
    colours = colormap_lut(colormap)[(heat * 255.0 + 0.5).astype(np.uint8)].astype(np.float32)
    weight = (alpha * np.clip(heat / EMPTY_HEAT, 0.0, 1.0))[..., None]
    grey = np.asarray(rgb.convert("L"), dtype=np.float32)[..., None]
    base = np.repeat(0.55 * grey + 0.45 * 255.0, 3, axis=2)
    blended = base * (1.0 - weight) + colours * weight
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def overlay_data_url(
    image: Image.Image, cam: np.ndarray, patch_size: int = PATCH_SIZE, scale: float | None = None
) -> str:
    """The overlay as a PNG data URL, ready for JSON and an ``<img src>``."""
    return png_data_url(overlay(image, cam, patch_size=patch_size, scale=scale))


def is_empty(cam: np.ndarray, scale: float) -> bool:
    """True when no part of the map reaches ``EMPTY_HEAT`` of full colour."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(cam.max()) if cam.size else 0.0
    return not (scale > 0 and peak / scale >= EMPTY_HEAT)


@dataclass(frozen=True)
class Explanation:
    """What a page shows for a patch: an overlay (PNG data URL), or a note when it is empty."""

    overlay: str | None
    note: str | None
    peak: float  # hottest point as a share of full colour, 0..1


def explain(
    image: Image.Image, cam: np.ndarray, temperature: float = 1.0, patch_size: int = PATCH_SIZE
) -> Explanation:
    """The absolute-scale overlay of ``cam`` over ``image``, or the empty-map note."""
    scale = cam_scale(temperature)
    finite = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.clip(finite.max() / scale, 0.0, 1.0)) if finite.size else 0.0
    if is_empty(finite, scale):
        return Explanation(overlay=None, note=EMPTY_NOTE, peak=peak)
    return Explanation(
        overlay=overlay_data_url(image, finite, patch_size=patch_size, scale=scale),
        note=None,
        peak=peak,
    )


def peak_position(
    cam: np.ndarray, size: tuple[int, int], patch_size: int = PATCH_SIZE
) -> tuple[int, int]:
    """(x, y) of the hottest pixel of the map upsampled onto an image of ``size``."""
    heat = cam_for_image(cam, size, patch_size)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(x), int(y)
