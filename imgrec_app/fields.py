"""Image fields that validate with imgrec's rules instead of Django's open-anything check.

Django's ``forms.ImageField`` hands every upload to Pillow with all its plugins enabled (EPS, PSD,
...).  ``ProductImageFormField`` validates from the header with an allow-list of formats first,
so no decoder of a refused format ever runs.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models

from imgrec_app.validators import validate_product_image


class ProductImageFormField(forms.FileField):
    """A file field that accepts only images passing :func:`validate_product_image`."""

    default_error_messages = {"invalid_image": "Upload a valid image."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.ClearableFileInput(attrs={"accept": "image/*"}))
        super().__init__(*args, **kwargs)

    def to_python(self, data: Any) -> Any:
        f = super().to_python(data)
        if f is None:
            return None
        info = validate_product_image(f)
        f.image_info = info
        f.content_type = f"image/{info.format.lower()}"
        return f


class ProductImageField(models.ImageField):
    """``ImageField`` whose form field is :class:`ProductImageFormField`."""

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": ProductImageFormField, **kwargs})
