"""Learned product vectors: a tuning run's image + text head, kept up to date per product.

A tuning run whose products have texts trains a second head (:func:`imgrec_app.ml.head.train_learned_head`)
on ``[base image product vector, text vector]``.  Its output, one vector per product that has
both, is stored as a :class:`~imgrec_app.models.ProductVector` (modality ``learned``) under the
model id ``<tuned model id>:learned`` and is the similar shelf's third modality while that run's
head serves (``SIMILAR_WEIGHTS["learned"]``).  It must follow both of its inputs, so

* :func:`imgrec_app.services.vectors.refresh_product_vectors` calls :func:`refresh` for the
  products whose base image vectors it rewrote (new, replaced or deleted images), and
* :func:`imgrec_app.services.text.embed_products` calls it for the products whose text changed;

a product that lost its images or its text loses its learned vector (the shelf then fuses the
parts it still has).  No Celery here; this module imports no other service (text, vectors and
tuning import it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from django.db import transaction

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.head import ProjectionHead, learned_input
from imgrec_app.models import ProductVector, TuningRun

logger = logging.getLogger(__name__)

SUFFIX = ":learned"
BATCH = 1000

_heads: dict[int, ProjectionHead] = {}
# Serving (tuned) model id -> (learned model id, dim) or None; a READY run's heads never change.
_serving: dict[str, tuple[str, int] | None] = {}


def model_id_of(run: TuningRun) -> str:
    return f"{run.model_id}{SUFFIX}"


def _text_model_id() -> str | None:
    name = imgrec_settings.TEXT_MODEL
    if not name:
        return None
    from imgrec_app.ml.text import TEXT_MODELS

    return TEXT_MODELS[name][0]


def head_of(run: TuningRun) -> ProjectionHead | None:
    """The run's learned head (cached per process), or None when it has none."""
    if run.pk not in _heads:
        weights = TuningRun.objects.values_list("learned_weights", flat=True).get(pk=run.pk)
        if weights is None:
            return None
        _heads[run.pk] = ProjectionHead.from_bytes(weights)
    return _heads[run.pk]


def active_run() -> TuningRun | None:
    """The active ready run that has a learned head."""
    return (
        TuningRun.objects.filter(is_active=True, status=TuningRun.Status.READY, learned_weights__isnull=False)
        .defer("weights", "learned_weights")
        .first()
    )


def serving_modality(serving_model_id: str) -> tuple[str, int] | None:
    """``(learned model id, dim)`` to fuse while ``serving_model_id`` serves, or None.

    Only a tuned head's model id has one (its run's learned vectors); cached per process once
    the run is ready, so a shelf pays no statement for it.
    """
    if serving_model_id in _serving:
        return _serving[serving_model_id]
    if ":head" not in serving_model_id:  # a backbone's own id never becomes a tuned one
        _serving[serving_model_id] = None
        return None
    run = (
        TuningRun.objects.filter(model_id=serving_model_id)
        .exclude(model_id="")
        .defer("weights", "learned_weights")
        .first()
    )
    if run is None or run.status != TuningRun.Status.READY:
        return None  # not a tuned model, or not finished: ask again later
    has = TuningRun.objects.filter(pk=run.pk, learned_weights__isnull=False).exists()
    _serving[serving_model_id] = (model_id_of(run), int(run.dimensions or 0)) if has else None
    return _serving[serving_model_id]


def write(run: TuningRun, head: ProjectionHead, products: Iterable[tuple[int, str]]) -> int:
    """(Re)compute the learned vectors of some products; returns how many were written.

    A product with no base image vector or no text vector has none (a stored one is deleted).
    """
    text_id = _text_model_id()
    pairs = sorted(set(products))
    if not pairs or text_id is None:
        return 0
    target = model_id_of(run)
    written = 0
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        by_ct: dict[int, list[str]] = {}
        for ct, obj in chunk:
            by_ct.setdefault(ct, []).append(obj)
        for ct, objs in by_ct.items():
            written += _write_chunk(run, head, ct, objs, text_id, target)
    return written


def _write_chunk(run: TuningRun, head: ProjectionHead, ct: int, objs: list[str], text_id: str, target: str) -> int:
    rows = ProductVector.objects.filter(
        content_type_id=ct, object_id__in=objs, model_id__in=[run.base_model_id, text_id]
    ).values_list("object_id", "model_id", "vector")
    image: dict[str, Any] = {}
    text: dict[str, Any] = {}
    for obj, mid, vec in rows:
        (image if mid == run.base_model_id else text)[obj] = vec
    both = sorted(set(image) & set(text))
    with transaction.atomic():
        ProductVector.objects.filter(content_type_id=ct, object_id__in=objs, model_id=target).exclude(
            object_id__in=both
        ).delete()
        if not both:
            return 0
        X = np.stack([np.asarray(image[o], dtype=np.float32) for o in both])
        T = np.stack([np.asarray(text[o], dtype=np.float32) for o in both])
        vectors = head.apply(learned_input(X, T))
        ProductVector.objects.bulk_create(
            [
                ProductVector(
                    content_type_id=ct,
                    object_id=o,
                    model_id=target,
                    modality=ProductVector.Modality.LEARNED,
                    vector=v.tolist(),
                    source_count=1,
                )
                for o, v in zip(both, vectors)
            ],
            update_conflicts=True,
            unique_fields=["content_type", "object_id", "model_id"],
            update_fields=["vector", "updated_at"],
        )
    return len(both)


def backfill(run: TuningRun, head: ProjectionHead) -> int:
    """Learned vectors for every product that has a base image vector (a run's backfill)."""
    pairs = ProductVector.objects.filter(model_id=run.base_model_id).values_list("content_type_id", "object_id")
    return write(run, head, pairs)


def refresh(products: Iterable[tuple[int, str]], *, changed_model_id: str | None = None) -> int:
    """Follow a change of the products' base image vectors (``changed_model_id``) or texts (None).

    Does nothing (one statement) when no active run has a learned head, or when
    ``changed_model_id`` is not that run's base model.
    """
    products = list(products)
    if not products:
        return 0
    run = active_run()
    if run is None or (changed_model_id is not None and changed_model_id != run.base_model_id):
        return 0
    head = head_of(run)
    if head is None:
        return 0
    try:
        return write(run, head, products)
    except Exception:
        # The caller's own write (image or text vectors) must not be lost over the derived
        # vectors: logged; the product keeps its previous learned vector (``imgrec_tune
        # --activate`` rewrites them all).
        logger.exception("imgrec: learned vectors of %s product(s) not refreshed (run %s)", len(products), run.pk)
        return 0
