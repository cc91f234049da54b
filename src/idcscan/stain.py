"""Stain normalisation: per-patch Reinhard (lαβ) and per-group Macenko (torch-free numpy).

Patients differ in stain colour and intensity (lab, batch, scanner). Reinhard et al. (2001)
map an image's colour statistics onto a target's: convert RGB to the decorrelated lαβ space
(RGB -> LMS cone space, log10, a fixed rotation), shift and scale each channel so its mean and
standard deviation match the target's, and convert back. Here the statistics are taken per
patch (all its pixels), and the target is fitted on the training patches.

The same arithmetic runs inside the exported ONNX graph (``idcscan.training.network``), so train,
evaluate, predict, serve and slide mode all normalise identically; this module is the
reference the graph is tested against, and what writes/reads the target in model.json.

Macenko (below) is estimated per group of patches (a slide, a patient, a folder) and so
cannot live inside a per-batch graph: ``idcscan.runtime.predictor`` applies it, in numpy,
before the graph, for every command alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from idcscan.errors import IdcscanError

#: RGB -> LMS (Reinhard et al. 2001, eq. 4).
RGB_TO_LMS = np.array([[0.3811, 0.5783, 0.0402],
                       [0.1967, 0.7244, 0.0782],
                       [0.0241, 0.1288, 0.8444]], dtype=np.float64)
#: log LMS -> lαβ (eq. 6).
LOGLMS_TO_LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])
LMS_TO_RGB = np.linalg.inv(RGB_TO_LMS)
LAB_TO_LOGLMS = np.linalg.inv(LOGLMS_TO_LAB)
#: Pixels are mapped to (v + 1) / 256 so the logarithm never sees zero.
OFFSET, SCALE = 1.0, 256.0
#: Floor on a patch's per-channel standard deviation (flat patches are left alone).
MIN_STD = 1e-3


@dataclass(frozen=True)
class StainTarget:
    """The lαβ mean and standard deviation every patch is mapped to (in model.json)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    method: str = "reinhard"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "space": "lab (Reinhard lαβ)", "statistics": "per patch",
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StainTarget":
        if d.get("method", "reinhard") != "reinhard":
            raise IdcscanError(f"Unknown stain normalisation {d.get('method')!r}; this "
                               "idcscan knows 'reinhard' and 'macenko'.")
        return cls(mean=tuple(float(v) for v in d["mean"]),
                   std=tuple(float(v) for v in d["std"]))


def rgb_to_lab(images: np.ndarray) -> np.ndarray:
    """uint8/float NHWC RGB [0, 255] -> float64 lαβ, same shape."""
    x = (np.asarray(images, dtype=np.float64) + OFFSET) / SCALE
    return np.log10(x @ RGB_TO_LMS.T) @ LOGLMS_TO_LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """lαβ -> float RGB in [0, 255] (clipped)."""
    rgb = (10.0 ** (lab @ LAB_TO_LOGLMS.T)) @ LMS_TO_RGB.T
    return np.clip(rgb * SCALE - OFFSET, 0.0, 255.0)


def lab_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch lαβ mean and standard deviation, each (N, 3)."""
    lab = rgb_to_lab(images)
    return lab.mean(axis=(1, 2)), lab.std(axis=(1, 2))


def fit_target(images: np.ndarray) -> StainTarget:
    """The target: the average per-patch lαβ mean and standard deviation of ``images``."""
    if len(images) == 0:
        raise IdcscanError("Cannot fit a stain target on no patches.")
    mean, std = lab_stats(images)
    return StainTarget(tuple(float(v) for v in mean.mean(0)),
                       tuple(float(v) for v in std.mean(0)))


def reinhard(images: np.ndarray, target: StainTarget) -> np.ndarray:
    """Map every patch's lαβ statistics to ``target``; float64 NHWC RGB in [0, 255]."""
    lab = rgb_to_lab(images)
    mean = lab.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(lab.std(axis=(1, 2), keepdims=True), MIN_STD)
    out = (lab - mean) / std * np.asarray(target.std) + np.asarray(target.mean)
    return lab_to_rgb(out)


# ------------------------------------------------------------------------ Macenko, per group
# Per-patch statistics wash out what a patch shows (a nest of dark nuclei is mapped to the
# average colour). Macenko et al. (ISBI 2009) instead estimate a group's two stain vectors
# (haematoxylin, eosin) and its 99th-percentile stain amounts from the optical density of
# many pixels, then re-mix every pixel with a reference's vectors and amounts. With the
# group a patient, a slide or a folder, every patch of one scan is mapped the same way, and
# what differs between patches survives. The estimate is torchstain's (its numpy backend,
# the same code as its published normaliser); the re-mixing is one 3x3 linear map in optical
# density per group, so a whole batch is normalised with one matrix product.

#: Transmitted light intensity of torchstain's Macenko (pixels brighter than it are glass).
MACENKO_IO = 240.0
#: Pixels used to estimate a group (a seeded subsample above this; 1-2 s at 400,000).
MACENKO_MAX_PIXELS = 400_000
#: A group with fewer stained pixels (optical density >= 0.15 in every channel, torchstain's
#: beta) keeps the reference (nothing to estimate from: glass, or a pale scrap).
MACENKO_MIN_STAINED = 100
MACENKO_BETA = 0.15


@dataclass(frozen=True)
class StainMatrix:
    """A group's stain vectors (optical density per unit amount; columns H, E) and the 99th
    percentile of each stain's amount."""

    he: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    max_c: tuple[float, float]

    @classmethod
    def of(cls, he: np.ndarray, max_c: np.ndarray) -> "StainMatrix":
        he = np.asarray(he, dtype=np.float64).reshape(3, 2)
        return cls(he=tuple(tuple(float(v) for v in row) for row in he),  # type: ignore[arg-type]
                   max_c=(float(max_c[0]), float(max_c[1])))

    def to_dict(self) -> dict[str, Any]:
        return {"he": [list(r) for r in self.he], "max_c": list(self.max_c)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StainMatrix":
        return cls.of(np.asarray(d["he"]), np.asarray(d["max_c"]))


def macenko_reference() -> StainMatrix:
    """torchstain's (and Macenko's reference implementation's) target H&E."""
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    ref = NumpyMacenkoNormalizer()
    return StainMatrix.of(ref.HERef, ref.maxCRef)


def estimate_stains(images: np.ndarray, seed: int = 0) -> StainMatrix | None:
    """The stains of a group of uint8 RGB images (any shape ending in 3), or None when the
    group has too few stained pixels to estimate from."""
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    px = np.asarray(images, dtype=np.uint8).reshape(-1, 3)
    if len(px) > MACENKO_MAX_PIXELS:
        px = px[np.sort(np.random.default_rng(seed).choice(len(px), MACENKO_MAX_PIXELS,
                                                             replace=False))]
    od = -np.log((px.astype(np.float64) + 1.0) / MACENKO_IO)
    if int(np.all(od >= MACENKO_BETA, axis=1).sum()) < MACENKO_MIN_STAINED:
        return None
    norm = NumpyMacenkoNormalizer()
    try:
        norm.fit(px, Io=MACENKO_IO, beta=MACENKO_BETA)
    except (np.linalg.LinAlgError, ValueError, IndexError):
        return None
    if not (np.all(np.isfinite(norm.HERef)) and np.all(np.asarray(norm.maxCRef) > 0)):
        return None
    return StainMatrix.of(norm.HERef, norm.maxCRef)


def od_map(source: StainMatrix, target: StainMatrix) -> np.ndarray:
    """The 3x3 map of optical density that re-mixes ``source``'s stains as ``target``'s
    (unmix with the source vectors, rescale each stain's amount, mix with the target's)."""
    he_s, he_t = np.asarray(source.he), np.asarray(target.he)
    scale = np.asarray(target.max_c) / np.asarray(source.max_c)
    return he_t @ np.diag(scale) @ np.linalg.pinv(he_s)


def apply_od_map(images: np.ndarray, m: np.ndarray) -> np.ndarray:
    """uint8 RGB images re-mixed by the 3x3 optical-density map ``m`` (uint8, same shape)."""
    x = np.asarray(images, dtype=np.uint8)
    od = -np.log((x.astype(np.float32) + 1.0) / np.float32(MACENKO_IO))
    out = np.float32(MACENKO_IO) * np.exp(-(od @ np.asarray(m, dtype=np.float32).T))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class StainGroup:
    """One group's estimate and the map that normalises its patches (see ``MacenkoNorm``)."""

    source: StainMatrix | None
    matrix: np.ndarray | None  # None: no estimate, the pixels are left as they are

    def apply(self, images: np.ndarray) -> np.ndarray:
        if self.matrix is None:
            return np.asarray(images, dtype=np.uint8)
        return apply_od_map(images, self.matrix)

    def to_dict(self) -> dict[str, Any]:
        """What summary files record: the estimate, or that there was none (left as is)."""
        if self.source is None:
            return {"estimated": False}
        return {"estimated": True, **self.source.to_dict()}


@dataclass(frozen=True)
class MacenkoNorm:
    """Per-group Macenko normalisation as recorded in model.json: the target stains."""

    target: StainMatrix
    method: str = "macenko"

    def to_dict(self) -> dict[str, Any]:
        return {"method": "macenko", "statistics": "per group (slide, patient, folder or image)",
                "target": self.target.to_dict(), "io": MACENKO_IO, "beta": MACENKO_BETA}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MacenkoNorm":
        return cls(target=StainMatrix.from_dict(d["target"]))

    def group(self, images: np.ndarray) -> StainGroup:
        """Estimate a group's stains from its images (a sample of them is enough)."""
        source = estimate_stains(images)
        return StainGroup(source, None if source is None else od_map(source, self.target))

    def normalise_group(self, images: np.ndarray) -> np.ndarray:
        """``images`` normalised with the stains estimated on ``images`` themselves."""
        return self.group(images).apply(images)

    def normalise_groups(self, images: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Each group of ``images`` (``groups``: one key per image, e.g. its patient)
        normalised with the stains estimated on that group."""
        images = np.asarray(images, dtype=np.uint8)
        out = np.empty_like(images)
        keys = np.asarray(groups)
        for key in np.unique(keys):
            rows = np.flatnonzero(keys == key)
            out[rows] = self.normalise_group(images[rows])
        return out

    def normalise_each(self, images: np.ndarray) -> np.ndarray:
        """Every image its own group (a lone upload: there is nothing else to go by)."""
        return np.stack([self.normalise_group(im) for im in images]) if len(images) \
            else np.asarray(images, dtype=np.uint8)


def stain_norm_from_dict(d: dict[str, Any] | None) -> "StainTarget | MacenkoNorm | None":
    """The normalisation a bundle's preprocessing records (None: none)."""
    if not d:
        return None
    if d.get("method") == "macenko":
        return MacenkoNorm.from_dict(d)
    return StainTarget.from_dict(d)
