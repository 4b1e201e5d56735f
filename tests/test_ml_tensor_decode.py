"""Tests for imgrec_app.ml.tensor_decode (the ``torchvision`` decoder), run on CPU: the same code
decodes on a GPU with ``device=cuda`` (nvjpeg) — only the device differs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgrec_app.ml.preprocess import ImageError, load_rgb, resize_center_crop
from imgrec_app.ml.tensor_decode import Payload, device_batch, prepare_payload, resize_center_crop_tensor
from tests.test_ml_preprocess import encode, oriented_jpeg

ALLOWED = ["JPEG", "PNG", "WEBP", "GIF"]
BUDGET = 40_000_000
torch = pytest.importorskip("torch")  # the torch-free CI job skips this module
pytestmark = pytest.mark.torch
CPU = torch.device("cpu")


def picture(size: tuple[int, int] = (360, 240), seed: int = 0) -> Image.Image:
    """A smooth picture with a few shapes (resizers agree on smooth pictures up to rounding)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.5, 2, 2)
    arr = np.stack(
        [
            127 + 100 * np.sin(x / w * np.pi * a),
            127 + 100 * np.cos(y / h * np.pi * b),
            (x + y) * 255 // (w + h),
        ],
        axis=-1,
    )
    arr[h // 3 : h // 2, w // 4 : w // 2] = (250, 30, 30)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def payload(data: bytes) -> Payload:
    return prepare_payload(data, allowed_formats=ALLOWED, max_pixels=BUDGET)


def test_plain_jpeg_is_left_for_the_device_and_other_files_are_decoded_by_pillow() -> None:
    jpeg = encode(picture(), "JPEG", quality=92)
    assert payload(jpeg) == Payload(jpeg=jpeg)
    grey = encode(picture().convert("L"), "JPEG")
    assert payload(grey).jpeg == grey
    png = payload(encode(picture(), "PNG"))
    assert png.jpeg is None and png.pixels is not None and png.pixels.shape == (240, 360, 3)
    cmyk = payload(encode(picture().convert("CMYK"), "JPEG"))
    assert cmyk.jpeg is None
    np.testing.assert_array_equal(
        cmyk.pixels,
        np.asarray(load_rgb(encode(picture().convert("CMYK"), "JPEG"), allowed_formats=ALLOWED, max_pixels=BUDGET)),
    )


def test_exif_rotated_jpeg_is_decoded_upright_by_pillow() -> None:
    """torchvision cannot apply EXIF orientation on a GPU: those JPEGs go through load_rgb."""
    upright = picture((300, 200))
    rotated = payload(oriented_jpeg(upright, 6))
    assert rotated.jpeg is None and rotated.pixels.shape == (200, 300, 3)
    assert payload(oriented_jpeg(upright, 1)).jpeg is not None


def test_bad_files_fail_with_the_same_codes_as_load_rgb() -> None:
    good = encode(picture((800, 600)), "JPEG")
    with pytest.raises(ImageError) as cut:
        payload(good[: len(good) // 2])  # no end marker: Pillow's strict load reports it
    assert cut.value.code == "truncated"
    with pytest.raises(ImageError) as refused:
        prepare_payload(encode(picture(), "PNG"), allowed_formats=["JPEG"], max_pixels=BUDGET)
    assert refused.value.code == "unsupported_format"
    with pytest.raises(ImageError) as big:
        prepare_payload(good, allowed_formats=ALLOWED, max_pixels=800 * 600 - 1)
    assert big.value.code == "too_many_pixels"
    with pytest.raises(ImageError) as empty:
        payload(b"")
    assert empty.value.code == "empty"


def test_tensor_resize_frames_like_the_pillow_recipe() -> None:
    """Same geometry (shorter side to 256, centre 224) as ``resize_center_crop``; pixels agree
    up to the resamplers' rounding on a smooth picture."""
    for size in ((640, 480), (480, 640), (300, 300), (2000, 250)):
        img = picture(size)
        ours = resize_center_crop_tensor(
            torch.from_numpy(np.asarray(img)).permute(2, 0, 1), resize_size=256, crop_size=224
        )
        assert ours.shape == (3, 224, 224) and ours.dtype == torch.uint8
        pillow = resize_center_crop(img, resize_size=256, crop_size=224).astype(np.int16)
        diff = np.abs(ours.permute(1, 2, 0).numpy().astype(np.int16) - pillow)
        assert diff.mean() < 2.0, size
    # A picture smaller than the crop is scaled up, never cropped short.
    small = resize_center_crop_tensor(torch.zeros((3, 20, 50), dtype=torch.uint8), resize_size=256, crop_size=224)
    assert small.shape == (3, 224, 224)


def test_device_batch_decodes_jpegs_in_one_call_and_falls_back_per_image() -> None:
    """A batch mixing device JPEGs, Pillow pixels and a JPEG nobody can decode: the bad row is an
    error, the others are framed, in order."""
    jpegs = [encode(picture(seed=i), "JPEG", quality=95) for i in range(2)]
    png_pixels = np.asarray(picture(seed=5))
    broken = Payload(jpeg=b"\xff\xd8\xff\xe0 not really a JPEG \xff\xd9")
    items = [Payload(jpeg=jpegs[0]), broken, Payload(pixels=png_pixels), Payload(jpeg=jpegs[1])]
    pixels, errors = device_batch(items, resize_size=256, crop_size=224, device=CPU)
    assert set(errors) == {1} and errors[1] in ("corrupt", "truncated", "not_an_image")
    assert pixels.shape == (3, 224, 224, 3) and pixels.dtype == torch.uint8
    for out, img in zip(pixels, [picture(seed=0), picture(seed=5), picture(seed=1)]):
        expected = resize_center_crop(img, resize_size=256, crop_size=224).astype(np.int16)
        # JPEG quality 95 + two resamplers: close, not equal.
        assert np.abs(out.numpy().astype(np.int16) - expected).mean() < 4.0
    none, errors = device_batch([broken], resize_size=256, crop_size=224, device=CPU)
    assert none.shape == (0, 224, 224, 3) and set(errors) == {0}
