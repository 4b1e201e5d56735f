"""Product-text vectors: embed the configured text fields, store them like image vectors.

Enabled by ``IMGREC["TEXT_MODEL"]``.  A product save queues work only when the text changed (its
hash differs from the stored vector's ``source_hash``): it records the product as waiting
(:class:`~imgrec_app.models.PendingText`, in the save's transaction) and publishes a task after
commit.  Tasks batch greedily, like image tasks: one task claims its own products *and* up to
``TASK_BATCH_SIZE`` other waiting ones (``FOR UPDATE SKIP LOCKED``) and embeds them in one
forward pass; the tasks of the products it took find nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_product_model, product_content_type, product_key
from imgrec_app.models import PendingText, ProductVector
from imgrec_app.services import learned

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
    """Record the product as waiting and queue a text embedding after commit when its text changed."""
    if not needs_text_vector(product):
        return
    pk = product_key(product)
    mark_waiting([pk])
    transaction.on_commit(lambda: publish_text([pk]), robust=True)


def mark_waiting(product_ids: Iterable[str]) -> None:
    """Record products whose text vector is to be (re)made (kept until a task embeds them)."""
    ct = product_content_type()
    PendingText.objects.bulk_create(
        [PendingText(content_type=ct, object_id=str(p)) for p in product_ids], ignore_conflicts=True
    )


def text_queue() -> str:
    """The queue of text tasks: ``QUEUES["text"]``, else ``QUEUES["embed"]``."""
    queues = imgrec_settings.QUEUES
    return queues.get("text") or queues["embed"]


def publish_text(product_ids: Sequence[str]) -> bool:
    """Send one text task for these products; on a broker outage they stay waiting and the
    sweeper publishes them again (``REPUBLISH_AFTER``).  Returns whether it was sent."""
    from celery import current_app  # by task name: services never import tasks

    try:
        current_app.send_task(
            "imgrec.embed_texts",
            args=[list(product_ids)],
            queue=text_queue(),
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2},
        )
        return True
    except Exception as exc:
        logger.warning("imgrec could not queue text embeddings (%s); the sweeper queues them again", exc)
        try:
            PendingText.objects.filter(
                content_type=product_content_type(), object_id__in=[str(p) for p in product_ids]
            ).update(publish_failed_at=timezone.now())
        except DatabaseError:
            pass
        return False


def embed_waiting(product_ids: Iterable[Any], *, limit: int | None = None) -> int:
    """Embed these products' texts plus other waiting ones, up to ``limit`` (default
    ``TASK_BATCH_SIZE``) in all: greedy batching, so a backlog of saves costs a few forward
    passes instead of one task per product.  The claimed waiting rows are deleted in the same
    transaction as the vectors are written (a worker that dies leaves them waiting).

    Returns:
        The number of text vectors written.
    """
    if text_model() is None:
        return 0
    limit = limit or imgrec_settings.TASK_BATCH_SIZE
    own = [str(p) for p in product_ids]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT id, object_id FROM {PendingText._meta.db_table}
                 WHERE content_type_id = %s
                 ORDER BY (object_id = ANY(%s)) DESC, queued_at, id
                 LIMIT %s
                   FOR UPDATE SKIP LOCKED
                """,
                [product_content_type().pk, own, max(limit, len(own))],
            )
            claimed = cursor.fetchall()
        ids = list(dict.fromkeys([obj for _, obj in claimed] + own))
        written = embed_products(ids)
        PendingText.objects.filter(pk__in=[pk for pk, _ in claimed]).delete()
    return written


def sweep_waiting(*, older_than: timedelta) -> int:
    """Publish again products waiting longer than ``older_than`` (a lost message) or whose
    publish failed ``REPUBLISH_AFTER`` seconds ago; returns how many."""
    if text_model() is None:
        return 0
    now = timezone.now()
    from django.db.models import Q

    waiting = PendingText.objects.filter(
        Q(queued_at__lt=now - older_than)
        | Q(publish_failed_at__lt=now - timedelta(seconds=imgrec_settings.REPUBLISH_AFTER))
    )
    ids = list(waiting.order_by("queued_at", "pk").values_list("object_id", flat=True))
    if not ids:
        return 0
    PendingText.objects.filter(object_id__in=ids).update(queued_at=now, publish_failed_at=None)
    size = imgrec_settings.TASK_BATCH_SIZE
    for start in range(0, len(ids), size):
        if not publish_text(ids[start : start + size]):
            break
    return len(ids)


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
    # The active run's learned vectors are made from these texts: follow them.
    learned.refresh([(ct.pk, pk) for pk, _, _ in todo])
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
