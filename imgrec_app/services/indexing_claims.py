"""Claims on images being embedded: a conditional UPDATE plus a session-level advisory lock.

A task claims rows (``pending`` → ``processing`` under a random token) so that two deliveries
never both work on one image; the lock on the token tells a live claim from one whose worker
died (:func:`dead_claims`).  Part of :mod:`imgrec_app.services.indexing`, which re-exports it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from django.db import DatabaseError, connection, models, transaction
from django.db.models import F
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.models import IndexedImage

logger = logging.getLogger(__name__)

Status = IndexedImage.Status


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
