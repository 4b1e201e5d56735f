"""Indexing: queue images after commit, embed claimed batches, write results.

The life of an image: a source row is saved → :func:`track_image` records it as ``pending`` and
queues :func:`enqueue` after commit → a worker task calls :func:`process_images`, which claims
rows with a conditional UPDATE (so two deliveries never both work on one image), decodes the
files in threads while the model runs, and writes each vector only if the image's ``revision``
is still the one it read (a stale task never overwrites a newer file's vector).

The parts live beside this module and are re-exported here: tracking
(:mod:`~imgrec_app.services.indexing_tracking`), claims
(:mod:`~imgrec_app.services.indexing_claims`) and the sweeper
(:mod:`~imgrec_app.services.indexing_sweeper`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Func, IntegerField
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_image_source
from imgrec_app.ml.preprocess import ImageError, load_rgb
from imgrec_app.ml.tensor_decode import Payload, prepare_payload
from imgrec_app.models import ImageEmbedding, IndexedImage
from imgrec_app.services.indexing_claims import (
    claim,
    dead_claims,
    end_claim,
    give_up_on_lost,
    release_claim,
)
from imgrec_app.services.indexing_sweeper import (
    delete_orphan_files,
    missing_product_vector_count,
    products_missing_vectors,
    reconcile_product_vectors,
    sweep_stuck,
)
from imgrec_app.services.indexing_tracking import forget_product, track_image, track_instance, untrack_image
from imgrec_app.services.models import ModelRef, configured_model, sync_serving_model
from imgrec_app.services.tuning import extra_vectors
from imgrec_app.services.vectors import ensure_hnsw_index, refresh_product_vectors

__all__ = [
    "BatchSummary",
    "VectorSizeMismatch",
    "check_vector_size",
    "claim",
    "dead_claims",
    "delete_orphan_files",
    "end_claim",
    "enqueue",
    "forget_product",
    "give_up_on_lost",
    "is_usable_vector",
    "load_encoder",
    "missing_product_vector_count",
    "process_images",
    "products_missing_vectors",
    "publish",
    "reconcile_product_vectors",
    "recover_dead_claims",
    "refresh_product_vectors",
    "release_claim",
    "sweep_stuck",
    "track_image",
    "track_instance",
    "untrack_image",
    "vector_problem",
    "write_results",
]

logger = logging.getLogger(__name__)

Status = IndexedImage.Status


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
    data: np.ndarray | Payload | None = None  # Payload with the torchvision decoder
    file_hash: str = ""
    error: ImageError | None = None
    reuse: ImageEmbedding | None = None


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
        if encoder.decoder == "torchvision":  # header checks here, the decode on the device later
            work.data = prepare_payload(
                raw, allowed_formats=imgrec_settings.ALLOWED_FORMATS, max_pixels=imgrec_settings.MAX_IMAGE_PIXELS
            )
            return work
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
        if encoder.decoder == "torchvision":
            result = encoder.encode_payloads([w.data for w in todo])
        else:
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
