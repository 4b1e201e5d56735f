"""Re-indexing and status: pick images by scope, queue them in chunks (or run them in-process),
report progress of a run and the state of the whole index."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import image_sources, product_key
from imgrec_app.models import ImageEmbedding, IndexedImage, ReindexRun
from imgrec_app.services import broker, indexing, learned
from imgrec_app.services.models import configured_model, serving_model

logger = logging.getLogger(__name__)

Status = IndexedImage.Status
SCOPES = ("all", "missing", "stale", "failed")


def discover_untracked(*, chunk_size: int = 500, progress: Callable[[int], None] | None = None) -> int:
    """Track rows of every image source that imgrec has not seen (images that existed before
    imgrec was installed).  Returns how many were added; nothing is uploaded again."""
    added = 0
    for source in image_sources():
        model = source.model
        known = IndexedImage.objects.filter(source=source.key).values_list("source_id", flat=True)
        known_ids = set(known)
        qs = model._default_manager.exclude(**{source.field: ""}).exclude(**{f"{source.field}__isnull": True})
        for instance in qs.iterator(chunk_size=chunk_size):
            if str(instance.pk) in known_ids:
                continue
            with transaction.atomic():
                if indexing.track_image(source, instance) is not None:
                    added += 1
            if progress:
                progress(1)
    return added


def select_images(scope: str, *, product_ids: Iterable[Any] | None = None) -> QuerySet:
    """The images a re-index of ``scope`` covers, optionally limited to some products."""
    if scope not in SCOPES:
        raise ValueError(f"Unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    model_id = configured_model().model_id
    qs = IndexedImage.objects.all()
    if product_ids is not None:
        qs = qs.filter(object_id__in=[product_key(p) for p in product_ids])
    has_current = Exists(ImageEmbedding.objects.filter(image=OuterRef("pk"), model_id=model_id))
    has_any = Exists(ImageEmbedding.objects.filter(image=OuterRef("pk")))
    if scope == "missing":
        qs = qs.exclude(status=Status.FAILED).filter(~has_current)
    elif scope == "stale":
        qs = qs.filter(has_any).filter(~has_current)
    elif scope == "failed":
        qs = qs.filter(status=Status.FAILED)
    return qs.order_by("pk")


@dataclass(frozen=True)
class RunStart:
    """A started (or already running) re-index."""

    run: ReindexRun
    created: bool


def start_run(
    scope: str,
    *,
    product_ids: Iterable[Any] | None = None,
    user: Any = None,
    discover: bool = True,
) -> RunStart:
    """Mark the scope's images pending under a new :class:`ReindexRun`.

    A second request for the same scope while a run is still going returns that run instead of
    queueing everything twice (a double click in the admin creates no duplicate work).
    """
    if discover and scope in ("all", "missing"):
        discover_untracked()
    model_id = configured_model().model_id
    with transaction.atomic():
        # Two clicks at the same instant would both find no active run (FOR UPDATE cannot lock a
        # row that does not exist yet) and both start one: serialise run starts per scope+model.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"imgrec-reindex:{scope}:{model_id}"])
        active = (
            ReindexRun.objects.select_for_update()
            .filter(scope=scope, model_id=model_id, finished_at__isnull=True)
            .first()
        )
        if active is not None and product_ids is None and run_progress(active).remaining:
            return RunStart(active, False)
        ids = list(select_images(scope, product_ids=product_ids).values_list("pk", flat=True))
        run = ReindexRun.objects.create(
            scope=scope,
            model_id=model_id,
            total=len(ids),
            requested_by=user if getattr(user, "is_authenticated", False) else None,
        )
        now = timezone.now()
        for start in range(0, len(ids), 5000):
            IndexedImage.objects.filter(pk__in=ids[start : start + 5000]).update(
                status=Status.PENDING,
                queued_at=now,
                attempts=0,
                failure_reason="",
                failure_detail="",
                run=run,
            )
    return RunStart(run, True)


def start_and_queue(scope: str, *, product_ids: Iterable[Any] | None = None, user: Any = None) -> RunStart:
    """Start a run (admin, API) and hand its queueing to a light task, so the request returns
    at once.  If the broker is down the images stay pending and the sweeper queues them."""
    from celery import current_app  # by task name: services never import tasks

    started = start_run(scope, product_ids=product_ids, user=user)
    if started.created:
        try:
            current_app.send_task(
                "imgrec.start_reindex",
                args=[started.run.pk],
                queue=imgrec_settings.QUEUES["light"],
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.2},
            )
        except Exception as exc:
            logger.warning("imgrec could not queue re-index run %s (%s)", started.run.pk, exc)
    return started


def publish_run(run_id: int, *, chunk_size: int | None = None) -> int:
    """Queue a run's pending images in chunks; returns the number of tasks sent."""
    ids = list(
        IndexedImage.objects.filter(run_id=run_id, status=Status.PENDING).order_by("pk").values_list("pk", flat=True)
    )
    return indexing.publish(ids, chunk_size=chunk_size)


def run_sync(
    run: ReindexRun, *, chunk_size: int | None = None, progress: Callable[[int], None] | None = None
) -> indexing.BatchSummary:
    """Process a run's images in this process (``imgrec_reindex --sync``)."""
    size = chunk_size or imgrec_settings.TASK_BATCH_SIZE
    ids = list(IndexedImage.objects.filter(run=run, status=Status.PENDING).order_by("pk").values_list("pk", flat=True))
    total = indexing.BatchSummary()
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        summary = indexing.process_images(chunk, greedy=False)
        total.claimed += summary.claimed
        total.ready += summary.ready
        total.reused += summary.reused
        total.skipped += summary.skipped
        for code, n in summary.failed.items():
            total.failed[code] = total.failed.get(code, 0) + n
        if progress:
            progress(len(chunk))
    return total


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: counts, rate (images/s) and estimated seconds left."""

    run_id: int
    scope: str
    total: int
    ready: int
    failed: int
    remaining: int
    elapsed: float
    rate: float
    eta: float | None
    finished: bool

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def run_progress(run: ReindexRun) -> RunProgress:
    counts = IndexedImage.objects.filter(run=run).status_counts()
    ready, failed = counts.get(Status.READY, 0), counts.get(Status.FAILED, 0)
    remaining = counts.get(Status.PENDING, 0) + counts.get(Status.PROCESSING, 0)
    end = run.finished_at or timezone.now()
    elapsed = max((end - run.created_at).total_seconds(), 1e-3)
    rate = (ready + failed) / elapsed
    if remaining == 0 and run.finished_at is None:
        run.finished_at = timezone.now()
        ReindexRun.objects.filter(pk=run.pk, finished_at__isnull=True).update(finished_at=run.finished_at)
    return RunProgress(
        run_id=run.pk,
        scope=run.scope,
        total=run.total,
        ready=ready,
        failed=failed,
        remaining=remaining,
        elapsed=round(elapsed, 1),
        rate=round(rate, 2),
        eta=round(remaining / rate, 1) if rate > 0 and remaining else (0.0 if not remaining else None),
        finished=remaining == 0,
    )


def index_status() -> dict[str, Any]:
    """Counts by status and model, failures by reason, queue depth (when the broker answers)."""
    ref = configured_model()
    serving = serving_model()
    by_model = dict(ImageEmbedding.objects.values_list("model_id").annotate(n=Count("pk")).order_by())
    failures = dict(
        IndexedImage.objects.filter(status=Status.FAILED)
        .values_list("failure_reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {
        "configured_model": ref.model_id,
        "serving_model": serving.model_id if serving else None,
        "images": IndexedImage.objects.status_counts(),
        "embeddings_by_model": by_model,
        "failures_by_reason": failures,
        "broker": broker.broker_state(),
        "queue_depth": queue_depth(),
        "backfill_remaining": None if serving and serving.model_id == ref.model_id else _remaining(ref.model_id),
    }


def _remaining(model_id: str) -> int:
    from imgrec_app.services.models import backfill_remaining

    return backfill_remaining(model_id)


def queue_depth() -> dict[str, int | None]:
    """Messages waiting in imgrec's queues (Redis brokers), None where it cannot be read; empty
    when the host configured no broker (Celery's default ``amqp://localhost`` is not asked)."""
    from celery import current_app
    from kombu.exceptions import ChannelError

    depths: dict[str, int | None] = {}
    if not broker.broker_configured():
        return depths
    for name in imgrec_settings.QUEUES.values():
        try:
            with current_app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
                _, count, _ = conn.default_channel.queue_declare(queue=name, passive=True)
                depths[name] = int(count)
        except ChannelError:
            depths[name] = 0  # Redis keeps no key for an empty queue
        except Exception:
            depths[name] = None
    return depths


def prune_vectors(*, keep: Sequence[str] | None = None) -> dict[str, int]:
    """Delete vectors of models other than the configured and serving ones (or ``keep``)."""
    from imgrec_app.models import ProductVector

    keep_ids = set(keep or ())
    keep_ids.add(configured_model().model_id)
    serving = serving_model()
    if serving:
        keep_ids.add(serving.model_id)
    images, _ = ImageEmbedding.objects.exclude(model_id__in=keep_ids).delete()
    products, _ = ProductVector.objects.filter(modality="image").exclude(model_id__in=keep_ids).delete()
    # Learned (image + text) vectors go with their tuned model (services/learned.py).
    learned_ids = {f"{m}{learned.SUFFIX}" for m in keep_ids}
    joint, _ = ProductVector.objects.filter(modality="learned").exclude(model_id__in=learned_ids).delete()
    return {"image_vectors": images, "product_vectors": products + joint}
