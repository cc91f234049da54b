"""Is this image one patch? Size checks shared by ``/predict`` and ``idcscan predict``.

The classifier reads one 50 x 50 px patch at the training scale (about 4 µm/px, 200 µm of
tissue). A smaller crop is padded, as the Kaggle edge patches were; a larger image is resized
to one patch, which is right for a patch saved at a finer scale but meaningless for a picture
of a whole tissue section (a 3582 x 2684 px section squeezed into 50 x 50 px). idcscan cannot
tell the two apart from the pixels, so it says what it did:

* up to ``MAX_PATCH_SIDE`` px on the long side: scored as one patch, with a warning when it was
  padded or resized;
* above it: not scored, by either: ``/predict`` refuses (HTTP 422, naming ``/slide``) and
  ``idcscan predict`` gives its row a one-line error naming ``idcscan slide`` (the command
  exits 2 when nothing was scored). Large images belong to slide mode, which tiles them at
  the training scale.
"""

from __future__ import annotations

from idcscan.errors import IdcscanError

#: Long side (px) above which an image is treated as a large image, not a patch.
MAX_PATCH_SIDE = 512
#: Long side (px) of the ``image`` preview echoed by ``/predict`` (never the full upload).
PREVIEW_SIDE = 256


class NotAPatch(IdcscanError):
    """An image far larger than a patch, sent where one patch is expected (HTTP 422)."""

    use_instead = "/slide"


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]} x {size[1]} px"


def patch_warnings(size: tuple[int, int], patch_size: int, mpp: float) -> list[str]:
    """What happened to an image of ``size`` = (width, height) on its way to one patch."""
    width, height = size
    patch = f"{patch_size} x {patch_size} px"
    if (width, height) == (patch_size, patch_size):
        return []
    if width <= patch_size and height <= patch_size:
        return [
            f"The image is {size_text(size)}, smaller than one {patch} patch: it was padded "
            "with white to a full patch, as the training edge patches were."
        ]
    return [
        f"The image is {size_text(size)}, larger than one {patch} patch: it was resized to "
        f"{patch} and scored as ONE patch at the training scale ({mpp:g} µm/px). If it shows "
        "more tissue than one patch, map it in the large-image view (POST /slide) instead."
    ]


def check_patch_size(
    size: tuple[int, int], patch_size: int, max_side: int = MAX_PATCH_SIDE
) -> None:
    """Refuse an image whose long side exceeds ``max_side``: it is a large image, not a patch."""
    if max(size) > max_side:
        raise NotAPatch(
            f"The image is {size_text(size)}, far larger than one {patch_size} x {patch_size} px "
            f"patch (/predict takes up to {max_side} px on the long side): squeezed into one "
            "patch its answer would mean nothing. Send it to POST /slide (the large-image view, "
            "/static/slide.html), which tiles it at the training scale."
        )


def cli_refusal(size: tuple[int, int], patch_size: int, path: str,
                max_side: int = MAX_PATCH_SIDE) -> str | None:
    """The error of ``idcscan predict``'s row for a file of ``size`` too large to be a patch
    (None when it may be scored as one), as ``check_patch_size`` words it for /predict."""
    if max(size) <= max_side:
        return None
    return (
        f"{path}: {size_text(size)} is a large image (a tissue section), not a {patch_size} x "
        f"{patch_size} px patch, so it was not scored: squeezed into one patch its answer would "
        f"mean nothing. Map it with `idcscan slide BUNDLE {path} --out DIR`, which tiles it at "
        "the training scale."
    )


def cli_warning(size: tuple[int, int], patch_size: int, mpp: float) -> str | None:
    """The one-line warning ``idcscan predict`` prints for a patch of ``size`` that was
    resized (None if it was not; larger images are refused, ``cli_refusal``)."""
    if max(size) > patch_size:
        return (
            f"{size_text(size)} was resized to one {patch_size} x {patch_size} px patch "
            f"(training scale {mpp:g} µm/px)."
        )
    return None
