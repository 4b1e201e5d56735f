"""Indexing: track image files, queue them after commit, embed claimed batches, write results.

The life of an image: a source row is saved → :func:`track_image` records it as ``pending`` and
queues :func:`enqueue` after commit → a worker task calls :func:`process_images`, which claims
rows with a conditional UPDATE (so two deliveries never both work on one image), decodes the
files in threads while the model runs, and writes each vector only if the image's ``revision``
is still the one it read (a stale task never overwrites a newer file's vector).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import models, transaction
from django.db.models import Case, F, Func, IntegerField, Q, Value, When
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import ImageSource, get_image_source, sources_for_model
from imgrec_app.ml.preprocess import ImageError, load_rgb
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage
from imgrec_app.services.models import ModelRef, configured_model, sync_serving_model
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

    from imgrec_app.models import CategoryPrediction, CoView, Interaction, ProductVector

    ct = ContentType.objects.get_for_model(product)
    key = str(product.pk)
    for image in ProductImage.objects.filter(content_type=ct, object_id=key):
        image.delete()  # its own post_delete untracks it
    for model in (IndexedImage, ProductVector, CategoryPrediction, Interaction):
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
    from imgrec_app.tasks import embed_images

    size = chunk_size or imgrec_settings.TASK_BATCH_SIZE
    queue = imgrec_settings.QUEUES["embed"]
    sent = 0
    for start in range(0, len(image_ids), size):
        chunk = list(image_ids[start : start + size])
        try:
            embed_images.apply_async(
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
            break
    return sent


# --- processing -------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What one :func:`process_images` call did."""

    claimed: int = 0
    ready: int = 0
    reused: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

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


def claim(image_ids: Sequence[int], *, model_id: str, extra: int = 0, reclaim: bool = False) -> list[IndexedImage]:
    """Atomically mark images ``processing`` and return them; rows others hold are skipped.

    Args:
        image_ids: the images a task was given.
        model_id: the model that will embed them.
        extra: also claim up to this many other pending images (greedy batching).
        reclaim: take rows already ``processing`` too (a retried or redelivered task).
    """
    now = timezone.now()
    statuses = [Status.PENDING] + ([Status.PROCESSING] if reclaim else [])
    # Images claimed together share ``started_at``.  A row taken back from a delivery that died
    # keeps that stamp, so :func:`with_batch_mates` still finds the rest of its batch after
    # another death (a poison image redelivered again and again).
    stamp = Case(When(status=Status.PROCESSING, started_at__isnull=False, then=F("started_at")), default=Value(now))
    with transaction.atomic():
        ids = list(
            IndexedImage.objects.select_for_update(skip_locked=True)
            .filter(pk__in=list(image_ids), status__in=statuses)
            .values_list("pk", flat=True)
        )
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
            started_at=stamp if reclaim else Value(now),
            model_id=model_id,
            attempts=F("attempts") + 1,
        )
    return list(IndexedImage.objects.filter(pk__in=ids).order_by("pk"))


def with_batch_mates(image_ids: Sequence[int]) -> list[int]:
    """These images plus the unfinished ones claimed in the same batch (greedy batching puts
    images of other tasks in a batch; if the worker died or the batch must be retried, only this
    task comes back, and it must take them back too — or they would wait for the sweeper)."""
    ids = list(image_ids)
    stamps = set(IndexedImage.objects.filter(pk__in=ids, started_at__isnull=False).values_list("started_at", flat=True))
    if not stamps:
        return ids
    mates = IndexedImage.objects.filter(started_at__in=stamps, status__in=[Status.PENDING, Status.PROCESSING]).exclude(
        pk__in=ids
    )
    return ids + sorted(mates.values_list("pk", flat=True))


def give_up_on_lost(image_ids: Sequence[int]) -> int:
    """Mark ``failed: worker_lost`` the images whose processing killed the worker
    ``MAX_ATTEMPTS`` times (they are still ``processing`` when their task is redelivered)."""
    max_attempts = imgrec_settings.MAX_ATTEMPTS
    lost = IndexedImage.objects.filter(
        pk__in=list(image_ids), status=Status.PROCESSING, attempts__gte=max_attempts
    ).update(
        status=Status.FAILED,
        failure_reason="worker_lost",
        failure_detail=f"The worker died while processing this image {max_attempts} times.",
    )
    if lost:
        logger.warning("imgrec gave up on %s image(s) that killed the worker %s times", lost, max_attempts)
    return lost


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
            min_size=encoder.spec.resize_size,
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
    ensure_hnsw_index(ref.model_id, ref.dim)
    batch = max(1, int(imgrec_settings.BATCH_SIZE))
    workers = max(1, int(imgrec_settings.DECODE_WORKERS))
    touched: set[tuple[int, str]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgrec-decode") as pool:
        # Decoding runs ahead in the pool while the model works on the previous batch.
        futures: list[Future[_Work]] = [pool.submit(_prepare, _Work(image), encoder) for image in images]
        for start in range(0, len(futures), batch):
            works = [f.result() for f in futures[start : start + batch]]
            _encode_and_write(works, encoder, ref, summary)
            touched |= {(w.image.content_type_id, w.image.object_id) for w in works}
    refresh_product_vectors(touched, ref.model_id)
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


def _encode_and_write(works: list[_Work], encoder: Any, ref: ModelRef, summary: BatchSummary) -> None:
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
    for work in works:
        image = work.image
        if work.error is not None:
            _finish_failed(image, work.error.code, work.error.message, summary)
            continue
        if work.reuse is not None:
            vec, labels = np.asarray(work.reuse.vector, dtype=np.float32), work.reuse.labels
        elif image.pk in errors:
            _finish_failed(image, errors[image.pk].code, errors[image.pk].message, summary)
            continue
        else:
            vec, labels = vectors[image.pk]
        problem = vector_problem(vec, ref.dim)
        if problem:
            _finish_failed(image, "bad_vector", problem, summary)
            continue
        if _finish_ready(image, vec, labels, work.file_hash, ref.model_id):
            summary.ready += 1
            summary.reused += work.reuse is not None
        else:
            summary.skipped += 1


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


def _finish_ready(image: IndexedImage, vec: np.ndarray, labels: list, file_hash: str, model_id: str) -> bool:
    """Store a vector if the image still has the revision this task read; True if stored."""
    with transaction.atomic():
        current = (
            IndexedImage.objects.select_for_update()
            .filter(pk=image.pk, revision=image.revision, status=Status.PROCESSING)
            .first()
        )
        if current is None:
            return False  # deleted, replaced or re-queued meanwhile: this result is stale
        ImageEmbedding.objects.update_or_create(
            image=current,
            model_id=model_id,
            defaults={"vector": vec.tolist(), "file_hash": file_hash, "labels": labels},
        )
        IndexedImage.objects.filter(pk=image.pk).update(
            status=Status.READY,
            file_hash=file_hash,
            indexed_at=timezone.now(),
            failure_reason="",
            failure_detail="",
        )
    return True


def _finish_failed(image: IndexedImage, code: str, detail: str, summary: BatchSummary) -> None:
    updated = IndexedImage.objects.filter(pk=image.pk, revision=image.revision, status=Status.PROCESSING).update(
        status=Status.FAILED, failure_reason=code, failure_detail=detail[:2000]
    )
    if updated:
        summary.failed[code] = summary.failed.get(code, 0) + 1
        logger.info("imgrec image %s failed: %s (%s)", image.pk, code, detail)


def release(image_ids: Sequence[int]) -> int:
    """Put claimed images back to ``pending`` (a transient failure before their results)."""
    return IndexedImage.objects.filter(pk__in=list(image_ids), status=Status.PROCESSING).update(
        status=Status.PENDING, queued_at=timezone.now()
    )


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


def sweep_stuck(*, older_than: timedelta | None = None, publish_now: bool = True) -> dict[str, int]:
    """Queue again images stuck in pending/processing; give up on ones that kill workers.

    Returns:
        Counts: ``requeued`` and ``worker_lost``.
    """
    age = older_than if older_than is not None else timedelta(seconds=imgrec_settings.STUCK_AFTER)
    cutoff = timezone.now() - age
    max_attempts = imgrec_settings.MAX_ATTEMPTS
    stuck_processing = Q(status=Status.PROCESSING, started_at__lt=cutoff)
    lost = IndexedImage.objects.filter(stuck_processing, attempts__gte=max_attempts).update(
        status=Status.FAILED,
        failure_reason="worker_lost",
        failure_detail=f"The worker died while processing this image {max_attempts} times.",
    )
    stuck = IndexedImage.objects.filter(
        stuck_processing
        | Q(status=Status.PENDING, queued_at__lt=cutoff)
        | Q(status=Status.PENDING, queued_at__isnull=True)
    )
    ids = list(stuck.values_list("pk", flat=True))
    IndexedImage.objects.filter(pk__in=ids).update(status=Status.PENDING, queued_at=timezone.now())
    if ids and publish_now:
        publish(ids)
    return {"requeued": len(ids), "worker_lost": lost}
