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
import warnings
from dataclasses import dataclass
from typing import IO, Any, Iterable

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

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


def _open(fp: IO[bytes], allowed_formats: Iterable[str]) -> Image.Image:
    formats = [f.upper() for f in allowed_formats]
    head = fp.read(16)
    if not head:
        raise ImageError("empty", "The file is empty.")
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is noise here: our own pixel budget is checked next.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp, formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"The image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        # Tell "an image of a format we refuse" apart from "not an image at all".
        fp.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Identify only; Image.open reads the header and nothing more.
                fmt = Image.open(fp).format
        except Exception:
            fmt = None
        if fmt:
            raise ImageError(
                "unsupported_format",
                f"{fmt} images are not accepted; allowed formats: {', '.join(formats)}.",
            ) from exc
        raise ImageError("not_an_image", "The file is not an image of a supported format.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt", f"The image header cannot be read: {exc}") from exc


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
    fp.seek(0)
    img = _open(fp, allowed_formats)
    try:
        fmt = img.format or ""
        width, height = img.size
        frames = int(getattr(img, "n_frames", 1) or 1)
        if width < 1 or height < 1:
            raise ImageError("corrupt", "The image has no pixels.")
        if width * height > max_pixels:
            raise ImageError(
                "too_many_pixels",
                f"The image is {width}×{height} pixels; the limit is {max_pixels:,} pixels.",
            )
        if width * height * frames > max_pixels:
            raise ImageError(
                "too_many_pixels",
                f"The animation has {frames} frames of {width}×{height} pixels; "
                f"the limit is {max_pixels:,} pixels in all.",
            )
        if filename is not None:
            ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
            if ext not in FORMAT_EXTENSIONS.get(fmt, ()):
                raise ImageError(
                    "extension_mismatch",
                    f"The file is a {fmt} image but is named {filename!r}; "
                    f"use one of: {', '.join('.' + e for e in FORMAT_EXTENSIONS.get(fmt, ()))}.",
                )
        return ImageInfo(fmt, width, height, frames)
    finally:
        # Not img.close(): Pillow would close the caller's stream with it.
        fp.seek(0)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on BACKGROUND."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit greyscale: scale the real range to 8 bits instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "I":
            hi = float(arr.max()) if arr.size else 0.0
            arr = arr / 257.0 if hi > 255 else arr
        else:  # "F": floats, assume 0..1 when they look like it
            hi = float(arr.max()) if arr.size else 0.0
            arr = arr * 255.0 if hi <= 1.0 else arr
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("LA", "PA", "La", "RGBa"):
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
    info = inspect_image(fp, allowed_formats=allowed_formats, max_pixels=max_pixels)
    img = _open(fp, allowed_formats)
    try:
        if min_size and info.format == "JPEG":
            # The decoder scales by 1/2, 1/4 or 1/8 while decoding: far less work for big photos.
            img.draft("RGB", (min_size, min_size))
        if info.frames > 1:
            img.seek(0)
        _load_strict(img)
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception:
            # Corrupt EXIF: keep the pixels as stored rather than failing the image.
            pass
        return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, IndexError, EOFError) as exc:
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
    """Resize the shorter side to ``resize_size``, centre-crop ``crop_size`` square, as uint8 HWC."""
    w, h = img.size
    scale = resize_size / min(w, h)
    nw, nh = max(crop_size, round(w * scale)), max(crop_size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (nw - crop_size) // 2, (nh - crop_size) // 2
    img = img.crop((left, top, left + crop_size, top + crop_size))
    return np.asarray(img, dtype=np.uint8)
