"""Upload validation shared by the admin, the API and search-by-photo."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.preprocess import ImageError, ImageInfo, inspect_image


def validate_product_image(file: Any) -> ImageInfo:
    """Check an uploaded image from its header: size, allowed format, extension, pixels.

    Formats outside ``IMGREC["ALLOWED_FORMATS"]`` are refused before their decoders run.

    Raises:
        ValidationError: with ``code`` set to the :class:`~imgrec_app.ml.preprocess.ImageError` code.
    """
    size = getattr(file, "size", None)
    limit = imgrec_settings.MAX_UPLOAD_SIZE
    if size is not None and size > limit:
        raise ValidationError(
            f"The file is {size:,} bytes; the limit is {limit:,} bytes.", code="too_large"
        )
    if size == 0:
        raise ValidationError("The file is empty.", code="empty")
    stream = getattr(file, "file", file)
    name = getattr(file, "name", None)
    try:
        if hasattr(file, "open") and getattr(file, "closed", False):
            file.open("rb")
        return inspect_image(
            stream,
            allowed_formats=imgrec_settings.ALLOWED_FORMATS,
            max_pixels=imgrec_settings.MAX_IMAGE_PIXELS,
            filename=name.rsplit("/", 1)[-1] if name else None,
        )
    except ImageError as exc:
        raise ValidationError(exc.message, code=exc.code) from exc
