"""The one colour scale of P(IDC) maps: heatmap.png, the large-image page and the viewer.

matplotlib's ``inferno``: perceptually uniform and readable with colour-vision deficiencies,
so equal steps of P(IDC) look like equal steps, unlike a rainbow whose bright bands make low
values look like findings. The scale is absolute (0 to 100% P(IDC), never stretched per slide)
and its opacity rises with P(IDC): below ``ALPHA_FROM`` a tile is not coloured at all, so the
tissue under a low value stays readable and only evidence of IDC draws the eye.

The colours are laid over the tissue by multiplying (``BLEND``: CSS ``mix-blend-mode`` on the
large-image page, the canvas ``globalCompositeOperation`` in the viewer, ``blend`` here), not
by painting over it. A painted layer at the 55-70% the pages used hid a tumour under a beige
wash: at P(IDC) 0.7-0.9 it kept 30-45% of the tissue's light-dark contrast, so nuclei and
glands, what a pathologist checks the map against, faded out. Multiplied, a colour tints
stroma and lumens while nuclei stay dark: at ``PAGE_OPACITY`` the same tumour keeps about 80%
of its contrast (94% at 0.9), and the tint moves its colour about as far as the old painted
layer of the large-image page did (CIE ΔE about 50 from P(IDC) 0.7;
``tests/maps/test_colour.py`` measures both on synthetic H&E). The IDC area is outlined in
``OUTLINE_COLOR`` on top; a page can show the outlines alone.
"""

from __future__ import annotations

import numpy as np

COLORMAP = "inferno"
#: P(IDC) at which colour starts to show, and where it reaches full opacity
ALPHA_FROM = 0.2
ALPHA_FULL = 0.7
#: IDC region outlines: cyan stands apart from both inferno and H&E pinks and purples
OUTLINE_COLOR = "#22d3ee"
#: how every map lays its colours over the tissue (CSS and canvas name it the same)
BLEND = "multiply"
#: the default overlay opacity of the large-image page and the viewer (a slider changes it)
PAGE_OPACITY = 0.7


def opacity(probabilities: np.ndarray) -> np.ndarray:
    """0..1 opacity per value: 0 below ALPHA_FROM (and where NaN), 1 from ALPHA_FULL."""
    p = np.nan_to_num(probabilities, nan=0.0)
    ramp = np.clip((p - ALPHA_FROM) / (ALPHA_FULL - ALPHA_FROM), 0.0, 1.0)
    return np.where(np.isnan(probabilities), 0.0, ramp)


def idc_rgba(probabilities: np.ndarray, max_alpha: int = 235) -> np.ndarray:
    """RGBA uint8 per value: the colour of P(IDC), alpha ``opacity * max_alpha``."""
    from matplotlib import colormaps

    rgba = colormaps[COLORMAP](np.nan_to_num(probabilities, nan=0.0), bytes=True)
    rgba[..., 3] = np.round(opacity(probabilities) * max_alpha).astype(np.uint8)
    return rgba


def blend(base: np.ndarray, probabilities: np.ndarray, max_opacity: float) -> np.ndarray:
    """``base`` (H x W x 3) tinted by P(IDC) (H x W, NaN where not scored) on this scale, as
    the pages draw it: the colour multiplied in, with weight up to ``max_opacity`` where P(IDC)
    is high (``BLEND``); uint8 RGB. Dark stays dark, so the tissue's structure shows through."""
    colours = idc_rgba(probabilities)[..., :3].astype(np.float32) / 255.0
    weight = (opacity(probabilities) * max_opacity)[..., None]
    base = np.asarray(base, dtype=np.float32)
    out = base * (1 - weight) + base * colours * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
