"""A painted slide with glands inside its IDC area, for judging how a map lets tissue show.

At 1 µm/px: pink stroma, a central IDC area in the texture the test model knows as IDC
(``slide_helpers.texture``), and glands in it, pale lumens ringed by dark nuclei, drawn at
full resolution so that a viewer zoomed in shows their structure under the map. Synthetic:
real tissue must be judged on real slides.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from slide_helpers import texture

#: level-0 µm per pixel of the painted slide
GLANDS_MPP = 1.0


def paint_glands(seed: int = 0, size: tuple[int, int] = (1600, 1200)
                 ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(RGB image, IDC box x0, y0, x1, y1 in its pixels)."""
    rng = np.random.default_rng(seed)
    scale = int(round(4 / GLANDS_MPP))  # training-scale pixel -> level-0 pixels
    w, h = size
    sw, sh = w // scale, h // scale
    small = texture(rng, sh, sw, "normal")
    x0, y0, x1, y1 = sw // 4, sh // 4, sw * 3 // 4, sh * 3 // 4
    small[y0:y1, x0:x1] = texture(rng, y1 - y0, x1 - x0, "idc")
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
    img = img.astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    box = (x0 * scale, y0 * scale, x1 * scale, y1 * scale)
    for _ in range(14):
        cx = rng.uniform(box[0] + 60, box[2] - 60)
        cy = rng.uniform(box[1] + 60, box[3] - 60)
        r = rng.uniform(22, 40)
        lumen = np.hypot(xx - cx, yy - cy) < r
        img[lumen] = img[lumen] * 0.25 + np.array([246, 232, 240]) * 0.75
        for a in np.linspace(0, 2 * np.pi, int(2 * np.pi * r / 9), endpoint=False):
            nucleus = np.hypot(xx - cx - (r + 5) * np.cos(a), yy - cy - (r + 5) * np.sin(a)) < 4.5
            img[nucleus] = (70, 28, 115)
    return np.clip(img, 0, 255).astype(np.uint8), box


def write_glands(path) -> tuple[int, int, int, int]:
    """The painted slide as a PNG that records its scale; returns the IDC box."""
    image, box = paint_glands()
    dpi = 25_400 / GLANDS_MPP
    Image.fromarray(image).save(path, dpi=(dpi, dpi))
    return box
