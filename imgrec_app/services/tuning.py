"""Learning the shop's catalogue: tuning runs that train a projection head on stored vectors.

A run (admin button, ``imgrec_tune``, an optional beat entry) is a :class:`TuningRun` row and a
Celery task on ``QUEUES["tune"]`` (``QUEUES["light"]`` when there is none).  The task

1. reads the base model's product vectors, the shop's categories, text vectors and "viewed
   together" pairs, and refuses (status ``refused``, nothing else changed) when they cannot
   teach anything;
2. measures the head held-out (k-fold by product, :mod:`imgrec_app.services.evaluation_tuning`):
   tuned vs untuned image-only precision@k and classifier accuracy;
3. trains the head on every product and stores its weights in the run;
4. writes the tuned vectors — ``head(base image vector)`` for every image, no decoding — under
   the new model id ``<base model id>:head<run pk>``, then the product vectors and HNSW index;
   where the products have texts, a second (learned image + text) head's product vectors too
   (``<tuned model id>:learned``, :mod:`imgrec_app.services.learned`);
5. activates the run (unless it did not beat the untuned vectors held-out) and lets
   :func:`~imgrec_app.services.models.sync_serving_model` switch serving to it.

New uploads get tuned vectors from the worker through :func:`extra_vectors`.  Rolling back is
:func:`rollback` (``imgrec_tune --rollback``) or ``TUNING_SERVE = False``; the base vectors are
kept up to date all along, so shelves are served throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_product_model, product_category, product_content_type
from imgrec_app.ml.head import (
    HeadConfig,
    ProjectionHead,
    TrainingData,
    TrainingDataError,
    check_data,
    train_head,
    train_learned_head,
)
from imgrec_app.models import CoView, ImageEmbedding, ProductVector, TuningRun
from imgrec_app.services import learned
from imgrec_app.services.models import ModelRef, configured_model, serving_model
from imgrec_app.services.text import text_model
from imgrec_app.services.vectors import ensure_hnsw_index, refresh_product_vectors

logger = logging.getLogger(__name__)

Status = TuningRun.Status
ACTIVE_STATUSES = (Status.QUEUED, Status.TRAINING, Status.EVALUATING, Status.BACKFILLING)
BACKFILL_BATCH = 1000
STALE_AFTER = timedelta(hours=2)


class TuningRefused(ValueError):
    """A run cannot start or learn (no vectors, too few categories, ...); nothing was changed."""


# --- what the head learns from -----------------------------------------------------------------


@dataclass
class Catalogue:
    """Training material, one row per product with a base vector."""

    ids: list[str]
    data: TrainingData
    category_names: list[str]  # label index -> category
    categories: dict[str, str | None]  # product id -> category (None: uncategorised)


def _categories_of(ids: Sequence[str]) -> dict[str, str | None]:
    model = get_product_model()
    out: dict[str, str | None] = {}
    keys = [model._meta.pk.to_python(i) for i in ids]
    for start in range(0, len(keys), 2000):
        for pk, product in model._default_manager.in_bulk(keys[start : start + 2000]).items():
            out[str(pk)] = product_category(product)
    return out


def gather(base_model_id: str) -> Catalogue:
    """Base product vectors, categories, text vectors and co-view pairs of the whole shop."""
    from imgrec_app.services.search import vectors_of

    ct = product_content_type()
    ids = sorted(
        ProductVector.objects.filter(content_type=ct, model_id=base_model_id).values_list("object_id", flat=True)
    )
    base = vectors_of(ids, model_id=base_model_id)
    ids = [i for i in ids if i in base]
    categories = _categories_of(ids)
    names = sorted({c for c in categories.values() if c is not None})
    index = {c: n for n, c in enumerate(names)}
    labels = np.array([index.get(c, -1) if (c := categories.get(i)) else -1 for i in ids], dtype=np.int64)
    X = np.stack([base[i] for i in ids]) if ids else np.zeros((0, 0), dtype=np.float32)
    text = None
    tmodel = text_model()
    if tmodel and ids:
        tv = vectors_of(ids, model_id=tmodel[0])
        if tv:
            zeros = np.zeros(tmodel[1], dtype=np.float32)
            text = np.stack([tv.get(i, zeros) for i in ids])
    pairs = None
    row = {i: n for n, i in enumerate(ids)}
    rows = CoView.objects.filter(content_type=ct, visitors__gte=imgrec_settings.COVIEW_MIN_VISITORS).values_list(
        "object_id", "other_id"
    )
    found = [(row[a], row[b]) for a, b in rows if a in row and b in row and a < b]
    if found:
        pairs = np.asarray(found, dtype=np.int64)
    return Catalogue(ids, TrainingData(X, labels, text, pairs), names, categories)


def head_config() -> HeadConfig:
    return HeadConfig.from_dict(dict(imgrec_settings.TUNING_HEAD or {}))


def check(catalogue: Catalogue) -> None:
    """Refuse a catalogue a head cannot learn from.

    Raises:
        TuningRefused: with the reason (no vectors, too few categories or products per category).
    """
    try:
        check_data(
            catalogue.data,
            min_categories=int(imgrec_settings.TUNING_MIN_CATEGORIES),
            min_per_category=int(imgrec_settings.TUNING_MIN_PER_CATEGORY),
        )
    except TrainingDataError as exc:
        raise TuningRefused(str(exc)) from exc


# --- starting a run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStart:
    run: TuningRun
    created: bool


def tune_queue() -> str:
    queues = imgrec_settings.QUEUES
    return queues.get("tune") or queues["light"]


def start_run(*, user: Any = None, config: dict[str, Any] | None = None) -> RunStart:
    """Check the catalogue and record a queued run (or return the run already going).

    Raises:
        TuningRefused: nothing indexed, or too few categories; no run is recorded.
    """
    ref = configured_model()
    options = {**dict(imgrec_settings.TUNING_HEAD or {}), **(config or {})}
    HeadConfig.from_dict(options)  # unknown options fail here, not in the worker
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ["imgrec-tune"])
        # A run whose worker died never finishes: after STALE_AFTER it no longer blocks new ones.
        TuningRun.objects.filter(status__in=ACTIVE_STATUSES, created_at__lt=timezone.now() - STALE_AFTER).update(
            status=Status.FAILED, message="The run did not finish (its worker was lost).", finished_at=timezone.now()
        )
        going = TuningRun.objects.select_for_update().filter(status__in=ACTIVE_STATUSES).first()
        if going is not None:
            return RunStart(going, False)
        check(gather(ref.model_id))
        run = TuningRun.objects.create(
            base_model_id=ref.model_id,
            config=options,
            requested_by=user if getattr(user, "is_authenticated", False) else None,
            stage="Waiting for a worker",
        )
    return RunStart(run, True)


def start_and_queue(*, user: Any = None, config: dict[str, Any] | None = None) -> RunStart:
    """Start a run and send it to the tune queue after commit (the request returns at once)."""
    started = start_run(user=user, config=config)
    if started.created:
        run_id = started.run.pk
        transaction.on_commit(lambda: publish(run_id), robust=True)
    return started


def publish(run_id: int) -> bool:
    from celery import current_app

    try:
        current_app.send_task(
            "imgrec.tune", args=[run_id], queue=tune_queue(), retry=True, retry_policy={"max_retries": 1}
        )
        return True
    except Exception as exc:  # the broker is down: the run stays queued; start it again later
        logger.warning("imgrec could not queue tuning run %s (%s)", run_id, exc)
        return False


# --- running it ---------------------------------------------------------------------------------


def _update(run: TuningRun, **fields: Any) -> None:
    for key, value in fields.items():
        setattr(run, key, value)
    TuningRun.objects.filter(pk=run.pk).update(**fields)


def execute(run_id: int) -> TuningRun:
    """Do a run's work (the Celery task's body, or ``imgrec_tune --sync``)."""
    run = TuningRun.objects.get(pk=run_id)
    if run.status != Status.QUEUED:
        return run  # a redelivered task: the run is done or another delivery does it
    _update(run, status=Status.TRAINING, started_at=timezone.now(), stage="Reading vectors", progress=0.02)
    try:
        _execute(run)
    except TuningRefused as exc:
        _update(run, status=Status.REFUSED, message=str(exc), stage="", finished_at=timezone.now())
        logger.info("imgrec tuning run %s refused: %s", run.pk, exc)
    except Exception as exc:
        _update(run, status=Status.FAILED, message=f"{type(exc).__name__}: {exc}", finished_at=timezone.now())
        logger.exception("imgrec tuning run %s failed", run.pk)
        raise
    return run


def _execute(run: TuningRun) -> None:
    from imgrec_app.services import evaluation_tuning

    catalogue = gather(run.base_model_id)
    check(catalogue)
    config = HeadConfig.from_dict(run.config)
    run.model_id = f"{run.base_model_id}:head{run.pk}"
    _update(
        run,
        model_id=run.model_id,
        sample_count=len(catalogue.ids),
        categories=catalogue.category_names,
        dimensions=config.dim,
    )
    folds = int(imgrec_settings.TUNING_FOLDS)
    if folds >= 2:
        _update(run, status=Status.EVALUATING, stage=f"Held-out evaluation ({folds} folds)", progress=0.05)

        def fold_done(done: int, total: int) -> None:
            _update(run, stage=f"Held-out evaluation: fold {done} of {total}", progress=0.05 + 0.6 * done / total)

        metrics = evaluation_tuning.held_out(catalogue, config, folds=folds, on_fold=fold_done)
        _update(run, metrics=metrics)
    _update(run, status=Status.TRAINING, stage="Training on every product", progress=0.7)
    head = train_head(catalogue.data, config)
    _update(run, weights=head.to_bytes())
    joint = _train_learned(run, catalogue, config)
    _update(run, status=Status.BACKFILLING, stage="Writing tuned vectors", progress=0.8)
    backfill(run, head)
    if joint is not None:
        ensure_hnsw_index(learned.model_id_of(run), joint.dim)
        learned.backfill(run, joint)
    _finish(run)


def _train_learned(run: TuningRun, catalogue: Catalogue, config: HeadConfig) -> ProjectionHead | None:
    """Train and store the learned image + text head when the shop has texts (``HeadConfig.learned``)."""
    if not config.learned or catalogue.data.text is None:
        return None
    _update(run, stage="Training the image + text head", progress=0.75)
    try:
        joint = train_learned_head(catalogue.data, config)
    except TrainingDataError as exc:
        logger.info("imgrec tuning run %s: no learned head (%s)", run.pk, exc)
        return None
    _update(run, learned_weights=joint.to_bytes())
    return joint


def _finish(run: TuningRun) -> None:
    from imgrec_app.services.models import sync_serving_model

    gain = (run.metrics or {}).get("gain")
    if imgrec_settings.TUNING_REQUIRE_GAIN and gain is not None and gain <= 0:
        _update(
            run,
            status=Status.READY,
            progress=1.0,
            stage="",
            finished_at=timezone.now(),
            message=(
                f"Not activated: held-out image-only precision did not improve ({gain:+.3f}). "
                "The shelves keep the current vectors; activate it anyway with imgrec_tune --activate."
            ),
        )
        return
    with transaction.atomic():
        TuningRun.objects.filter(is_active=True).exclude(pk=run.pk).update(is_active=False)
        _update(run, status=Status.READY, is_active=True, progress=1.0, stage="", finished_at=timezone.now())
    sync_serving_model()
    serving = serving_model()
    note = "Serving the tuned vectors." if serving and serving.model_id == run.model_id else ""
    if not note:
        note = (
            "Active; serving switches with imgrec_switch_model (MODEL_SWITCH is manual)."
            if imgrec_settings.MODEL_SWITCH != "auto"
            else "Active; not serving (TUNING_SERVE is off)."
            if not imgrec_settings.TUNING_SERVE
            else "Active."
        )
    _update(run, message=note)


# --- tuned vectors ------------------------------------------------------------------------------


_heads: dict[int, ProjectionHead] = {}


def load_head(run: TuningRun) -> ProjectionHead:
    """The run's head (cached per process: weights never change once stored)."""
    if run.pk not in _heads:
        weights = (
            run.weights
            if run.weights is not None
            else TuningRun.objects.values_list("weights", flat=True).get(pk=run.pk)
        )
        if weights is None:
            raise LookupError(f"Tuning run {run.pk} has no stored head.")
        _heads[run.pk] = ProjectionHead.from_bytes(weights)
    return _heads[run.pk]


def active_run(base_model_id: str | None = None) -> TuningRun | None:
    """The active ready run (for ``base_model_id`` when given), without its weights."""
    qs = TuningRun.objects.filter(is_active=True, status=Status.READY).defer("weights")
    if base_model_id is not None:
        qs = qs.filter(base_model_id=base_model_id)
    return qs.first()


def backfill(run: TuningRun, head: ProjectionHead | None = None) -> int:
    """Write the run's vectors for every image that has a base vector but no tuned one.

    Idempotent (upserts; images that have one are skipped), in batches of stored vectors: no
    image is decoded.  Returns how many image vectors were written.
    """
    head = head or load_head(run)
    ensure_hnsw_index(run.model_id, head.dim)
    ensure_hnsw_index(run.model_id, head.dim, table=ImageEmbedding._meta.db_table)
    tuned = ImageEmbedding.objects.filter(image=OuterRef("image"), model_id=run.model_id)
    last = 0
    written = 0
    touched: set[tuple[int, str]] = set()
    while True:
        rows = list(
            ImageEmbedding.objects.filter(model_id=run.base_model_id, pk__gt=last)
            .filter(~Exists(tuned))
            .order_by("pk")
            .values_list(
                "pk", "image_id", "vector", "file_hash", "labels", "image__content_type_id", "image__object_id"
            )[:BACKFILL_BATCH]
        )
        if not rows:
            break
        last = rows[-1][0]
        vectors = head.apply(np.stack([np.asarray(r[2], dtype=np.float32) for r in rows]))
        objs = [
            ImageEmbedding(image_id=r[1], model_id=run.model_id, vector=v.tolist(), file_hash=r[3], labels=r[4])
            for r, v in zip(rows, vectors)
        ]
        ImageEmbedding.objects.bulk_create(objs, ignore_conflicts=True)
        written += len(objs)
        touched |= {(r[5], r[6]) for r in rows}
    pairs = sorted(touched)
    for start in range(0, len(pairs), BACKFILL_BATCH):
        refresh_product_vectors(pairs[start : start + BACKFILL_BATCH], run.model_id)
    return written


def backfill_active() -> int:
    """Fill tuned vectors the worker could not write (an image embedded while a run activated)."""
    run = active_run(configured_model().model_id)
    return backfill(run) if run is not None else 0


def extra_vectors(ref: ModelRef, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """The vectors to store next to a batch of new base vectors: ``{model id: [N, dim]}``.

    The indexing worker calls this once per batch, after embedding with the base model; today
    it returns the active tuned head's vectors (or nothing).
    """
    run = active_run(ref.model_id)
    if run is None or len(vectors) == 0:
        return {}
    return {run.model_id: load_head(run).apply(np.asarray(vectors, dtype=np.float32))}


# --- serving, rollback --------------------------------------------------------------------------


def serving_target(ref: ModelRef) -> tuple[str, int]:
    """``(model id, dim)`` that should serve: the active tuned head of ``ref``, or ``ref`` itself."""
    if imgrec_settings.TUNING_SERVE:
        run = active_run(ref.model_id)
        if run is not None and run.dimensions:
            return run.model_id, int(run.dimensions)
    return ref.model_id, ref.dim


def rollback() -> TuningRun | None:
    """Stop using the active head: the base model's vectors serve again at once."""
    from imgrec_app.services.models import switch_serving

    ref = configured_model()
    with transaction.atomic():
        run = TuningRun.objects.filter(is_active=True).defer("weights").first()
        TuningRun.objects.filter(is_active=True).update(is_active=False)
        current = serving_model()
        if current is None or current.model_id != ref.model_id:
            switch_serving(ref.model_id, ref.dim)
    return run


def activate(run_id: int) -> TuningRun:
    """Make a ready run active (again) and serve it once its vectors are complete.

    Raises:
        TuningRefused: the run is not ready or belongs to another base model.
    """
    from imgrec_app.services.models import sync_serving_model

    run = TuningRun.objects.defer("weights").get(pk=run_id)
    ref = configured_model()
    if run.status != Status.READY:
        raise TuningRefused(f"Run {run.pk} is {run.status}, not ready.")
    if run.base_model_id != ref.model_id:
        raise TuningRefused(f"Run {run.pk} tuned {run.base_model_id}; the configured backbone is {ref.model_id}.")
    backfill(run)
    joint = learned.head_of(run)
    if joint is not None:  # its inputs may have changed while the run was not active
        ensure_hnsw_index(learned.model_id_of(run), joint.dim)
        learned.backfill(run, joint)
    with transaction.atomic():
        TuningRun.objects.filter(is_active=True).exclude(pk=run.pk).update(is_active=False)
        _update(run, is_active=True)
    sync_serving_model()
    return run


def run_progress(run: TuningRun) -> dict[str, Any]:
    """What the admin's progress box shows."""
    return {
        "run_id": run.pk,
        "status": run.status,
        "status_label": str(run.get_status_display()),
        "progress": round(run.progress, 3),
        "stage": run.stage,
        "message": run.message,
        "finished": run.finished,
        "model_id": run.model_id,
        "is_active": run.is_active,
    }


def wait(run: TuningRun, *, timeout: float, on_change: Callable[[dict[str, Any]], None] | None = None) -> TuningRun:
    """Poll a run until it finishes (``imgrec_tune --wait``)."""
    import time

    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        run.refresh_from_db()
        state = run_progress(run)
        if on_change and state != last:
            on_change(state)
            last = state
        if run.finished:
            return run
        time.sleep(1.0)
    raise TimeoutError(f"Tuning run {run.pk} did not finish in {timeout:.0f} s (it is {run.status}).")
