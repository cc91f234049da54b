"""The one preprocessing definition: how any image becomes the patch the model reads."""

from __future__ import annotations

import numpy as np
from PIL import Image

from idcscan.preprocessing import PAD_VALUE, Preprocessing, to_patch, to_rgb


def test_kaggle_patch_is_taken_unchanged() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    assert np.array_equal(to_patch(Image.fromarray(arr)), arr)


def test_edge_crop_is_padded_white_bottom_right_not_stretched() -> None:
    arr = np.full((37, 50, 3), 10, dtype=np.uint8)
    patch = to_patch(Image.fromarray(arr))
    assert patch.shape == (50, 50, 3)
    assert (patch[:37] == 10).all()
    assert (patch[37:] == PAD_VALUE).all()


def test_large_image_is_resized_to_patch_size() -> None:
    big = Image.new("RGB", (400, 300), (200, 100, 50))
    patch = to_patch(big)
    assert patch.shape == (50, 50, 3)
    assert tuple(patch[25, 25]) == (200, 100, 50)


def test_one_pixel_image_is_accepted() -> None:
    assert to_patch(Image.new("RGB", (1, 1), (0, 0, 0))).shape == (50, 50, 3)


def test_modes_are_converted_to_rgb() -> None:
    gray16 = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert to_rgb(gray16).getpixel((0, 0)) == (255, 255, 255)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> glass white
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 0)
    assert to_rgb(pal).mode == "RGB"


def test_definition_round_trips_through_json_dict() -> None:
    pre = Preprocessing(input_size=64)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
