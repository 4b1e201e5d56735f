"""The sweeper: queue again images that wait for nothing, repair missing product vectors,
delete orphan uploads.  Part of :mod:`imgrec_app.services.indexing`, which re-exports it.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage, ProductVector
from imgrec_app.services.indexing_claims import dead_claims, give_up_on_lost
from imgrec_app.services.models import configured_model
from imgrec_app.services.vectors import refresh_product_vectors

logger = logging.getLogger(__name__)

Status = IndexedImage.Status


_GENERATED_NAME = re.compile(r"^[0-9a-f]{32}\.(jpg|jpeg|png|webp|gif|img)$")


def delete_orphan_files(*, older_than: timedelta | None = None) -> int:
    """Delete uploads that no :class:`ProductImage` refers to: the file a rolled-back transaction
    (or a process that died mid-request) wrote.  Django has no rollback hook, so the sweeper
    does this once the file is older than ``older_than`` (default: one hour, so an upload still
    in flight is never touched).  Only names imgrec generates in ``UPLOAD_TO`` are considered.

    Returns:
        How many files were deleted.
    """
    age = older_than if older_than is not None else timedelta(hours=1)
    storage = ProductImage._meta.get_field("image").storage
    folder = imgrec_settings.UPLOAD_TO.strip("/")
    try:
        _, files = storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        return 0
    names = [f"{folder}/{f}" for f in files if _GENERATED_NAME.match(f)]
    cutoff = timezone.now() - age
    deleted = 0
    for start in range(0, len(names), 1000):
        chunk = names[start : start + 1000]
        known = set(ProductImage.objects.filter(image__in=chunk).values_list("image", flat=True))
        known |= set(IndexedImage.objects.filter(file_name__in=chunk).values_list("file_name", flat=True))
        for name in chunk:
            if name in known:
                continue
            try:
                if storage.get_modified_time(name) >= cutoff:
                    continue
                storage.delete(name)
            except (OSError, NotImplementedError):
                continue
            deleted += 1
    if deleted:
        logger.info("imgrec deleted %s upload(s) that no product image refers to", deleted)
    return deleted


def products_missing_vectors(model_id: str, *, limit: int | None = None) -> list[tuple[int, str]]:
    """Products with a ``ready`` image embedded by ``model_id`` but no product vector of it.

    Results are written with their product vector in one transaction, so this should stay
    empty; the sweeper repairs whatever it finds (data written before that, or a product
    refresh after a move or delete that failed after its commit).
    """
    ii, ie, pv = IndexedImage._meta.db_table, ImageEmbedding._meta.db_table, ProductVector._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT DISTINCT i.content_type_id, i.object_id
              FROM {ii} i JOIN {ie} e ON e.image_id = i.id AND e.model_id = %s
             WHERE i.status = 'ready'
               AND NOT EXISTS (SELECT 1 FROM {pv} p
                                WHERE p.content_type_id = i.content_type_id
                                  AND p.object_id = i.object_id AND p.model_id = %s)
             ORDER BY 1, 2
            """
            + (" LIMIT %s" if limit else ""),
            [model_id, model_id] + ([limit] if limit else []),
        )
        return [(ct, obj) for ct, obj in cursor.fetchall()]


def _vector_models() -> list[str]:
    """The serving model, then the configured one (during a backfill they differ)."""
    from imgrec_app.services.models import serving_model

    serving = serving_model()
    ids = [serving.model_id] if serving else []
    configured = configured_model().model_id
    return ids + ([configured] if configured not in ids else [])


def missing_product_vector_count() -> int:
    """How many products lack a product vector of the serving (or configured) model although
    they have a ready image embedded by it (``imgrec_status`` shows it; the sweeper repairs)."""
    return sum(len(products_missing_vectors(m)) for m in _vector_models())


def reconcile_product_vectors(*, chunk_size: int = 500) -> int:
    """Write the missing product vectors :func:`products_missing_vectors` finds; returns how many."""
    fixed = 0
    for model_id in _vector_models():
        while True:
            pairs = products_missing_vectors(model_id, limit=chunk_size)
            if not pairs:
                break
            written = refresh_product_vectors(pairs, model_id)
            fixed += written
            if written < len(pairs):  # should not happen; never loop forever
                break
    if fixed:
        logger.warning("imgrec wrote %s missing product vector(s)", fixed)
    return fixed


def sweep_stuck(*, older_than: timedelta | None = None, publish_now: bool = True) -> dict[str, int]:
    """Queue again images that wait for nothing; give up on ones that kill workers.

    - a **dead claim** (rows left ``processing`` by a worker that died: nobody holds the claim's
      lock) is queued again at once, whatever its age, and stays ``processing`` so that the task
      takes it over one image at a time (issue 13 §3.1); images claimed ``MAX_ATTEMPTS`` times
      end ``failed: worker_lost``;
    - a pending image whose publish failed (broker down) is queued again once that is
      ``REPUBLISH_AFTER`` seconds old;
    - anything else pending or processing longer than ``older_than`` (default ``STUCK_AFTER``)
      is queued again (a lost message, a worker stuck alive).

    Also writes product vectors that are missing (:func:`reconcile_product_vectors`).

    Returns:
        Counts: ``requeued``, ``worker_lost``, ``dead_claims`` (part of ``requeued``) and
        ``reconciled`` (product vectors written).
    """
    now = timezone.now()
    age = older_than if older_than is not None else timedelta(seconds=imgrec_settings.STUCK_AFTER)
    cutoff = now - age
    republish_cutoff = now - timedelta(seconds=imgrec_settings.REPUBLISH_AFTER)
    max_attempts = imgrec_settings.MAX_ATTEMPTS
    lost = give_up_on_lost(dead_claims())
    dead = dead_claims()
    stuck_processing = Q(status=Status.PROCESSING, started_at__lt=cutoff)
    lost += (
        IndexedImage.objects.filter(stuck_processing, attempts__gte=max_attempts)
        .exclude(pk__in=dead)
        .update(
            status=Status.FAILED,
            failure_reason="worker_lost",
            failure_detail=f"The worker died while processing this image {max_attempts} times.",
        )
    )
    stuck = IndexedImage.objects.filter(
        stuck_processing
        | Q(status=Status.PENDING, queued_at__lt=cutoff)
        | Q(status=Status.PENDING, queued_at__isnull=True)
        | Q(status=Status.PENDING, publish_failed_at__lt=republish_cutoff)
    ).exclude(pk__in=dead)
    ids = list(stuck.values_list("pk", flat=True))
    IndexedImage.objects.filter(pk__in=ids).update(status=Status.PENDING, queued_at=now, publish_failed_at=None)
    if (ids or dead) and publish_now:
        from imgrec_app.services import indexing  # looked up there: one place to patch publish

        indexing.publish(sorted(dead) + ids)
    from imgrec_app.services.text import sweep_waiting

    return {
        "requeued": len(ids) + len(dead),
        "worker_lost": lost,
        "dead_claims": len(dead),
        "reconciled": reconcile_product_vectors(),
        "texts_requeued": sweep_waiting(older_than=age) if publish_now else 0,
    }
