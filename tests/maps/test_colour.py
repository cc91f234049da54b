"""The map's colours tint the tissue without hiding it: nuclei and glands stay readable
inside IDC areas at the pages' default opacity.

Measured on synthetic H&E (``data.synthetic.render_patient``: stain optical densities, tumour
nests, ducts): its tumour pixels, tinted as at P(IDC) 0.5, 0.7 and 0.9. "Readable" is the
light-dark contrast of the tissue kept (std of CIE L*, overlay over plain): what lets nuclei
stand out from stroma and lumens. "Visible" is how far the tint moves the colour (mean CIE
ΔE): the map must still be seen. Real tissue may differ; these are the same synthetic images
the demo model trains on.
"""

from __future__ import annotations

import numpy as np
import pytest

from idcscan.maps.colour import ALPHA_FROM, BLEND, PAGE_OPACITY, blend, idc_rgba


def lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255) to CIE L*a*b* (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


@pytest.fixture(scope="module")
def tumour() -> np.ndarray:
    """Tumour pixels of six synthetic patients, as an N x 1 x 3 image."""
    from idcscan.data.synthetic import render_patient

    parts = []
    for index in range(6):
        patient = render_patient(5, index, 60, idc_share=0.6)
        parts.append(patient.canvas[patient.tumour])
    return np.concatenate(parts)[:, None, :]


def painted(base: np.ndarray, p: float, opacity: float) -> np.ndarray:
    """The layer painted over the tissue (normal alpha blending), as the pages did before."""
    rgba = idc_rgba(np.full(base.shape[:2], p)).astype(np.float64)
    weight = rgba[..., 3:] / 235.0 * opacity
    return base * (1 - weight) + rgba[..., :3] * weight


def contrast_and_shift(base: np.ndarray, over: np.ndarray) -> tuple[float, float]:
    lb, lo = lab(base), lab(over)
    return float(lo[..., 0].std() / lb[..., 0].std()), float(
        np.sqrt(((lo - lb) ** 2).sum(-1)).mean())


@pytest.mark.parametrize("p", [0.5, 0.7, 0.9])
def test_nuclei_and_glands_stay_readable_under_the_map(tumour: np.ndarray, p: float) -> None:
    tinted = blend(tumour, np.full(tumour.shape[:2], p), PAGE_OPACITY)
    kept, shift = contrast_and_shift(tumour, tinted)
    assert kept >= 0.75, kept  # at least three quarters of the tissue's contrast
    # and the tint is plain to see (a CIE ΔE of 10 is an obvious colour difference)
    assert shift >= (15 if p < 0.7 else 40), shift
    if p >= 0.7:  # where the map says IDC the painted layer at the old 70% kept under a third
        old_kept, _ = contrast_and_shift(tumour, painted(tumour.astype(float), p, 0.7))
        assert old_kept < 0.35 and kept > 2 * old_kept


def test_low_values_leave_the_tissue_untouched(tumour: np.ndarray) -> None:
    below = blend(tumour, np.full(tumour.shape[:2], ALPHA_FROM - 0.01), PAGE_OPACITY)
    assert np.array_equal(below, tumour)
    unscored = blend(tumour, np.full(tumour.shape[:2], np.nan), PAGE_OPACITY)
    assert np.array_equal(unscored, tumour)


def test_the_pages_use_the_one_scale_and_its_default(tiny_bundle) -> None:
    """The large-image page and the viewer start at PAGE_OPACITY and blend the same way."""
    from fastapi.testclient import TestClient

    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    assert BLEND == "multiply"
    app = create_app(tiny_bundle)
    with TestClient(app) as client:
        slide_page = client.get("/static/slide.html").text
        css = client.get("/static/style.css").text
    assert f'id="opacity" min="0" max="100" value="{round(PAGE_OPACITY * 100)}"' in slide_page
    assert f"mix-blend-mode: {BLEND}" in css
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "slides").mkdir()
        configure_viewer(app, Path(tmp) / "slides", Path(tmp) / "maps")
        with TestClient(app) as client:
            viewer = client.get("/viewer").text
            script = client.get("/static/viewer.js").text
    assert f'value="{PAGE_OPACITY:g}"' in viewer and f'MAP_BLEND = "{BLEND}"' in script
