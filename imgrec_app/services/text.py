"""Product-text vectors: embed the configured text fields, store them like image vectors.

Enabled by ``IMGREC["TEXT_MODEL"]``.  A product save queues work only when the text changed (its
hash differs from the stored vector's ``source_hash``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_product_model, product_content_type, product_key
from imgrec_app.models import ProductVector

logger = logging.getLogger(__name__)


def text_model() -> tuple[str, int] | None:
    """``(model_id, dim)`` of the configured text model, or None when text is off."""
    name = imgrec_settings.TEXT_MODEL
    if not name:
        return None
    from imgrec_app.ml.text import TEXT_MODELS

    return TEXT_MODELS[name]


def product_text(product: Any) -> str:
    """The product's text as embedded: the configured fields joined, HTML-free enough."""
    parts = []
    for field in imgrec_settings.TEXT_FIELDS:
        value = getattr(product, field, "")
        if callable(value):
            value = value()
        if value:
            parts.append(str(value).strip())
    return "\n".join(parts)[:2000]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def needs_text_vector(product: Any) -> bool:
    model = text_model()
    if model is None:
        return False
    stored = (
        ProductVector.objects.filter(
            content_type=product_content_type(), object_id=product_key(product), model_id=model[0]
        )
        .values_list("source_hash", flat=True)
        .first()
    )
    return stored != text_hash(product_text(product))


def product_saved(product: Any) -> None:
    """Queue a text embedding after commit when the product's text changed."""
    if not needs_text_vector(product):
        return
    pk = product_key(product)
    transaction.on_commit(lambda: publish_text([pk]), robust=True)


def publish_text(product_ids: Sequence[str]) -> None:
    from imgrec_app.tasks import embed_texts

    try:
        embed_texts.apply_async(
            args=[list(product_ids)],
            queue=imgrec_settings.QUEUES["embed"],
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2},
        )
    except Exception as exc:
        logger.warning("imgrec could not queue text embeddings (%s); run imgrec_reindex --text", exc)


def embed_products(product_ids: Iterable[Any], *, batch_size: int = 64) -> int:
    """Embed the text of these products (skipping unchanged texts); returns vectors written."""
    model = text_model()
    if model is None:
        return 0
    model_id, dim = model
    from imgrec_app.ml.text import get_text_encoder
    from imgrec_app.services.vectors import ensure_hnsw_index

    product_model = get_product_model()
    ct = product_content_type()
    ids = [product_model._meta.pk.to_python(p) for p in product_ids]
    products = list(product_model._default_manager.filter(pk__in=ids))
    stored = dict(
        ProductVector.objects.filter(
            content_type=ct, model_id=model_id, object_id__in=[product_key(p) for p in products]
        ).values_list("object_id", "source_hash")
    )
    todo = []
    for p in products:
        text = product_text(p)
        h = text_hash(text)
        if text and stored.get(product_key(p)) != h:
            todo.append((product_key(p), text, h))
    if not todo:
        return 0
    encoder = get_text_encoder(imgrec_settings.TEXT_MODEL, device=imgrec_settings.DEVICE)
    vectors = encoder.encode([t for _, t, _ in todo], batch_size=batch_size)
    ensure_hnsw_index(model_id, dim)
    for (pk, _, h), vec in zip(todo, vectors):
        ProductVector.objects.update_or_create(
            content_type=ct,
            object_id=pk,
            model_id=model_id,
            defaults={"vector": vec.tolist(), "modality": "text", "source_hash": h, "source_count": 1},
        )
    return len(todo)


def missing_text_ids() -> list[str]:
    """Products with text but no (or an outdated) text vector."""
    model = text_model()
    if model is None:
        return []
    product_model = get_product_model()
    ct = product_content_type()
    stored = dict(
        ProductVector.objects.filter(content_type=ct, model_id=model[0]).values_list("object_id", "source_hash")
    )
    out = []
    for p in product_model._default_manager.all().iterator(chunk_size=1000):
        if stored.get(product_key(p)) != text_hash(product_text(p)):
            out.append(product_key(p))
    return out
