"""Decoding and validating real-world images safely (no Django, no torch).

Every image that reaches a model goes through :func:`load_rgb`: formats restricted to an
allow-list before any decoder runs, pixel budget checked from the header, EXIF orientation
applied, alpha composited on a fixed background, 16-bit/CMYK/palette converted properly, the first
frame of animations used, and JPEGs decoded at reduced size (draft mode) when the model needs
fewer pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import struct
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Pillow format names we can ever be asked to allow, and their usual extensions.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": ("jpg", "jpeg", "jpe", "jfif"),
    "PNG": ("png",),
    "WEBP": ("webp",),
    "GIF": ("gif",),
    "BMP": ("bmp",),
    "TIFF": ("tif", "tiff"),
    "AVIF": ("avif",),
    "HEIF": ("heic", "heif"),
}

BACKGROUND = (255, 255, 255)

# Pillow opens a JPEG that carries extra pictures (stereo pairs, depth maps, previews: common from
# phones) as "MPO".  It is a JPEG file and we only ever decode its primary picture.
_FORMAT_ALIASES = {"MPO": "JPEG"}

# resize_center_crop's downscale recipe: Pillow's resize(..., reducing_gap=3.0).
_REDUCING_GAP = 3.0

# How much of the file the format sniffer looks at (SVG may start with a long comment/prolog).
_SNIFF_BYTES = 4096

# Magic numbers of formats, for a clear "unsupported_format" message about a file that no allowed
# decoder accepted.  Pure byte comparisons: no Pillow plugin ever runs on a refused format.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"8BPS", "PSD"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),
    (0, b"MM\x00+", "TIFF"),
    (0, b"BM", "BMP"),
    (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG2000"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"SIMPLE  =", "FITS"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\x00\x00\x02\x00", "CUR"),
    (0, b"icns", "ICNS"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"gimp xcf", "XCF"),
    (0, b"\x01\xda", "SGI"),
    (0, b"\x59\xa6\x6a\x95", "SUN"),
    (0, b"\x89HDF\r\n\x1a\n", "HDF5"),
    (0, b"/* XPM */", "XPM"),
)

# ISO base media ("ftyp" box) brands of still-image formats.
_FTYP_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIF",
    b"heix": "HEIF",
    b"heim": "HEIF",
    b"heis": "HEIF",
    b"hevc": "HEIF",
    b"hevx": "HEIF",
    b"hevm": "HEIF",
    b"hevs": "HEIF",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}

# Pillow warns (DecompressionBombWarning) from inside Image.open; that warning is noise for us
# because our own, lower budget is checked right after.  warnings.catch_warnings() swaps
# process-wide state, so imgrec's decode threads take turns around it.
_OPEN_LOCK = threading.Lock()

# What Pillow's parsers raise on hostile or damaged bytes (found by fuzzing: a cut GIF raises
# IndexError from n_frames).  RuntimeError stays out: it means a misconfigured process.
_PARSE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)


class ImageError(ValueError):
    """An image that cannot be used, with a stable machine-readable ``code``.

    Codes: ``empty``, ``too_large``, ``not_an_image``, ``unsupported_format``,
    ``extension_mismatch``, ``too_many_pixels``, ``truncated``, ``corrupt``, ``missing_file``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format, size and frame count."""

    format: str
    width: int
    height: int
    frames: int


def sha256_of(file: Any) -> str:
    """SHA-256 of a file-like object (Django File or binary stream), position restored."""
    digest = hashlib.sha256()
    stream = getattr(file, "file", file)
    try:
        start = stream.tell()
    except (AttributeError, OSError):
        start = None
    if hasattr(file, "chunks"):
        if hasattr(file, "seek"):
            file.seek(0)
        for chunk in file.chunks():
            digest.update(chunk)
    else:
        stream.seek(0)
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if start is not None:
        stream.seek(start)
    return digest.hexdigest()


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes, without any decoder, or ``None``."""
    for offset, magic, name in _MAGIC:
        if head.startswith(magic, offset):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "ISOBMFF")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--")) and b"<svg" in text:
        return "SVG"
    return None


def _extensions_for(fmt: str) -> tuple[str, ...]:
    known = FORMAT_EXTENSIONS.get(fmt)
    if known:
        return known
    # A format a host allowed that we have no table entry for: trust Pillow's registry.
    Image.init()
    return tuple(ext.lstrip(".") for ext, name in Image.registered_extensions().items() if name == fmt)


def _open(fp: IO[bytes], allowed_formats: Iterable[str]) -> Image.Image:
    """``Image.open`` restricted to ``allowed_formats``, with errors turned into ImageError."""
    formats = [f.upper() for f in allowed_formats]
    if any(f not in Image.OPEN for f in formats):
        Image.init()  # registers every plugin; registering runs no decoder
    # A name Pillow has no plugin for ("HEIF" without pillow-heif, a typo) would make
    # Image.open raise KeyError; such formats simply cannot be opened here.
    usable = [f for f in formats if f in Image.OPEN]
    head = fp.read(_SNIFF_BYTES)
    if not head:
        raise ImageError("empty", "The file is empty.")
    fp.seek(0)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # formats= limits which plugins may even look at the bytes: no other decoder runs.
            return Image.open(fp, formats=usable)
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"The image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        # Tell "an image of a format we refuse" apart from "not an image at all" by magic
        # numbers only: handing the bytes to Pillow's other plugins is what we must not do.
        fmt = sniff_format(head)
        if fmt in usable:
            raise ImageError("corrupt", f"The {fmt} header cannot be read.") from exc
        if fmt in formats:
            raise ImageError(
                "unsupported_format",
                f"{fmt} is allowed but this Pillow installation has no plugin to read it.",
            ) from exc
        if fmt:
            raise ImageError(
                "unsupported_format",
                f"{fmt} files are not accepted; allowed formats: {', '.join(formats)}.",
            ) from exc
        raise ImageError("not_an_image", "The file is not an image of a supported format.") from exc
    except _PARSE_ERRORS as exc:
        raise ImageError("corrupt", f"The image header cannot be read: {exc}") from exc


def _frame_count(img: Image.Image) -> int:
    if img.format == "MPO":
        # The extra pictures of an MPO are never decoded: they cost nothing.
        return 1
    try:
        return max(1, int(getattr(img, "n_frames", 1) or 1))
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"The image has too many pixels: {exc}") from exc
    except _PARSE_ERRORS as exc:
        raise ImageError("corrupt", f"The animation cannot be read: {exc}") from exc


def _inspect(
    fp: IO[bytes], *, allowed_formats: Iterable[str], max_pixels: int, filename: str | None
) -> tuple[Image.Image, ImageInfo]:
    """Open the header and check it; the caller owns the returned (unloaded) image."""
    fp.seek(0)
    img = _open(fp, allowed_formats)
    fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError("corrupt", "The image has no pixels.")
    if width * height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"The image is {width}×{height} pixels; the limit is {max_pixels:,} pixels.",
        )
    frames = _frame_count(img)
    if width * height * frames > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"The animation has {frames} frames of {width}×{height} pixels; the limit is {max_pixels:,} pixels in all.",
        )
    if filename is not None:
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        ext = base.rsplit(".", 1)[-1].lower() if "." in base else ""
        extensions = _extensions_for(fmt)
        if ext not in extensions:
            raise ImageError(
                "extension_mismatch",
                f"The file is a {fmt} image but is named {base!r}; "
                f"use one of: {', '.join('.' + e for e in extensions)}.",
            )
    return img, ImageInfo(fmt, width, height, frames)


def inspect_image(
    fp: IO[bytes],
    *,
    allowed_formats: Iterable[str],
    max_pixels: int,
    filename: str | None = None,
) -> ImageInfo:
    """Validate an upload from its header alone (no full decode).

    Args:
        fp: a seekable binary stream; its position is restored to 0.
        allowed_formats: Pillow format names to accept; other decoders never run.
        max_pixels: budget for width × height × frames.
        filename: when given, its extension must match the detected format.

    Returns:
        The header's :class:`ImageInfo`.

    Raises:
        ImageError: with a code saying what is wrong.
    """
    try:
        return _inspect(fp, allowed_formats=allowed_formats, max_pixels=max_pixels, filename=filename)[1]
    finally:
        # Not img.close(): Pillow would close the caller's stream with it.
        fp.seek(0)


def _scale_to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float greyscale → uint8, scaling the range instead of clipping."""
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(arr.max()) if arr.size else 0.0
    if mode.startswith("I;16"):
        arr = arr / 257.0
    elif mode == "F" and hi <= 1.0:
        arr = arr * 255.0  # floats in 0..1
    elif hi <= 255.0:
        pass  # already 8-bit values
    elif hi <= 65535.0:
        arr = arr / 257.0  # 16-bit values stored as I or F (TIFF, old Pillow PNG)
    else:
        arr = arr * (255.0 / hi)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on BACKGROUND."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(_scale_to_8bit(np.asarray(img), mode), "L")
        mode = "L"
    if mode == "P" or (mode in ("1", "L", "RGB") and "transparency" in img.info):
        # Palette and colour-key transparency become an alpha channel, then white.
        try:
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        except (ValueError, TypeError):
            img = img.convert("RGB")  # a malformed transparency entry: ignore it
        mode = img.mode
    if mode == "La":
        img = img.convert("LA")
        mode = "LA"
    if mode in ("LA", "PA", "RGBa"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", img.size, BACKGROUND)
        background.paste(img, mask=img.getchannel("A"))
        return background
    if mode != "RGB":
        # CMYK (Pillow undoes Adobe's inversion when decoding), YCbCr, L, 1, LAB, HSV.
        img = img.convert("RGB")
    return img


def load_rgb(
    source: bytes | IO[bytes],
    *,
    allowed_formats: Iterable[str],
    max_pixels: int,
    min_size: int | None = None,
) -> Image.Image:
    """Decode an image to upright 8-bit RGB, safely.

    Args:
        source: the file's bytes or a binary stream.
        allowed_formats: Pillow format names; others are refused before any decoder runs.
        max_pixels: pixel budget (width × height × frames), checked from the header.
        min_size: when set, JPEGs are decoded with draft mode at the smallest scale whose shorter
            side is still at least this many pixels.

    Returns:
        An RGB :class:`PIL.Image.Image`, loaded.

    Raises:
        ImageError: ``truncated``, ``corrupt``, ``too_many_pixels``, ``not_an_image``, ...
    """
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        img, info = _inspect(fp, allowed_formats=allowed_formats, max_pixels=max_pixels, filename=None)
        if info.frames > 1 or img.format == "MPO":
            img.seek(0)
        if min_size and info.format == "JPEG":
            # The decoder scales by 1/2, 1/4 or 1/8 while decoding: far less work for big photos.
            img.draft("RGB", (min_size, min_size))
        _load_strict(img)
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception as exc:  # noqa: BLE001 - EXIF parsing fails in many ways
            # Corrupt EXIF: keep the pixels as stored rather than failing the image.
            logger.debug("Ignoring unreadable EXIF orientation: %s", exc)
        return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", str(exc)) from exc
    except _PARSE_ERRORS as exc:
        text = str(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise ImageError("truncated", f"The image file is truncated: {text}") from exc
        raise ImageError("corrupt", f"The image data cannot be decoded: {text}") from exc


def _load_strict(img: Image.Image) -> None:
    """Load pixels without Pillow's process-wide LOAD_TRUNCATED_IMAGES leniency."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set by another library; imgrec refuses to "
            "embed silently padded images."
        )
    img.load()


def resize_center_crop(img: Image.Image, *, resize_size: int, crop_size: int) -> np.ndarray:
    """Resize the shorter side to ``resize_size``, centre-crop ``crop_size`` square, as uint8 HWC.

    Only the part of the image that survives the crop is resampled, so a 1×100000 strip costs a
    ``crop_size``² output instead of a 256×25,600,000 intermediate.  The pixels are those of
    ``img.resize((nw, nh), BILINEAR, reducing_gap=3.0).crop(...)``, the recipe the stored vectors
    were made with, up to rounding.
    """
    if img.mode != "RGB":
        img = _to_rgb(img)
    w, h = img.size
    scale = resize_size / min(w, h)
    # The integer size the resize-then-crop recipe resizes to (it sets the sampling step)...
    nw, nh = max(crop_size, round(w * scale)), max(crop_size, round(h * scale))
    left, top = (nw - crop_size) // 2, (nh - crop_size) // 2
    # ...and its crop mapped back into source coordinates.
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + crop_size) * sx, (top + crop_size) * sy)
    # Pillow's reducing_gap first averages fx×fy blocks aligned on the image's origin; do the same
    # on just the blocks the crop needs (plus the filter's reach), so the blocks line up.
    fx = int(w / nw / _REDUCING_GAP) or 1
    fy = int(h / nh / _REDUCING_GAP) or 1
    if fx > 1 or fy > 1:
        mx, my = math.ceil(sx / fx) + 2, math.ceil(sy / fy) + 2
        x0 = max(0, (math.floor(box[0] / fx) - mx) * fx)
        y0 = max(0, (math.floor(box[1] / fy) - my) * fy)
        x1 = min(w, (math.ceil(box[2] / fx) + mx) * fx)
        y1 = min(h, (math.ceil(box[3] / fy) + my) * fy)
        img = img.reduce((fx, fy), box=(x0, y0, x1, y1))
        box = ((box[0] - x0) / fx, (box[1] - y0) / fy, (box[2] - x0) / fx, (box[3] - y0) / fy)
    img = img.resize((crop_size, crop_size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8)
