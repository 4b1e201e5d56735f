"""Celery tasks: thin wrappers that take ids, call one service, and own the retry policy.

Routing: tasks are sent to ``IMGREC["QUEUES"]["embed"]`` (model work: run GPU or CPU workers on
it) and ``IMGREC["QUEUES"]["light"]`` (bookkeeping).  Embedding tasks acknowledge late and are
re-queued if the worker process dies, so a SIGKILL loses nothing.  Every embedding task first
takes over the *dead claims* — images a killed worker left ``processing``, whichever task had
claimed them (see ``indexing.claim``) — one image at a time, so that a poison image only takes
itself down (it ends ``failed: worker_lost`` after ``MAX_ATTEMPTS``); nothing waits for the
redelivered message at the back of the queue or for the sweeper.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.registry import PrecisionUnsupported, WeightsNotFound

logger = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError

        errors.append(KombuOperationalError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError

        errors.append(RedisConnectionError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


TRANSIENT_ERRORS = _transient_errors()


def _redelivered(request: Any) -> bool:
    info = getattr(request, "delivery_info", None) or {}
    headers = getattr(request, "headers", None) or {}
    return bool(info.get("redelivered") or headers.get("redelivered"))


@shared_task(
    bind=True,
    name="imgrec.embed_images",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def embed_images(self: Any, image_ids: list[int]) -> dict[str, Any]:
    """Embed the given IndexedImage ids (plus other waiting ones, up to the batch size)."""
    from imgrec_app.services import indexing

    redelivered = _redelivered(self.request)
    reclaim = redelivered or self.request.retries > 0
    try:
        # First what killed workers left processing (their batch, under any task's claim),
        # one image at a time; then this task's own images, filled up with waiting ones.
        total = indexing.recover_dead_claims(limit=imgrec_settings.TASK_BATCH_SIZE)
        return total.add(indexing.process_images(image_ids, reclaim=reclaim)).as_dict()
    except (WeightsNotFound, PrecisionUnsupported, indexing.VectorSizeMismatch) as exc:
        # Nothing was claimed: the images stay pending and the sweeper re-queues them once the
        # model is fixed.  Retrying now would only burn through the queue.
        logger.error("imgrec cannot embed with its configured model, images stay pending: %s", exc)
        raise
    except TRANSIENT_ERRORS as exc:
        # process_images put its claim back to pending (or, with the database down, left a dead
        # claim that the retry takes over).
        countdown = min(300, 5 * 2**self.request.retries)
        logger.warning("imgrec batch hit a transient error (%s); retrying in %ss", exc, countdown)
        raise self.retry(exc=exc, countdown=countdown, max_retries=imgrec_settings.TASK_MAX_RETRIES) from exc


@shared_task(bind=True, name="imgrec.embed_texts", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def embed_texts(self: Any, product_ids: list[str]) -> int:
    """Embed the text of these products plus other waiting ones (unchanged texts are skipped)."""
    from imgrec_app.services import text

    try:
        return text.embed_waiting(product_ids)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(
            exc=exc, countdown=min(300, 5 * 2**self.request.retries), max_retries=imgrec_settings.TASK_MAX_RETRIES
        ) from exc


@shared_task(name="imgrec.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Periodic: re-queue stuck images, switch serving models whose backfill completed and
    (at most hourly) delete uploads left by rolled-back transactions."""
    from django.core.cache import cache

    from imgrec_app.services import indexing, tuning
    from imgrec_app.services.models import sync_serving_model

    result = indexing.sweep_stuck()
    result["tuned_backfilled"] = tuning.backfill_active()
    sync_serving_model()
    if cache.add("imgrec:orphan-files-swept", True, timeout=3600):
        result["orphan_files"] = indexing.delete_orphan_files()
    return result


@shared_task(name="imgrec.start_reindex", ignore_result=True)
def start_reindex(run_id: int) -> int:
    """Queue the images of a re-index run (started from the admin or the API) in chunks."""
    from imgrec_app.services import reindex

    return reindex.publish_run(run_id)


@shared_task(name="imgrec.refresh_coviews", ignore_result=True)
def refresh_coviews() -> int:
    """Periodic: rebuild the "viewed together" pairs from recent browsing history."""
    from imgrec_app.services.recommend import refresh_coviews as rebuild

    return rebuild()


@shared_task(name="imgrec.refresh_bought_together", ignore_result=True)
def refresh_bought_together() -> int:
    """Rebuild the "frequently bought together" pairs (schedule it on beat, like the coviews)."""
    from imgrec_app.services.bought_together import refresh

    return refresh()


@shared_task(name="imgrec.embed_query", ignore_result=True)
def embed_query(payload: dict[str, Any]) -> str:
    """Embed the photo of a search by photo sent by a web process without torch; the vector goes
    back on the broker to the reply queue the web process waits on (services/photo_search.py)."""
    from imgrec_app.services import photo_search

    return photo_search.answer_query(payload)


@shared_task(name="imgrec.train_classifier", ignore_result=True)
def train_classifier(folds: int = 5) -> dict[str, Any]:
    """Train the category classifier (the admin's "Retrain"); never inside a web request."""
    from imgrec_app.services import classifier

    try:
        return classifier.train(folds=folds).__dict__
    except classifier.NotEnoughData as exc:
        logger.warning("imgrec classifier not trained: %s", exc)
        return {"error": str(exc)}


@shared_task(name="imgrec.tune", ignore_result=True)
def tune(run_id: int) -> str:
    """Do a catalogue-tuning run (sent to ``QUEUES["tune"]``, or ``"light"`` without one)."""
    from imgrec_app.services import tuning

    return tuning.execute(run_id).status


@shared_task(name="imgrec.start_tuning", ignore_result=True)
def start_tuning() -> int | None:
    """Periodic (optional beat entry): start a tuning run; None when the catalogue is refused."""
    from imgrec_app.services import tuning

    try:
        return tuning.start_and_queue().run.pk
    except tuning.TuningRefused as exc:
        logger.info("imgrec scheduled tuning refused: %s", exc)
        return None
