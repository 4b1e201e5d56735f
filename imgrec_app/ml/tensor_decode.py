"""The ``torchvision`` decoder: JPEG batches decoded on the model's device, resized there.

With ``DECODER = "torchvision"`` a decode thread only reads the file's header (format allow-list,
pixel budget, EXIF orientation, a complete JPEG) and keeps the bytes; the worker's main thread then
decodes the sub-batch's JPEGs in ONE ``torchvision.io.decode_jpeg(list, device=...)`` call — nvjpeg
on CUDA, libjpeg-turbo on CPU — and resizes/crops each picture with torch on that device.  Anything
that call cannot take (PNG, WebP, CMYK or EXIF-rotated JPEGs, a JPEG it fails on) is decoded by
Pillow (``load_rgb``, full size) and resized by the same torch code, so every image of a model id
goes through one resize recipe.  Its pixels differ slightly from the Pillow recipe's (no draft-mode
DCT scaling, torch's antialiased bilinear instead of Pillow's): the model id carries the tag "tv".

No Django; torch is imported inside the functions.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgrec_app.ml.preprocess import ImageError, _inspect, load_rgb

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
# Pillow modes of JPEGs that decode_jpeg(mode=RGB) turns into the same RGB as load_rgb does.
_DEVICE_MODES = ("RGB", "L")


@dataclass
class Payload:
    """One image on its way to the device: the JPEG bytes to decode there, or Pillow's pixels."""

    jpeg: bytes | None = None
    pixels: np.ndarray | None = None  # uint8 HWC, full size (Pillow decoded it)


def _complete_jpeg(raw: bytes) -> bool:
    # A JPEG ends with the EOI marker (some writers pad after it).  libjpeg only warns about a cut
    # file and fills in grey; Pillow's strict load reports it as ``truncated``, so cut files go there.
    return raw.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


def prepare_payload(raw: bytes, *, allowed_formats: Iterable[str], max_pixels: int) -> Payload:
    """Validate one file from its header and choose who decodes it (runs in a decode thread).

    Raises:
        ImageError: the same codes as :func:`~imgrec_app.ml.preprocess.load_rgb`.
    """
    fp = io.BytesIO(raw)
    img, info = _inspect(fp, allowed_formats=allowed_formats, max_pixels=max_pixels, filename=None)
    device_ok = info.format == "JPEG" and img.format == "JPEG" and img.mode in _DEVICE_MODES
    if device_ok:
        try:
            device_ok = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1) == 1
        except Exception:  # noqa: BLE001 - unreadable EXIF: Pillow's path decides what to do with it
            device_ok = False
    if device_ok and _complete_jpeg(raw):
        return Payload(jpeg=raw)
    # A writable copy: torch.from_numpy refuses read-only arrays without a warning.
    return Payload(pixels=np.array(load_rgb(raw, allowed_formats=allowed_formats, max_pixels=max_pixels)))


def resize_center_crop_tensor(img: Any, *, resize_size: int, crop_size: int) -> Any:
    """A ``[3, H, W]`` uint8 tensor → its shorter side resized to ``resize_size`` (bilinear,
    antialiased, on the tensor's device), centre-cropped to ``[3, crop_size, crop_size]`` uint8."""
    from torchvision.transforms.v2 import functional as F

    h, w = int(img.shape[-2]), int(img.shape[-1])
    scale = resize_size / min(w, h)
    nw, nh = max(crop_size, round(w * scale)), max(crop_size, round(h * scale))
    out = F.resize(img, [nh, nw], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(out, [crop_size, crop_size])


def _decode_jpegs(jpegs: Sequence[bytes], device: Any) -> list[Any | None]:
    """Decode JPEG bytes on ``device`` in one batched call; None for each one that fails alone."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not jpegs:
        return []
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 flags its decoders deprecated
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            # One bad file fails the whole call (no partial results): decode one by one to find it.
            out: list[Any | None] = []
            for one in data:
                try:
                    out.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as exc:
                    logger.info("torchvision could not decode a JPEG (%s); Pillow decodes it", exc)
                    out.append(None)
            return out


def device_batch(
    payloads: Sequence[Payload],
    *,
    resize_size: int,
    crop_size: int,
    device: Any,
    allowed_formats: Iterable[str] = ("JPEG",),
    max_pixels: int = 1 << 62,
) -> tuple[Any, dict[int, str]]:
    """Decode and frame a sub-batch on ``device``.

    Returns:
        ``(pixels, errors)``: a uint8 ``[M, crop, crop, 3]`` tensor on ``device`` for the rows not
        in ``errors`` (in order), and ``errors`` mapping a row to an ImageError code.
    """
    import torch

    jpeg_rows = [i for i, p in enumerate(payloads) if p.jpeg is not None]
    decoded = dict(zip(jpeg_rows, _decode_jpegs([payloads[i].jpeg for i in jpeg_rows], device)))  # type: ignore[misc]
    pinned = device.type == "cuda"
    frames, errors = [], {}
    for row, payload in enumerate(payloads):
        img = decoded.get(row)
        pixels = payload.pixels
        if img is None and pixels is None:
            try:  # torchvision refused it: Pillow decodes it (or names what is wrong with it)
                pixels = np.array(load_rgb(payload.jpeg or b"", allowed_formats=allowed_formats, max_pixels=max_pixels))
            except ImageError as exc:
                errors[row] = exc.code
                continue
        if img is None:
            cpu = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
            img = (cpu.pin_memory() if pinned else cpu).to(device, non_blocking=pinned)
        frames.append(resize_center_crop_tensor(img, resize_size=resize_size, crop_size=crop_size))
    if not frames:
        return torch.zeros((0, crop_size, crop_size, 3), dtype=torch.uint8, device=device), errors
    return torch.stack(frames).permute(0, 2, 3, 1), errors
