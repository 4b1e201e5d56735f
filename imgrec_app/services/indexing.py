"""Indexing: track image files, queue them after commit, embed claimed batches, write results.

The life of an image: a source row is saved → :func:`track_image` records it as ``pending`` and
queues :func:`enqueue` after commit → a worker task calls :func:`process_images`, which claims
rows with a conditional UPDATE (so two deliveries never both work on one image), decodes the
files in threads while the model runs, and writes each vector only if the image's ``revision``
is still the one it read (a stale task never overwrites a newer file's vector).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, Func, IntegerField, Q
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import ImageSource, get_image_source, sources_for_model
from imgrec_app.ml.preprocess import ImageError, load_rgb
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage, ProductVector
from imgrec_app.services.models import ModelRef, configured_model, sync_serving_model
from imgrec_app.services.tuning import extra_vectors
from imgrec_app.services.vectors import ensure_hnsw_index, refresh_product_vectors

logger = logging.getLogger(__name__)

Status = IndexedImage.Status


# --- tracking -------------------------------------------------------------------------------


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
            enqueue([image.pk])
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


# --- queueing ---------------------------------------------------------------------------------


def enqueue(image_ids: Sequence[int], *, chunk_size: int | None = None) -> None:
    """Queue images for embedding once the current transaction commits.

    A broker outage never fails the caller's request: the publish is tried briefly, the images
    stay ``pending``, and the sweeper queues them again later.
    """
    ids = list(image_ids)
    if not ids:
        return
    transaction.on_commit(lambda: publish(ids, chunk_size=chunk_size), robust=True)


def publish(image_ids: Sequence[int], *, chunk_size: int | None = None) -> int:
    """Send embedding tasks now, in chunks; returns how many tasks were sent."""
    from celery import current_app  # by task name: services never import tasks

    size = chunk_size or imgrec_settings.TASK_BATCH_SIZE
    queue = imgrec_settings.QUEUES["embed"]
    sent = 0
    for start in range(0, len(image_ids), size):
        chunk = list(image_ids[start : start + size])
        try:
            current_app.send_task(
                "imgrec.embed_images",
                args=[chunk],
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
            )
            sent += 1
        except Exception as exc:  # the broker is down: the sweeper will queue them again
            logger.warning(
                "imgrec could not queue %s image(s) (%s); they stay pending for the sweeper",
                len(image_ids) - start,
                exc,
            )
            _mark_unpublished(list(image_ids[start:]))
            break
    return sent


def _mark_unpublished(image_ids: list[int]) -> None:
    """Remember that these pending images were never queued: the sweeper publishes them again
    after ``REPUBLISH_AFTER`` seconds instead of ``STUCK_AFTER``."""
    try:
        IndexedImage.objects.filter(pk__in=image_ids, status=Status.PENDING).update(publish_failed_at=timezone.now())
    except DatabaseError:
        logger.warning("imgrec could not mark %s image(s) unpublished", len(image_ids), exc_info=True)


# --- processing -------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What one :func:`process_images` call did."""

    claimed: int = 0
    ready: int = 0
    reused: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def add(self, other: BatchSummary) -> BatchSummary:
        self.claimed += other.claimed
        self.ready += other.ready
        self.reused += other.reused
        self.skipped += other.skipped
        for code, n in other.failed.items():
            self.failed[code] = self.failed.get(code, 0) + n
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "ready": self.ready,
            "reused": self.reused,
            "failed": dict(self.failed),
            "skipped": self.skipped,
        }


@dataclass
class _Work:
    image: IndexedImage
    data: np.ndarray | None = None
    file_hash: str = ""
    error: ImageError | None = None
    reuse: ImageEmbedding | None = None


# A claim is live while its worker holds a session-level advisory lock on its token.  When the
# worker process dies (SIGKILL, OOM, lost machine), its connection closes and Postgres drops the
# lock: rows still ``processing`` under a token nobody holds belong to a dead claim.
_HELD_TOKENS = (
    "SELECT (l.classid::bigint << 32) | l.objid::bigint FROM pg_locks l"
    " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _dead_claim_sql() -> str:
    table = IndexedImage._meta.db_table
    return (
        f'("{table}"."status" = \'processing\' AND "{table}"."claim_token" IS NOT NULL'
        f' AND "{table}"."claim_token" NOT IN ({_HELD_TOKENS}))'
    )


def _lock_token(token: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [token])


def _unlock_token(token: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [token])
    except DatabaseError:
        pass  # the connection is gone, and the lock with it


def dead_claims(*, limit: int | None = None) -> list[int]:
    """Images still ``processing`` whose worker died (nobody holds their claim's lock)."""
    qs = IndexedImage.objects.filter(status=Status.PROCESSING).extra(where=[_dead_claim_sql()]).order_by("pk")
    ids = qs.values_list("pk", flat=True)
    return list(ids[:limit] if limit else ids)


def claim(image_ids: Sequence[int], *, model_id: str, extra: int = 0, reclaim: bool = False) -> list[IndexedImage]:
    """Atomically mark images ``processing`` under a new claim and return them; rows other
    deliveries hold are skipped (``SKIP LOCKED`` while they claim, the status afterwards).

    The caller's connection holds a session-level advisory lock on the claim's token until
    :func:`release_claim` or :func:`end_claim`: that is how a dead worker's claim is told from a
    live one (:func:`dead_claims`).

    Args:
        image_ids: the images a task was given.
        model_id: the model that will embed them.
        extra: also claim up to this many other pending images (greedy batching).
        reclaim: also take rows of *dead* claims (a retried or redelivered task, or a task
            recovering what a killed worker left); live claims are never taken over.
    """
    token = secrets.randbits(62) + 1
    _lock_token(token)  # before any row carries the token: a claim is never seen dead while alive
    try:
        with transaction.atomic():
            own: models.QuerySet[IndexedImage] = IndexedImage.objects.select_for_update(skip_locked=True).filter(
                pk__in=list(image_ids)
            )
            if reclaim:
                table = IndexedImage._meta.db_table
                own = own.extra(where=[f'("{table}"."status" = \'pending\' OR {_dead_claim_sql()})'])
            else:
                own = own.filter(status=Status.PENDING)
            ids = list(own.values_list("pk", flat=True))
            if extra > 0:
                ids += list(
                    IndexedImage.objects.select_for_update(skip_locked=True)
                    .filter(status=Status.PENDING, attempts=0)
                    .exclude(pk__in=ids)
                    .order_by("queued_at", "pk")
                    .values_list("pk", flat=True)[:extra]
                )
            IndexedImage.objects.filter(pk__in=ids).update(
                status=Status.PROCESSING,
                started_at=timezone.now(),
                claim_token=token,
                publish_failed_at=None,
                model_id=model_id,
                attempts=F("attempts") + 1,
            )
    except BaseException:
        _unlock_token(token)
        raise
    if not ids:
        _unlock_token(token)
        return []
    return list(IndexedImage.objects.filter(pk__in=ids).order_by("pk"))


def release_claim(token: int) -> int:
    """Put a claim's unfinished images back to ``pending`` after a transient error (database,
    broker); the attempt does not count against ``MAX_ATTEMPTS``.  Returns how many."""
    try:
        return IndexedImage.objects.filter(claim_token=token, status=Status.PROCESSING).update(
            status=Status.PENDING, queued_at=timezone.now(), attempts=F("attempts") - 1
        )
    except DatabaseError:
        return 0  # the database is down: the claim is dead now, the next task takes it over


def end_claim(token: int) -> None:
    """Drop the claim's lock.  Rows it left ``processing`` (a crash) are then a dead claim."""
    _unlock_token(token)


def give_up_on_lost(image_ids: Sequence[int]) -> int:
    """Mark ``failed: worker_lost`` the images of dead claims that were claimed ``MAX_ATTEMPTS``
    times (the worker died each time: a poison image must not kill workers forever)."""
    max_attempts = imgrec_settings.MAX_ATTEMPTS
    lost = (
        IndexedImage.objects.filter(pk__in=list(image_ids), attempts__gte=max_attempts)
        .extra(where=[_dead_claim_sql()])
        .update(
            status=Status.FAILED,
            failure_reason="worker_lost",
            failure_detail=f"The worker died while processing this image {max_attempts} times.",
        )
    )
    if lost:
        logger.warning("imgrec gave up on %s image(s) that killed the worker %s times", lost, max_attempts)
    return lost


def recover_dead_claims(*, limit: int | None = None) -> BatchSummary:
    """Take over what killed workers left ``processing``, one image at a time (so a poison image
    only takes itself down); images that already killed ``MAX_ATTEMPTS`` workers end
    ``failed: worker_lost``.  Every embedding task does this first, so a killed worker's batch
    — claimed under any task's name — is redone by the next task (issue 13 §3.1)."""
    total = BatchSummary()
    ids = dead_claims(limit=limit)
    if not ids:
        return total
    give_up_on_lost(ids)
    for image_id in ids:
        total.add(process_images([image_id], reclaim=True, greedy=False))
    return total


class VectorSizeMismatch(RuntimeError):
    """The backbone makes vectors of another size than those stored under its model id."""


_size_checked: set[tuple[str, int]] = set()


def check_vector_size(ref: ModelRef) -> None:
    """Refuse to embed when stored vectors of ``ref.model_id`` have another size (check E021).

    Raises:
        VectorSizeMismatch: naming both sizes and the fix; nothing is claimed or written.
    """
    if (ref.model_id, ref.dim) in _size_checked:
        return
    stored = (
        ImageEmbedding.objects.filter(model_id=ref.model_id)
        .annotate(dims=Func(F("vector"), function="vector_dims", output_field=IntegerField()))
        .values_list("dims", flat=True)
        .first()
    )
    if stored is not None and stored != ref.dim:
        raise VectorSizeMismatch(
            f"Stored vectors of {ref.model_id} have {stored} dimensions but the backbone makes "
            f"{ref.dim}: images stay pending. The backbone changed without a new model id; give "
            "BACKBONE_OPTIONS a new 'weights_version' or restore the previous backbone "
            "(check imgrec_app.E021)."
        )
    _size_checked.add((ref.model_id, ref.dim))


def _storage_for(image: IndexedImage):
    source = get_image_source(image.source)
    return source.model._meta.get_field(source.field).storage  # type: ignore[union-attr]


def _prepare(work: _Work, encoder: Any) -> _Work:
    """Read, hash, decode and preprocess one image (runs in a decode thread, no database)."""
    try:
        try:
            with _storage_for(work.image).open(work.image.file_name, "rb") as fh:
                raw = fh.read()
        except (FileNotFoundError, OSError) as exc:
            raise ImageError("missing_file", f"The file cannot be read: {exc}") from exc
        work.file_hash = hashlib.sha256(raw).hexdigest()
        img = load_rgb(
            raw,
            allowed_formats=imgrec_settings.ALLOWED_FORMATS,
            max_pixels=imgrec_settings.MAX_IMAGE_PIXELS,
            min_size=encoder.decode_size,
        )
        work.data = encoder.preprocess(img)
    except ImageError as exc:
        work.error = exc
    except Exception as exc:  # any decoder bug is this image's problem, not the batch's
        logger.exception("Unexpected error decoding image %s", work.image.pk)
        work.error = ImageError("corrupt", f"{type(exc).__name__}: {exc}")
    return work


def process_images(image_ids: Sequence[int], *, reclaim: bool = False, greedy: bool = True) -> BatchSummary:
    """Embed a batch of images with the configured backbone and store the results.

    Args:
        image_ids: IndexedImage ids to process (rows no longer pending are skipped quietly).
        reclaim: also take rows already marked processing (retries, redeliveries).
        greedy: fill the batch with other pending images.

    Returns:
        A :class:`BatchSummary`.

    Raises:
        WeightsNotFound: the model cannot be loaded; nothing was claimed.
        VectorSizeMismatch: the backbone's size differs from the stored vectors'; nothing was claimed.
    """
    ref = configured_model()
    encoder = load_encoder(ref)  # before claiming: a broken model must not fail images
    check_vector_size(ref)
    limit = imgrec_settings.TASK_BATCH_SIZE
    extra = max(0, limit - len(image_ids)) if greedy else 0
    images = claim(image_ids, model_id=ref.model_id, extra=extra, reclaim=reclaim)
    summary = BatchSummary(claimed=len(images), skipped=max(0, len(set(image_ids)) - len(images)))
    if not images:
        return summary
    token = images[0].claim_token
    assert token is not None  # claim() stamps every row it returns with its token
    try:
        ensure_hnsw_index(ref.model_id, ref.dim)
        batch = max(1, int(imgrec_settings.BATCH_SIZE))
        workers = max(1, int(imgrec_settings.DECODE_WORKERS))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgrec-decode") as pool:
            # Decoding runs ahead in the pool while the model works on the previous batch.
            futures: list[Future[_Work]] = [pool.submit(_prepare, _Work(image), encoder) for image in images]
            for start in range(0, len(futures), batch):
                works = [f.result() for f in futures[start : start + batch]]
                _encode_and_write(works, encoder, ref, summary, token)
    except DatabaseError:
        release_claim(token)  # transient: back to pending for the task's retry
        raise
    finally:
        end_claim(token)  # anything else left processing is a dead claim, recovered at once
    sync_serving_model()
    return summary


def load_encoder(ref: ModelRef) -> Any:
    from imgrec_app.ml.encoder import get_encoder

    return get_encoder(
        ref.name,
        options=dict(ref.options),
        device=imgrec_settings.DEVICE,
        amp=imgrec_settings.CUDA_AMP,
        threads=imgrec_settings.TORCH_THREADS,
        top_labels=imgrec_settings.TOP_LABELS,
    )


@dataclass
class _Result:
    """What one image's work produced, before it is written."""

    image: IndexedImage
    status: str
    vector: np.ndarray | None = None
    labels: list = field(default_factory=list)
    file_hash: str = ""
    reason: str = ""
    detail: str = ""
    reused: bool = False
    # Vectors of other model versions made from ``vector`` (the active tuned head), by model id.
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def _encode_and_write(
    works: list[_Work], encoder: Any, ref: ModelRef, summary: BatchSummary, token: int | None
) -> None:
    """Embed one sub-batch and write its results (see :func:`write_results`)."""
    results = _encode(works, encoder, ref)
    ready = [(r, r.vector) for r in results if r.status == Status.READY and r.vector is not None]
    if ready:
        # Other model versions made from these vectors (the active tuned head, services/tuning.py),
        # written in the same transaction as the base vectors.
        for model_id, vecs in extra_vectors(ref, np.stack([vec for _, vec in ready])).items():
            for (r, _), v in zip(ready, vecs):
                r.extras[model_id] = v
    written = {r.image.pk for r in write_results(results, ref.model_id, token=token)}
    for r in results:
        if r.image.pk not in written:
            summary.skipped += r.status == Status.READY
        elif r.status == Status.READY:
            summary.ready += 1
            summary.reused += r.reused
        else:
            summary.failed[r.reason] = summary.failed.get(r.reason, 0) + 1
            logger.info("imgrec image %s failed: %s (%s)", r.image.pk, r.reason, r.detail)


def _encode(works: list[_Work], encoder: Any, ref: ModelRef) -> list[_Result]:
    # The same file (same hash) already embedded by this model: reuse its vector.
    known = {
        e.file_hash: e
        for e in ImageEmbedding.objects.filter(
            model_id=ref.model_id, file_hash__in={w.file_hash for w in works if w.file_hash}
        ).only("file_hash", "vector", "labels")
    }
    for work in works:
        if work.error is None and work.file_hash in known:
            work.reuse = known[work.file_hash]
    todo = [w for w in works if w.error is None and w.reuse is None]
    vectors: dict[int, tuple[np.ndarray, list]] = {}
    errors: dict[int, ImageError] = {}
    if todo:
        result = encoder.encode_arrays(np.stack([w.data for w in todo]))  # type: ignore[misc]  # decoded: data set
        for row, work in enumerate(todo):
            if row in result.errors:
                errors[work.image.pk] = ImageError(result.errors[row], "The model could not embed it.")
            else:
                vectors[work.image.pk] = (result.vectors[row], result.labels[row])
    results = []
    for work in works:
        image = work.image
        error = work.error or errors.get(image.pk)
        if error is not None:
            results.append(_Result(image, Status.FAILED, reason=error.code, detail=error.message))
            continue
        if work.reuse is not None:
            vec, labels = np.asarray(work.reuse.vector, dtype=np.float32), work.reuse.labels
        else:
            vec, labels = vectors[image.pk]
        problem = vector_problem(vec, ref.dim)
        if problem:
            results.append(_Result(image, Status.FAILED, reason="bad_vector", detail=problem))
            continue
        results.append(
            _Result(image, Status.READY, vec, list(labels or []), work.file_hash, reused=work.reuse is not None)
        )
    return results


def _vector_text(vec: np.ndarray) -> str:
    return "[" + ",".join(map(str, np.asarray(vec, dtype=np.float32).tolist())) + "]"


def _stored_vector(result: _Result, model_id: str, base_model_id: str) -> np.ndarray:
    """The vector of ``model_id`` a ready result writes (its base vector or a derived one)."""
    vec = result.vector if model_id == base_model_id else result.extras.get(model_id)
    if vec is None:  # never: a result is ready only with its vectors (fails the transaction)
        raise ValueError(f"Image {result.image.pk} is ready without a {model_id} vector.")
    return vec


def write_results(results: Sequence[_Result], model_id: str, *, token: int | None = None) -> list[_Result]:
    """Write a sub-batch's results in ONE transaction: the statuses (one ``UPDATE … FROM
    (VALUES …)`` that only matches rows still ``processing`` at the revision this task read),
    the vectors of the rows it matched (one ``INSERT … ON CONFLICT``) and their products'
    vectors and labels.  An image is never ``ready`` without its product's vector (issue 13 §1):
    if anything here fails, nothing of the sub-batch is written and the images stay claimed.
    With ``token``, only rows still held by that claim are written (a claim taken over after
    its worker was thought dead never writes over the new one's results).

    Returns:
        The results that were written (stale ones — image deleted, replaced or re-queued
        meanwhile — are dropped).
    """
    if not results:
        return []
    ii, ie = IndexedImage._meta.db_table, ImageEmbedding._meta.db_table
    rows: list[str] = []
    params: list[Any] = []
    for r in results:
        rows.append("(%s::bigint, %s::integer, %s::varchar, %s::varchar, %s::varchar, %s::text)")
        params += [r.image.pk, r.image.revision, r.status, r.file_hash, r.reason[:40], r.detail[:2000]]
    by_pk = {r.image.pk: r for r in results}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {ii} AS i
               SET status = v.status,
                   file_hash = CASE WHEN v.status = 'ready' THEN v.file_hash ELSE i.file_hash END,
                   indexed_at = CASE WHEN v.status = 'ready' THEN now() ELSE i.indexed_at END,
                   failure_reason = v.reason, failure_detail = v.detail, updated_at = now()
              FROM (VALUES {", ".join(rows)}) AS v(id, revision, status, file_hash, reason, detail)
             WHERE i.id = v.id AND i.revision = v.revision AND i.status = 'processing'
               AND (%s::bigint IS NULL OR i.claim_token = %s::bigint)
            RETURNING i.id, i.content_type_id, i.object_id
            """,
            params + [token, token],
        )
        matched = cursor.fetchall()
        ready = [(pk, ct, obj) for pk, ct, obj in matched if by_pk[pk].status == Status.READY]
        if ready:
            extra_ids = sorted({mid for pk, _, _ in ready for mid in by_pk[pk].extras})
            for mid in [model_id, *extra_ids]:
                have = [(pk, ct, obj) for pk, ct, obj in ready if mid == model_id or mid in by_pk[pk].extras]
                vecs = [_stored_vector(by_pk[pk], mid, model_id) for pk, _, _ in have]
                cursor.execute(
                    f"""
                    INSERT INTO {ie} (image_id, model_id, vector, file_hash, labels, created_at)
                    SELECT t.id, %s, t.vec::vector, t.hash, t.labels::jsonb, now()
                      FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS t(id, vec, hash, labels)
                    ON CONFLICT (image_id, model_id) DO UPDATE
                       SET vector = EXCLUDED.vector, file_hash = EXCLUDED.file_hash, labels = EXCLUDED.labels
                    """,
                    [
                        mid,
                        [pk for pk, _, _ in have],
                        [_vector_text(v) for v in vecs],
                        [by_pk[pk].file_hash for pk, _, _ in have],
                        [json.dumps(by_pk[pk].labels) for pk, _, _ in have],
                    ],
                )
                # The products' vectors (and labels) in the same transaction.
                refresh_product_vectors({(ct, obj) for _, ct, obj in have}, mid)
    return [by_pk[pk] for pk, _, _ in matched]


def vector_problem(vec: np.ndarray, dim: int) -> str:
    """Why a vector cannot be stored ("" when it can): wrong size, not finite, or zero."""
    if vec.shape != (dim,):
        return f"The model returned a vector of shape {vec.shape}; its backbone declares {dim} dimensions."
    if not np.all(np.isfinite(vec)):
        return "The model returned a non-finite vector (NaN or Inf)."
    norm = float(np.linalg.norm(vec))
    if not (math.isfinite(norm) and norm > 1e-6):
        return "The model returned a zero vector."
    return ""


def is_usable_vector(vec: np.ndarray, dim: int) -> bool:
    """A vector is stored only if it has the model's size, is finite and is not zero."""
    return not vector_problem(vec, dim)


# --- sweeping -------------------------------------------------------------------------------


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
        publish(sorted(dead) + ids)
    from imgrec_app.services.text import sweep_waiting

    return {
        "requeued": len(ids) + len(dead),
        "worker_lost": lost,
        "dead_claims": len(dead),
        "reconciled": reconcile_product_vectors(),
        "texts_requeued": sweep_waiting(older_than=age) if publish_now else 0,
    }
