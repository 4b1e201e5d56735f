"""Tracking: record an IndexedImage for each saved source row and queue it when its file changed.

Part of :mod:`imgrec_app.services.indexing`, which re-exports these names.  Queueing goes through
``indexing.enqueue`` (looked up at call time: one place to patch for every publish).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from imgrec_app.hosts import ImageSource, sources_for_model
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage
from imgrec_app.services.models import configured_model
from imgrec_app.services.vectors import refresh_product_vectors

Status = IndexedImage.Status


def track_image(source: ImageSource, instance: models.Model) -> IndexedImage | None:
    """Record (or update) the IndexedImage for a saved source row; queue it when its file changed.

    Returns:
        The IndexedImage, or None when the row has no file (its IndexedImage is removed).
    """
    from django.contrib.contenttypes.models import ContentType

    from imgrec_app.hosts import get_product_model

    file = source.file_of(instance)
    product_id = source.product_id_of(instance)
    if not file or not getattr(file, "name", None) or product_id is None:
        untrack_image(source, instance.pk)
        return None
    if isinstance(instance, ProductImage):
        content_type_id = instance.content_type_id
        file_hash, is_primary = instance.file_hash, instance.is_primary
    else:
        content_type_id = ContentType.objects.get_for_model(get_product_model()).pk
        file_hash, is_primary = "", False
    model_id = configured_model().model_id
    now = timezone.now()
    with transaction.atomic():
        image, created = IndexedImage.objects.select_for_update().get_or_create(
            source=source.key,
            source_id=str(instance.pk),
            defaults=dict(
                content_type_id=content_type_id,
                object_id=product_id,
                file_name=file.name,
                file_hash=file_hash,
                width=getattr(instance, "width", None),
                height=getattr(instance, "height", None),
                is_primary=is_primary,
                status=Status.PENDING,
                model_id=model_id,
                queued_at=now,
            ),
        )
        if created:
            changed = True
        else:
            new_hash = bool(file_hash and image.file_hash and file_hash != image.file_hash)
            changed = image.file_name != file.name or new_hash
            moved = (image.content_type_id, image.object_id) != (content_type_id, product_id)
            image.content_type_id, image.object_id = content_type_id, product_id
            image.is_primary = is_primary
            if changed:
                image.revision = F("revision") + 1
                image.file_name, image.file_hash = file.name, file_hash
                image.width = getattr(instance, "width", None)
                image.height = getattr(instance, "height", None)
                image.status, image.model_id, image.queued_at = Status.PENDING, model_id, now
                image.failure_reason, image.failure_detail, image.attempts = "", "", 0
            image.save()
            image.refresh_from_db()
            if moved and not changed:
                transaction.on_commit(lambda: _refresh_products([image]), robust=True)
        if changed:
            from imgrec_app.services import indexing

            indexing.enqueue([image.pk])
    return image


def untrack_image(source: ImageSource, source_id: Any) -> None:
    """Forget an image whose source row was deleted (or lost its file); refresh its product."""
    images = list(IndexedImage.objects.filter(source=source.key, source_id=str(source_id)))
    if not images:
        return
    IndexedImage.objects.filter(pk__in=[i.pk for i in images]).delete()
    transaction.on_commit(lambda: _refresh_products(images), robust=True)


def _refresh_products(images: Iterable[IndexedImage]) -> None:
    pairs = {(i.content_type_id, i.object_id) for i in images}
    model_ids = set(
        ImageEmbedding.objects.filter(image__content_type_id__in={p[0] for p in pairs}).values_list(
            "model_id", flat=True
        )
    ) | {configured_model().model_id}
    for model_id in model_ids:
        refresh_product_vectors(pairs, model_id)


def forget_product(product: models.Model) -> None:
    """Remove everything imgrec holds about a deleted product (its images, vectors, history)."""
    from django.contrib.contenttypes.models import ContentType

    from imgrec_app.models import CategoryPrediction, CoView, Interaction, PendingText, ProductVector

    ct = ContentType.objects.get_for_model(product)
    key = str(product.pk)
    for image in ProductImage.objects.filter(content_type=ct, object_id=key):
        image.delete()  # its own post_delete untracks it
    for model in (IndexedImage, ProductVector, CategoryPrediction, Interaction, PendingText):
        model.objects.filter(content_type=ct, object_id=key).delete()
    CoView.objects.filter(content_type=ct, object_id=key).delete()
    CoView.objects.filter(content_type=ct, other_id=key).delete()


def track_instance(instance: models.Model) -> list[IndexedImage]:
    """Track every configured image source the instance's model provides."""
    tracked = []
    for source in sources_for_model(type(instance)):
        image = track_image(source, instance)
        if image is not None:
            tracked.append(image)
    return tracked
