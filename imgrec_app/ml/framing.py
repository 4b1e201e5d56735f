"""Product-photo framing: find the product on a plain background, keep all of it, pad to a square.

The centre-crop recipe (``preprocess.resize_center_crop``) cuts the ends off any product wider or
taller than it is long (a guitar, a scarf, a bench), and spends most of its pixels on background when
a small product sits on a large canvas.  :func:`frame_product` instead

1. estimates the background from the image's border (plain when nearly all border pixels share one
   colour: a studio photo on white, clip art composited on white by ``load_rgb``);
2. on a plain background, crops to the bounding box of the pixels that differ from it (computed on
   a reduced copy, so a 24-megapixel photo costs the same as a thumbnail);
3. scales that box so its longer side fills the square minus a margin and pads the rest with the
   background colour: the whole product stays in the picture whatever its aspect ratio.

A photo without a plain background is letterboxed whole (nothing is cut off).  No torch, no Django.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from imgrec_app.ml.preprocess import BACKGROUND, _to_rgb

# A border pixel belongs to the background when no channel differs from the border's median colour
# by more than this (JPEG noise, anti-aliased edges, faint paper texture).
TOLERANCE = 24
# The background counts as plain when at least this share of border pixels matches it.
PLAIN_SHARE = 0.9
# Margin around the product, as a share of the square's side (each side).
MARGIN = 0.05
# The object box is measured on a copy reduced to at most this many pixels on its longer side.
ANALYSIS_SIDE = 256
_REDUCING_GAP = 3.0


def _analysis_copy(img: Image.Image) -> tuple[np.ndarray, int]:
    factor = max(1, max(img.size) // ANALYSIS_SIDE)
    small = img.reduce(factor) if factor > 1 else img
    return np.asarray(small, dtype=np.int16), factor


def border_background(arr: np.ndarray) -> tuple[tuple[int, int, int], bool]:
    """The border's median colour of an ``[H, W, 3]`` array, and whether the background is plain."""
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).reshape(-1, 3)
    colour = np.median(border, axis=0).round().astype(np.int16)
    matches = (np.abs(border - colour).max(axis=1) <= TOLERANCE).mean()
    return (int(colour[0]), int(colour[1]), int(colour[2])), bool(matches >= PLAIN_SHARE)


def object_box(arr: np.ndarray, background: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of the pixels that differ from ``background``, or None.

    A row or column counts only when enough of its pixels differ (a stray speck of JPEG noise in a
    corner does not stretch the box to the corner).
    """
    h, w = arr.shape[:2]
    mask = np.abs(arr - np.asarray(background, dtype=np.int16)).max(axis=2) > TOLERANCE
    cols = np.flatnonzero(mask.sum(axis=0) >= max(1, h // 200))
    rows = np.flatnonzero(mask.sum(axis=1) >= max(1, w // 200))
    if not len(cols) or not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def frame_product(img: Image.Image, *, size: int, crop_object: bool = True, margin: float = MARGIN) -> np.ndarray:
    """Frame the product of an RGB image in a ``size``² square, as uint8 HWC.

    Args:
        img: an RGB image (``load_rgb``'s output; other modes are converted).
        size: side of the output square.
        crop_object: crop to the object's bounding box when the background is plain; False only
            pads the whole image to a square ("pad" recipe).
        margin: background left around the object on each side, as a share of ``size``
            (only when the object is cropped).
    """
    if img.mode != "RGB":
        img = _to_rgb(img)
    w, h = img.size
    arr, factor = _analysis_copy(img)
    background, plain = border_background(arr)
    box: tuple[float, float, float, float] = (0, 0, w, h)
    fill = background if plain else BACKGROUND
    inner = size
    if crop_object and plain:
        found = object_box(arr, background)
        if found is not None:
            x0, y0, x1, y1 = found
            # Back to source pixels; one analysis pixel of slack so the edge is never cut.
            box = (
                max(0, (x0 - 1) * factor),
                max(0, (y0 - 1) * factor),
                min(w, (x1 + 1) * factor),
                min(h, (y1 + 1) * factor),
            )
            inner = max(1, round(size * (1 - 2 * margin)))
    bw, bh = box[2] - box[0], box[3] - box[1]
    scale = inner / max(bw, bh)
    tw, th = max(1, min(size, round(bw * scale))), max(1, min(size, round(bh * scale)))
    product = img.resize((tw, th), Image.Resampling.BILINEAR, box=box, reducing_gap=_REDUCING_GAP)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(product, ((size - tw) // 2, (size - th) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def model_input(img: Image.Image, spec: Any) -> np.ndarray:
    """The uint8 HWC pixels a backbone sees for an RGB image, by the spec's recipe.

    One function for the worker's encoder and for a web process without torch that sends a search
    photo's pixels to a worker, so both frame a photo exactly alike.
    """
    from imgrec_app.ml.preprocess import resize_center_crop

    if spec.preprocess == "crop":
        return resize_center_crop(img, resize_size=spec.resize_size, crop_size=spec.crop_size)
    return frame_product(img, size=spec.crop_size, crop_object=spec.preprocess == "product")
