"""Image fields that validate with imgrec's rules instead of Django's open-anything check.

Django's ``forms.ImageField`` hands every upload to Pillow with all its plugins enabled (EPS, PSD,
...), and so does ``models.ImageField`` when it reads ``width``/``height`` for its dimension
fields.  ``ProductImageFormField`` validates from the header with an allow-list of formats first,
and ``ProductImageField`` reads dimensions the same way, so no decoder of a refused format runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from django import forms
from django.db import models
from django.db.models.fields.files import ImageFieldFile
from django.utils.translation import gettext_lazy as _

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.preprocess import ImageError, inspect_image
from imgrec_app.validators import validate_product_image


class ProductImageFormField(forms.FileField):
    """A file field that accepts only images passing :func:`validate_product_image`."""

    default_error_messages: ClassVar[dict[str, Any]] = {"invalid_image": _("Upload a valid image.")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.ClearableFileInput(attrs={"accept": "image/*"}))
        super().__init__(*args, **kwargs)

    def to_python(self, data: Any) -> Any:
        f = super().to_python(data)
        if f is None:
            return None
        info = validate_product_image(f)
        f.image_info = info  # type: ignore[attr-defined]  # read by the model field's pre_save
        f.content_type = f"image/{info.format.lower()}"  # type: ignore[attr-defined]
        return f


class ProductImageFieldFile(ImageFieldFile):
    """``ImageFieldFile`` whose ``width``/``height`` come from imgrec's allow-listed header read."""

    def _get_image_dimensions(self) -> tuple[int | None, int | None]:
        if not hasattr(self, "_dimensions_cache"):
            close = self.closed
            self.open()
            position = self.tell()
            try:
                # Dimensions only: the pixel budget is the validator's business, not this one's.
                info = inspect_image(
                    self.file,
                    allowed_formats=imgrec_settings.ALLOWED_FORMATS,
                    max_pixels=sys.maxsize,
                )
                dimensions: tuple[int | None, int | None] = (info.width, info.height)
            except ImageError:
                # Like Django's get_image_dimensions: not a readable image → no dimensions.
                dimensions = (None, None)
            finally:
                if close:
                    self.close()
                else:
                    self.seek(position)
            self._dimensions_cache = dimensions
        return self._dimensions_cache


# Filesystems limit a file name to 255 *bytes* (ext4, XFS, APFS...) while Django counts characters:
# 85 CJK characters are 255 bytes.  Names are cut well below, leaving room for the "_abc1234"
# Django's storage appends to a name that already exists.
MAX_NAME_BYTES = 200


def fit_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` with each path component cut to ``max_bytes`` UTF-8 bytes, keeping the extension.

    Cuts on character boundaries (never half a multi-byte character); an extension longer than
    the budget is cut too.
    """
    parts = name.replace("\\", "/").split("/")
    return "/".join(_fit_component(part, max_bytes) for part in parts)


def _fit_component(part: str, max_bytes: int) -> str:
    if len(part.encode("utf-8")) <= max_bytes:
        return part
    stem, dot, ext = part.rpartition(".")
    if not dot or not stem:
        stem, ext = part, ""
    suffix = f".{ext}" if ext else ""
    if len(suffix.encode("utf-8")) > max_bytes // 2:
        suffix = _cut(suffix, max_bytes // 2)
    return _cut(stem, max_bytes - len(suffix.encode("utf-8"))) + suffix


def _cut(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


class ProductImageField(models.ImageField):
    """``ImageField`` whose form field is :class:`ProductImageFormField`, whose dimensions are
    read from the header with imgrec's allow-list, and whose stored names fit the filesystem's
    byte limit (:func:`fit_filename`)."""

    attr_class = ProductImageFieldFile

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": ProductImageFormField, **kwargs})

    def generate_filename(self, instance: Any, filename: str | os.PathLike[str]) -> str:
        return fit_filename(super().generate_filename(instance, fit_filename(os.fspath(filename))))
