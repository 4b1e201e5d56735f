"""Product framing (imgrec_app.ml.framing): the whole product kept, cropped on plain backgrounds."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from imgrec_app.ml.framing import frame_product
from imgrec_app.ml.preprocess import load_rgb, resize_center_crop
from tests.test_ml_preprocess import encode

BLUE, GREEN, RED = (0, 0, 255), (0, 255, 0), (255, 0, 0)


def colour_share(arr: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> float:
    return float((np.abs(arr.astype(int) - colour).max(axis=2) <= tol).mean())


def non_background_box(arr: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> tuple[int, ...]:
    ys, xs = np.nonzero(np.abs(arr.astype(int) - background).max(axis=2) > 40)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def wide_product(size: tuple[int, int] = (600, 150), background=(255, 255, 255)) -> Image.Image:
    """A bench-like product filling the frame from edge to edge: blue left end, green right end."""
    w, h = size
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, h // 4, w - 1, h * 3 // 4), fill=RED)
    draw.rectangle((0, 0, w // 10, h - 1), fill=BLUE)
    draw.rectangle((w - w // 10, 0, w - 1, h - 1), fill=GREEN)
    return img


def test_a_wide_product_touching_the_borders_survives_pad_to_square() -> None:
    img = wide_product()
    for crop_object in (False, True):
        out = frame_product(img, size=224, crop_object=crop_object)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        # Both ends are in the picture, each about as big as in the source (1/10 of the width).
        assert colour_share(out, BLUE) > 0.02 and colour_share(out, GREEN) > 0.02
        assert abs(colour_share(out, BLUE) - colour_share(out, GREEN)) < 0.01
        # The aspect ratio is kept: background above and below, nothing stretched to the square.
        x0, y0, x1, y1 = non_background_box(out)
        assert (x1 - x0) / (y1 - y0) > 3.5
    # What the centre-crop recipe does to the same product: both ends are cut off.
    cropped = resize_center_crop(img, resize_size=256, crop_size=224)
    assert colour_share(cropped, BLUE) == 0 and colour_share(cropped, GREEN) == 0


def test_a_tall_product_is_kept_whole_too() -> None:
    img = wide_product().transpose(Image.Transpose.ROTATE_90)
    out = frame_product(img, size=240)
    assert out.shape == (240, 240, 3)
    assert colour_share(out, BLUE) > 0.02 and colour_share(out, GREEN) > 0.02
    x0, y0, x1, y1 = non_background_box(out)
    assert (y1 - y0) / (x1 - x0) > 3.5


def test_a_small_product_on_a_plain_background_is_cropped_to_its_box_with_a_margin() -> None:
    img = Image.new("RGB", (400, 300), (250, 250, 250))
    ImageDraw.Draw(img).rectangle((30, 50, 69, 89), fill=RED)  # 40 × 40 in a corner
    out = frame_product(img, size=224)
    x0, y0, x1, y1 = non_background_box(out, (250, 250, 250))
    # The product fills the square minus the 5 % margin on each side, centred.
    assert 190 <= x1 - x0 <= 214 and 190 <= y1 - y0 <= 214
    assert abs((x0 + x1) / 2 - 112) <= 2 and abs((y0 + y1) / 2 - 112) <= 2
    assert tuple(out[2, 2]) == (250, 250, 250)  # padded with the background's own colour
    # Without the object crop it stays a small square in the letterboxed picture.
    padded = frame_product(img, size=224, crop_object=False)
    px0, _, px1, _ = non_background_box(padded, (250, 250, 250))
    assert px1 - px0 < 30


def test_a_busy_background_is_not_cropped_only_letterboxed() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (150, 300, 3), dtype=np.uint8))  # no plain border
    ImageDraw.Draw(photo).rectangle((140, 60, 160, 80), fill=RED)
    out = frame_product(photo, size=224)
    # The whole photo, scaled to the square's width, with white bars above and below.
    assert (out[:50] == 255).all() and (out[-50:] == 255).all()
    band = out[60:164].astype(int)
    # The photo spans the square's whole width: its left and right columns are the photo's noise.
    assert band[:, 0].std() > 20 and band[:, -1].std() > 20


def test_transparent_clip_art_is_put_on_white_and_cropped_to_the_drawing() -> None:
    art = Image.new("RGBA", (500, 500), (0, 0, 0, 0))
    ImageDraw.Draw(art).ellipse((200, 300, 259, 339), fill=(*BLUE, 255))  # 60 × 40 drawing
    rgb = load_rgb(encode(art, "PNG"), allowed_formats=["PNG"], max_pixels=10**7)
    out = frame_product(rgb, size=224)
    assert tuple(out[0, 0]) == (255, 255, 255)  # transparency became white, not black
    x0, y0, x1, y1 = non_background_box(out)
    assert x1 - x0 >= 190  # the drawing's longer side fills the frame
    assert 120 <= y1 - y0 <= 145  # and keeps its 3:2 shape


def test_frame_product_accepts_non_rgb_modes() -> None:
    out = frame_product(Image.new("L", (50, 20), 80), size=32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
