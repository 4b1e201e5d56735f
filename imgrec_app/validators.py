"""Upload validation shared by the admin, the API and search-by-photo."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.preprocess import ImageError, ImageInfo, inspect_image


def validate_product_image(file: Any) -> ImageInfo:
    """Check an uploaded image from its header: size, allowed format, extension, pixels.

    Formats outside ``IMGREC["ALLOWED_FORMATS"]`` are refused before their decoders run.

    Args:
        file: a Django ``UploadedFile``, ``File`` or ``FieldFile`` (or a named binary stream).

    Returns:
        The header's :class:`~imgrec_app.ml.preprocess.ImageInfo`.

    Raises:
        ValidationError: with ``code`` set to the
            :class:`~imgrec_app.ml.preprocess.ImageError` code.
    """
    try:
        size = getattr(file, "size", None)
    except OSError as exc:  # a FieldFile whose stored file is gone
        raise ValidationError("The file cannot be read.", code="missing_file") from exc
    limit = imgrec_settings.MAX_UPLOAD_SIZE
    if size is not None and size > limit:
        raise ValidationError(f"The file is {size:,} bytes; the limit is {limit:,} bytes.", code="too_large")
    if size == 0:
        raise ValidationError("The file is empty.", code="empty")
    name = getattr(file, "name", None)
    try:
        if hasattr(file, "open") and getattr(file, "closed", False):
            file.open("rb")
        # Only after (re)opening: open() may replace the underlying stream.
        stream = getattr(file, "file", file)
        return inspect_image(
            stream,
            allowed_formats=imgrec_settings.ALLOWED_FORMATS,
            max_pixels=imgrec_settings.MAX_IMAGE_PIXELS,
            filename=str(name) if name else None,
        )
    except ImageError as exc:
        raise ValidationError(exc.message, code=exc.code) from exc
    except (FileNotFoundError, ValueError) as exc:
        # ValueError: "I/O operation on closed file" from a stream that cannot be reopened.
        raise ValidationError("The file cannot be read.", code="missing_file") from exc
