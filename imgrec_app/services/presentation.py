"""How shelf items are shown: product name, URL and primary image, in a bounded number of queries.

Hosts override it with ``IMGREC["PRODUCT_SERIALIZER_HOOK"]``: a dotted path to
``callable(product, request) -> {"name": ..., "url": ..., "image_url": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest
from django.utils.module_loading import import_string

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_image_source, product_content_type
from imgrec_app.models import IndexedImage


def with_primary_image(qs: QuerySet) -> QuerySet:
    """Products annotated with their primary (else first) image as ``_imgrec_image``
    (``"<source>\\n<file name>"`` or None), so :func:`describe` needs no query of its own.

    Raw SQL on the product table's own name: compiling two ORM subqueries cost more than the
    whole cached shelf's SQL (bench/similar_peer.py).
    """
    model = qs.model
    ii = IndexedImage._meta.db_table
    outer = f"{connection.ops.quote_name(model._meta.db_table)}.{connection.ops.quote_name(model._meta.pk.column)}"
    return qs.annotate(
        _imgrec_image=RawSQL(
            f"SELECT source || E'\\n' || file_name FROM {ii} WHERE content_type_id = %s "
            f"AND object_id = ({outer})::text ORDER BY is_primary DESC, id LIMIT 1",
            [product_content_type().pk],
        )
    )


def _annotated_image_urls(items: Sequence[Any]) -> dict[str, str] | None:
    """Image URLs from :func:`with_primary_image` annotations, or None when an item lacks them."""
    storages: dict[str, Any] = {}
    urls: dict[str, str] = {}
    for item in items:
        product = item.product
        if not hasattr(product, "_imgrec_image"):
            return None
        if product._imgrec_image:
            source_key, name = product._imgrec_image.split("\n", 1)
            url = _url(source_key, name, storages)
            if url is not None:
                urls[item.product_id] = url
    return urls


def _url(source_key: str, name: str, storages: dict[str, Any]) -> str | None:
    storage = storages.get(source_key)
    if storage is None:
        try:
            source = get_image_source(source_key)
        except LookupError:
            return None
        storage = storages[source_key] = source.storage
    return storage.url(name)


def image_urls(items: Sequence[Any]) -> dict[str, str]:
    """Primary image URL per item: from the products' annotations, else one query."""
    urls = _annotated_image_urls(items)
    return urls if urls is not None else primary_image_urls([i.product_id for i in items])


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
        url = _url(source_key, name, storages)
        if url is not None:
            urls[obj] = url
    return urls


def describe(items: Sequence[Any], request: HttpRequest | None = None) -> list[dict[str, Any]]:
    """Name, URL and image URL for each recommendation (items must have ``.product``)."""
    hook = imgrec_settings.PRODUCT_SERIALIZER_HOOK
    if hook:
        func = import_string(hook)
        return [{**item.as_dict(), **func(item.product, request)} for item in items]
    images = image_urls(items)
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
