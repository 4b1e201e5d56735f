"""How shelf items are shown: product name, URL and primary image, in a bounded number of queries.

Hosts override it with ``IMGREC["PRODUCT_SERIALIZER_HOOK"]``: a dotted path to
``callable(product, request) -> {"name": ..., "url": ..., "image_url": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.http import HttpRequest
from django.utils.module_loading import import_string

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_image_source, product_content_type
from imgrec_app.models import IndexedImage


def primary_image_urls(product_ids: Sequence[str]) -> dict[str, str]:
    """URL of each product's primary (else first) image: one query for the whole shelf."""
    if not product_ids:
        return {}
    rows = (
        IndexedImage.objects.filter(content_type=product_content_type(), object_id__in=list(product_ids))
        .order_by("object_id", "-is_primary", "pk")
        .values_list("object_id", "source", "file_name")
    )
    urls: dict[str, str] = {}
    storages: dict[str, Any] = {}
    for obj, source_key, name in rows:
        if obj in urls:
            continue
        storage = storages.get(source_key)
        if storage is None:
            try:
                source = get_image_source(source_key)
                storage = storages[source_key] = source.model._meta.get_field(source.field).storage  # type: ignore[union-attr]
            except LookupError:
                continue
        urls[obj] = storage.url(name)
    return urls


def describe(items: Sequence[Any], request: HttpRequest | None = None) -> list[dict[str, Any]]:
    """Name, URL and image URL for each recommendation (items must have ``.product``)."""
    hook = imgrec_settings.PRODUCT_SERIALIZER_HOOK
    if hook:
        func = import_string(hook)
        return [{**item.as_dict(), **func(item.product, request)} for item in items]
    images = primary_image_urls([i.product_id for i in items])
    out = []
    for item in items:
        product = item.product
        url = product.get_absolute_url() if hasattr(product, "get_absolute_url") else None
        image = images.get(item.product_id)
        if request is not None:
            url = request.build_absolute_uri(url) if url else None
            image = request.build_absolute_uri(image) if image else None
        out.append({**item.as_dict(), "name": str(product), "url": url, "image_url": image})
    return out
