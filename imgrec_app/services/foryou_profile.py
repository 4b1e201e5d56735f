"""Recommended for you, step 1: the visitor's profile (weighted history, vectors, categories).

See :mod:`imgrec_app.services.foryou` for the whole shelf.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import BinaryField, CharField, Func, Subquery, Value
from django.http import HttpRequest
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_product_model, product_category, product_content_type, product_key
from imgrec_app.models import CategoryPrediction, ProductVector, ServingModel
from imgrec_app.services import history, search
from imgrec_app.services import models as serving_models
from imgrec_app.services.recommend import _pks, active_models


@dataclass
class Profile:
    """What the shelf knows about the visitor."""

    ids: list[str]  # distinct products, heaviest first
    weights: dict[str, float]
    models: list[tuple[str, str, int]]  # (modality, model_id, dim), primary first
    vectors: dict[str, dict[str, np.ndarray]]  # modality -> product -> vector
    categories: dict[str, str | None]
    names: dict[str, str]
    category_names: dict[str, str] = field(default_factory=dict)

    @property
    def primary(self) -> str | None:
        return self.models[0][0] if self.models else None

    @property
    def usable(self) -> list[str]:
        """History products that have a vector of the primary modality."""
        p = self.primary
        return [i for i in self.ids if p and i in self.vectors[p]]


def weighted_history(request: HttpRequest, *, recency: float) -> list[tuple[str, float]]:
    """``(product id, weight)`` of the visitor's recent history, heaviest first.

    weight = kind weight × 0.5^(age / half-life) × (1 + recency × 0.5^position), where position 0
    is the product viewed last: ``recency`` makes the last few products count more, whatever
    their age (a visitor's current intent).
    """
    rows = list(
        history.visible_history(request).values_list("object_id", "kind", "created_at")[
            : imgrec_settings.HISTORY_LENGTH
        ]
    )
    now = timezone.now()
    half_life = float(imgrec_settings.HISTORY_HALF_LIFE_DAYS) * 86400.0
    weights: dict[str, float] = {}
    order: list[str] = []
    for obj, kind, created in rows:  # newest first
        age = max((now - created).total_seconds(), 0.0)
        weights[obj] = weights.get(obj, 0.0) + history.KIND_WEIGHTS.get(kind, 1.0) * 0.5 ** (age / half_life)
        if obj not in order:
            order.append(obj)
    for position, obj in enumerate(order):
        weights[obj] *= 1.0 + recency * 0.5**position
    return sorted(weights.items(), key=lambda kv: (-kv[1], order.index(kv[0])))


def cached_models() -> list[tuple[str, str, int]]:
    """:func:`~imgrec_app.services.recommend.active_models` with the serving model read once per
    process (no statement); a switch made by another process is noticed by :func:`history_vectors`."""
    return active_models(cached=True)


def _vector_rows(ids: list[str], models: Sequence[tuple[str, str, int]], *, serving: bool = False) -> list[tuple]:
    modality_of = {mid: m for m, mid, _ in models}
    rows = ProductVector.objects.filter(
        content_type=product_content_type(), model_id__in=list(modality_of), object_id__in=ids
    ).annotate(_imgrec_binary=Func("vector", function="vector_send", output_field=BinaryField()))
    current: Any = Value("", output_field=CharField())
    if serving:  # the image modality's serving model as the database has it now, on every row
        current = Subquery(
            ServingModel.objects.filter(modality=serving_models.IMAGE).values("model_id")[:1],
            output_field=CharField(),
        )
    columns = ("model_id", "object_id", "_imgrec_binary", "_imgrec_serving")
    return list(rows.annotate(_imgrec_serving=current).values_list(*columns))


def _by_modality(rows: Iterable[tuple], models: Sequence[tuple[str, str, int]]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {m: {} for m, _, _ in models}
    modality_of = {mid: m for m, mid, _ in models}
    for model_id, obj, data, _ in rows:
        out[modality_of[model_id]][obj] = search._from_binary(data)
    return out


def fetch_vectors(ids: Iterable[str], models: Sequence[tuple[str, str, int]]) -> dict[str, dict[str, np.ndarray]]:
    """Vectors of some products for every modality in one query: ``{modality: {id: vector}}``."""
    ids = [str(i) for i in ids]
    if not ids or not models:
        return {m: {} for m, _, _ in models}
    return _by_modality(_vector_rows(ids, models), models)


def history_vectors(ids: Iterable[str]) -> tuple[list[tuple[str, str, int]], dict[str, dict[str, np.ndarray]]]:
    """The models of the shelf and the history's vectors of every modality: **one statement**.

    The models come from :func:`cached_models` (no statement); the statement that reads the
    vectors also returns the serving model's id as the database has it now, so a switch made by
    another process (or a history without vectors of the cached model, e.g. pruned after a
    switch) forgets the cached model and reads it again: two more statements once per switch (the
    serving row, the vectors of the new model); one more on every request whose history has no
    vector yet (the serving row, to tell a switch from products not indexed yet).
    """
    ids = [str(i) for i in ids]
    models = cached_models()
    if not ids or not models:
        return models, {m: {} for m, _, _ in models}
    image = next((mid for m, mid, _ in models if m == serving_models.IMAGE), None)
    rows = _vector_rows(ids, models, serving=image is not None)
    stale = image is not None and (not rows or any(r[3] != image for r in rows))
    if stale:
        serving_models.remember_serving_model(None)
        before, models = models, cached_models()
        if models != before:  # a switch: the vectors of the model that serves now
            rows = _vector_rows(ids, models) if models else []
    return models, _by_modality(rows, models)


def categories_of(products: dict[str, Any]) -> dict[str, str | None]:
    """Each product's category: the shop's, else the classifier's prediction (one query, if needed)."""
    cats = {key: product_category(p) for key, p in products.items()}
    missing = [k for k, c in cats.items() if c is None]
    if missing and imgrec_settings.PRODUCT_CATEGORY:
        predicted = CategoryPrediction.objects.filter(
            content_type=product_content_type(), object_id__in=missing
        ).values_list("object_id", "category")
        cats.update(dict(predicted))
    return cats


def category_label(product: Any, category: str | None) -> str:
    """A category's display name (the related object's ``str()`` where the category is a relation)."""
    spec = imgrec_settings.PRODUCT_CATEGORY
    value = getattr(product, spec, None) if spec and "." not in spec else None
    if value is not None and product_category(product) == category:
        return str(value)
    return str(category)


def products_by_key(ids: Iterable[str]) -> dict[str, Any]:
    """Host products by key, in one query (with the related category where it is a relation)."""
    model = get_product_model()
    manager = model._default_manager
    spec = imgrec_settings.PRODUCT_CATEGORY
    qs = manager.all()
    if spec and "." not in spec:
        try:
            if model._meta.get_field(spec).is_relation:
                qs = qs.select_related(spec)  # categories and their names without a query each
        except Exception:
            pass
    objects = qs.in_bulk(_pks(ids))
    return {product_key(pk): obj for pk, obj in objects.items()}


def load_profile(request: HttpRequest, *, recency: float) -> Profile:
    """The visitor's weighted history with vectors, categories and names (3–4 queries, any length)."""
    weighted = weighted_history(request, recency=recency)
    ids = [o for o, _ in weighted]
    models, vectors = history_vectors(ids) if ids else ([], {})
    products = products_by_key(ids) if ids else {}
    cats = categories_of(products)
    return Profile(
        ids=[i for i in ids if i in products],
        weights=dict(weighted),
        models=models,
        vectors=vectors,
        categories=cats,
        names={k: str(p) for k, p in products.items()},
        category_names={c: category_label(products[k], c) for k, c in cats.items() if c is not None},
    )
