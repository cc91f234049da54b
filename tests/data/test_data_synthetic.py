"""Synthetic data: exact Kaggle layout, determinism, and IDC that colour alone cannot find."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from idcscan.data.synthetic import generate_dataset, render_patient
from idcscan.errors import IdcscanError
from idcscan.preprocessing import pad_to_patch

NAME = re.compile(r"^(\d+)_idx5_x(\d+)_y(\d+)_class([01])\.png$")


def test_kaggle_layout(synthetic_kaggle: Path) -> None:
    files = sorted(f for f in synthetic_kaggle.rglob("*") if f.is_file())
    pngs = [f for f in files if f.suffix == ".png"]
    assert [f.name for f in files if f not in pngs] == ["synthetic.json"]  # provenance only
    assert len(pngs) == 12 * 40
    assert len({p.parts[-3] for p in pngs}) == 12
    sizes, labels = [], []
    for p in pngs:
        m = NAME.match(p.name)
        assert m, p.name
        pid, x, y, c = m[1], int(m[2]), int(m[3]), m[4]
        assert p.parent.name == c and p.parent.parent.name == pid
        assert x % 50 == 1 and y % 50 == 1
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            sizes.append(im.size)
        labels.append(int(c))
    assert all(w <= 50 and h <= 50 for w, h in sizes)
    assert any(s != (50, 50) for s in sizes)  # some edge crops, so padding gets exercised
    assert sum(s == (50, 50) for s in sizes) > 0.8 * len(sizes)
    assert 0.1 < np.mean(labels) < 0.6


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", patients=2, patches_per_patient=12, seed=3)
    generate_dataset(tmp_path / "b", patients=2, patches_per_patient=12, seed=3)
    generate_dataset(tmp_path / "c", patients=2, patches_per_patient=12, seed=4)

    def read(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    assert read(tmp_path / "a") == read(tmp_path / "b")
    assert read(tmp_path / "a") != read(tmp_path / "c")
    # Adding patients leaves the earlier ones unchanged.
    np.testing.assert_array_equal(render_patient(3, 1, 12).canvas, render_patient(3, 1, 12).canvas)


def test_rejects_nonsense_sizes(tmp_path: Path) -> None:
    with pytest.raises(IdcscanError):
        generate_dataset(tmp_path, patients=0)


def test_patients_tile_into_a_mosaic_with_clustered_tumour() -> None:
    p = render_patient(0, 0, 100, idc_share=0.3)
    assert len(p.x) == 100 and len({(x, y) for x, y in zip(p.x, p.y)}) == 100
    assert p.label.sum() == 30
    # Positives cluster: most IDC patches touch another IDC patch (random placement would not).
    pos = {(x, y) for x, y, c in zip(p.x, p.y, p.label) if c}
    touching = sum(
        any((x + dx, y + dy) in pos for dx, dy in ((50, 0), (-50, 0), (0, 50), (0, -50)))
        for x, y in pos
    )
    assert touching / len(pos) > 0.8
    # Pixel truth agrees with patch labels: IDC patches are mostly tumour tissue.
    frac = np.array(
        [
            p.tumour[y - p.y0 : y - p.y0 + 50, x - p.x0 : x - p.x0 + 50].mean()
            for x, y in zip(p.x, p.y)
        ]
    )
    assert frac[p.label == 1].mean() > 0.6 and frac[p.label == 0].mean() < 0.2


def _nuclear_features(patch: np.ndarray) -> list[float]:
    """Haematoxylin absorbs red, so nuclei are the low-red pixels: their count and sizes."""
    mask = patch[..., 0] < 185
    lab, n = ndimage.label(mask)
    if n == 0:
        return [0.0] * 5
    areas = np.bincount(lab.ravel())[1:]
    large = areas >= 12
    return [
        float(n),
        float(areas.mean()),
        float(large.sum()),
        float(areas[large].sum() / 2500),
        float(mask.mean()),
    ]


def test_not_separable_by_mean_colour_but_by_nuclear_shape() -> None:
    patches, labels, groups = [], [], []
    for i in range(24):
        p = render_patient(11, i, 50)
        patches += [pad_to_patch(np.ascontiguousarray(a)) for a in p.patches()]
        labels += p.label.tolist()
        groups += [i] * len(p.x)
    x = np.stack(patches)
    y, g = np.array(labels), np.array(groups)
    mean_rgb = x.reshape(len(x), -1, 3).mean(axis=1)
    shape = np.array([_nuclear_features(a) for a in x])

    def auc(features: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        proba = cross_val_predict(
            model, features, y, groups=g, cv=GroupKFold(4), method="predict_proba"
        )
        return roc_auc_score(y, proba[:, 1])

    colour_auc, shape_auc = auc(mean_rgb), auc(shape)
    assert colour_auc < 0.8, colour_auc
    assert shape_auc > colour_auc + 0.08, (shape_auc, colour_auc)


def test_patients_differ_in_stain() -> None:
    means = np.array(
        [render_patient(0, i, 20).canvas.reshape(-1, 3).mean(axis=0) for i in range(8)]
    )
    assert means.std(axis=0).max() > 4.0
