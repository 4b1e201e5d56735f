"""Which model imgrec is configured to use and which one serves queries (no torch imported)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.backbones import weights_version_for
from imgrec_app.ml.registry import get_backbone
from imgrec_app.models import IndexedImage, ServingModel

logger = logging.getLogger(__name__)

IMAGE = "image"


@dataclass(frozen=True)
class ModelRef:
    """A backbone as configured: its registry name, options, vector identity and size."""

    name: str
    options: tuple[tuple[str, Any], ...]
    model_id: str
    dim: int


def configured_options() -> dict[str, Any]:
    """``BACKBONE_OPTIONS`` plus the ``PRECISION`` and ``DECODER`` settings where they are not
    the defaults (so the default configuration keeps its options, encoder and model id)."""
    options = dict(imgrec_settings.BACKBONE_OPTIONS or {})
    if imgrec_settings.PRECISION != "fp32":
        options["precision"] = imgrec_settings.PRECISION
    if imgrec_settings.DECODER != "pillow":
        options["decoder"] = imgrec_settings.DECODER
    return options


def configured_model() -> ModelRef:
    """The backbone named by ``IMGREC["BACKBONE"]`` (and its options, precision and decoder)."""
    name = imgrec_settings.BACKBONE
    options = configured_options()
    spec = get_backbone(name).with_options(options)  # preprocess/pooling are part of the id
    return ModelRef(
        name=name,
        options=tuple(sorted(options.items())),
        model_id=spec.model_id(weights_version_for(spec, options)),
        dim=spec.dim,
    )


def serving_model(modality: str = IMAGE) -> ServingModel | None:
    """The model whose vectors answer queries now, or None before anything was indexed."""
    return ServingModel.objects.filter(modality=modality).first()


# (database alias, modality) -> (model id, dimensions) of the serving model, per process.  Shelves
# read it from here and their own statement returns the current row, so a switch made by another
# process is noticed on the next shelf (:func:`remember_serving_model`) without a query of its own.
_serving_cache: dict[tuple[str, str], tuple[str, int]] = {}

# ``(model id, dimensions)`` the image shelves read instead of the serving model, in this context
# only (:func:`reading_model`): a ContextVar, so other threads and async tasks never see it.
_read_override: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "imgrec_read_model", default=None
)


@contextmanager
def reading_model(model_id: str, dim: int) -> Iterator[None]:
    """Let the image shelves of this context read ``model_id``'s vectors, not the serving ones.

    For the offline evaluation: while a tuned head serves, its "similar products" rows are
    measured on the base model's vectors (the head saw these products' categories).  Nothing in
    the database changes (what serves stays as it is); a shelf statement that reads another
    serving row from the database does not undo it (:func:`cached_serving_model` answers the
    override first); leaving the block restores what was there.
    """
    token = _read_override.set((model_id, int(dim)))
    try:
        yield
    finally:
        _read_override.reset(token)


def cached_serving_model(modality: str = IMAGE, *, using: str = "default") -> tuple[str, int] | None:
    """``(model id, dimensions)`` of the serving model, read once per process and database
    (inside :func:`reading_model`: the model it names, for the image modality)."""
    override = _read_override.get() if modality == IMAGE else None
    if override is not None:
        return override
    key = (using, modality)
    hit = _serving_cache.get(key)
    if hit is None:
        row = ServingModel.objects.using(using).filter(modality=modality).first()
        if row is None:
            return None  # nothing indexed yet: not cached, the next call looks again
        hit = _serving_cache[key] = (row.model_id, int(row.dimensions))
    return hit


def remember_serving_model(value: tuple[str, int] | None, *, modality: str = IMAGE, using: str = "default") -> None:
    """Record the serving model a query just read from the database (None: forget it)."""
    if value is None:
        _serving_cache.pop((using, modality), None)
    else:
        _serving_cache[(using, modality)] = (value[0], int(value[1]))


def forget_serving_models() -> None:
    _serving_cache.clear()


def backfill_remaining(model_id: str) -> int:
    """How many live images still lack a vector of ``model_id`` (failed ones do not count)."""
    return (
        IndexedImage.objects.exclude(status=IndexedImage.Status.FAILED).exclude(embeddings__model_id=model_id).count()
    )


def switch_serving(model_id: str, dim: int, *, modality: str = IMAGE) -> ServingModel:
    """Make ``model_id`` the serving model (an explicit switch or a rollback)."""
    with transaction.atomic():
        row, _ = ServingModel.objects.update_or_create(
            modality=modality, defaults={"model_id": model_id, "dimensions": dim}
        )
    forget_serving_models()  # this process; other processes notice on their next shelf
    logger.info("imgrec now serves %s vectors from %s", modality, model_id)
    return row


def sync_serving_model() -> ServingModel | None:
    """Switch serving to the configured model once its backfill is complete.

    With ``MODEL_SWITCH = "manual"`` only the first model is adopted automatically; later
    switches wait for ``manage.py imgrec_switch_model``.  Rolling back is a setting change: the
    previous model's vectors are still there (until pruned), so its backfill is complete and it
    serves again at the next sync.
    """
    ref = configured_model()
    target_id, target_dim = serving_target(ref)
    current = serving_model()
    if current is not None and current.model_id == target_id:
        return current
    if current is not None and imgrec_settings.MODEL_SWITCH != "auto":
        return current
    if current is not None and backfill_remaining(target_id):
        return current
    from imgrec_app.models import ImageEmbedding

    if current is None and not ImageEmbedding.objects.filter(model_id=target_id).exists():
        return None
    return switch_serving(target_id, target_dim)


def serving_target(ref: ModelRef) -> tuple[str, int]:
    """``(model id, dim)`` that should serve: the configured backbone, or its active tuned head
    (a catalogue-tuning run, :mod:`imgrec_app.services.tuning`)."""
    from imgrec_app.services.tuning import serving_target as tuned_target

    return tuned_target(ref)
