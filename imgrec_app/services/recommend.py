"""Shelves: similar products, recommended for you, trending, search by photo.

Every shelf item carries a *reason*: which product(s) it came from or which fallback made it.
Candidates come from pgvector k-NN queries that apply the shop's rules inside SQL; scores fuse
image similarity, text similarity and "viewed together" counts with the ``SIMILAR_WEIGHTS``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db.models import F, FloatField, Func, QuerySet, Sum, Value
from django.db.models.functions import Extract, Now
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    category_field_lookup,
    category_in_sql,
    get_product_model,
    pk_strings,
    product_category,
    product_content_type,
    product_key,
    recommendable_products,
    same_category_filter,
)
from imgrec_app.models import CoView, Interaction
from imgrec_app.services import search
from imgrec_app.services.models import cached_serving_model, serving_model
from imgrec_app.services.text import text_model

if TYPE_CHECKING:
    from django.utils.functional import _StrOrPromise as StrOrPromise

logger = logging.getLogger(__name__)


@dataclass
class Recommendation:
    """One shelf item: the product id, a score, and why it is there."""

    product_id: str
    score: float
    reason: StrOrPromise  # lazy (REASONS) where the shelf may be rendered in another language
    source: str
    because_of: list[str] = field(default_factory=list)
    product: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "score": round(float(self.score), 4),
            "reason": self.reason,
            "source": self.source,
            "because_of": list(self.because_of),
        }


def clamp_limit(limit: Any, default: int = 8) -> int:
    try:
        value = int(limit)
    except (TypeError, ValueError):
        value = default
    return max(1, min(value, int(imgrec_settings.MAX_LIMIT)))


# --- helpers --------------------------------------------------------------------------------------


def attach_products(items: list[Recommendation]) -> list[Recommendation]:
    """Fetch host products in one query (``in_bulk``), keep the ranking, drop vanished ones."""
    if not items:
        return items
    model = get_product_model()
    to_python = model._meta.pk.to_python
    objects = model._default_manager.in_bulk([to_python(i.product_id) for i in items])
    by_key = {product_key(pk): obj for pk, obj in objects.items()}
    out = []
    for item in items:
        item.product = by_key.get(item.product_id)
        if item.product is not None:
            out.append(item)
    return out


def _names(ids: Iterable[str]) -> dict[str, str]:
    model = get_product_model()
    objects = model._default_manager.in_bulk([model._meta.pk.to_python(i) for i in ids])
    return {product_key(pk): str(obj) for pk, obj in objects.items()}


def _rules(*, same_category_as: Any = None, price_band: float | None = None, product: Any = None) -> QuerySet:
    qs = recommendable_products()
    if same_category_as is not None:
        lookup = category_field_lookup()
        same = same_category_filter(same_category_as)
        if same is not None:  # a many-to-many or a tree: as a pk subquery, so joins add no duplicates
            qs = qs.filter(pk__in=qs.model._default_manager.filter(same).values("pk"))
        # The attname (``category_id``) when the model has it: no query for the related row.
        elif (
            lookup
            and (
                category := (getattr(same_category_as, lookup) if hasattr(same_category_as, lookup) else None)
                or product_category(same_category_as)
            )
            is not None
        ):
            qs = qs.filter(**{lookup: category})
    if price_band and product is not None and getattr(product, "price", None) is not None:
        price = float(product.price)
        qs = qs.filter(price__gte=price / (1 + price_band), price__lte=price * (1 + price_band))
    return qs


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def recent_interactions(*, restrict_to: QuerySet | None, exclude: Iterable[str]) -> tuple[QuerySet, Func]:
    """Interactions of the last ``TRENDING_DAYS`` (within ``restrict_to``, without ``exclude``) and
    each one's weight in popularity: 0.5^(age / half-life)."""
    days = imgrec_settings.TRENDING_DAYS
    half_life = float(imgrec_settings.HISTORY_HALF_LIFE_DAYS) * 86400.0
    qs = Interaction.objects.filter(
        content_type=product_content_type(), created_at__gte=timezone.now() - timedelta(days=days)
    )
    if restrict_to is not None:
        qs = qs.filter(object_id__in=pk_strings(restrict_to))
    exclude = [str(e) for e in exclude]
    if exclude:
        qs = qs.exclude(object_id__in=exclude)
    age = Extract(Now() - F("created_at"), "epoch")
    return qs, Func(Value(0.5), age / Value(half_life), function="power", output_field=FloatField())


def trending_scores(
    *, restrict_to: QuerySet | None = None, limit: int = 20, exclude: Iterable[str] = ()
) -> list[tuple[str, float]]:
    """Time-decayed popularity: sum over recent interactions of kind weight × 0.5^(age/half-life)."""
    qs, decay = recent_interactions(restrict_to=restrict_to, exclude=exclude)
    rows = (
        qs.values("object_id")
        .annotate(score=Sum(decay))
        .order_by("-score", "object_id")
        .values_list("object_id", "score")[:limit]
    )
    return [(obj, float(score)) for obj, score in rows]


def trending_mass(*, restrict_to: QuerySet | None = None, exclude: Iterable[str] = ()) -> float:
    """The sum of :func:`trending_scores` over every product of ``restrict_to`` (one aggregate)."""
    qs, decay = recent_interactions(restrict_to=restrict_to, exclude=exclude)
    return float(qs.aggregate(total=Sum(decay))["total"] or 0.0)


def _fallback(*, limit: int, exclude: set[str], restrict: QuerySet, category_of: Any = None) -> list[Recommendation]:
    """Labelled fallbacks: same category (popular first), then trending, then newest."""
    items: list[Recommendation] = []
    taken = set(exclude)

    def add(rows: Iterable[tuple[str, float]], reason: str, source: str) -> None:
        for obj, score in rows:
            if len(items) >= limit:
                return
            if obj not in taken:
                taken.add(obj)
                items.append(Recommendation(obj, score, reason, source))

    # "Same category" can only be filtered in SQL when the category is a plain field.
    if category_of is not None and category_in_sql():
        same = _rules(same_category_as=category_of)
        same = same & restrict if restrict is not None else same
        add(
            trending_scores(restrict_to=same, limit=limit * 2, exclude=taken),
            gettext("More from this category"),
            "fallback:category",
        )
        if len(items) < limit:
            ids = [
                product_key(pk)
                for pk in same.exclude(pk__in=_pks(taken)).order_by("-pk").values_list("pk", flat=True)[: limit * 2]
            ]
            add(((i, 0.0) for i in ids), gettext("More from this category"), "fallback:category")
    if len(items) < limit:
        trending = trending_scores(restrict_to=restrict, limit=limit * 2, exclude=taken)
        add(trending, gettext("Trending now"), "fallback:trending")
    if len(items) < limit:
        ids = [
            product_key(pk)
            for pk in restrict.exclude(pk__in=_pks(taken)).order_by("-pk").values_list("pk", flat=True)[: limit * 2]
        ]
        add(((i, 0.0) for i in ids), gettext("New in the shop"), "fallback:new")
    return items


def _pks(keys: Iterable[str]) -> list[Any]:
    to_python = get_product_model()._meta.pk.to_python
    out = []
    for k in keys:
        try:
            out.append(to_python(k))
        except Exception:
            continue
    return out


# --- similar products ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Query:
    """One modality's query vector and the model whose vectors it searches."""

    modality: str
    vector: np.ndarray
    model_id: str
    dim: int


REASONS = {
    "image": gettext_lazy("Looks similar"),
    "text": gettext_lazy("Similar description"),
    "coview": gettext_lazy("Often viewed together"),
    "learned": gettext_lazy("Similar in this shop"),
}


def active_models(*, cached: bool = False) -> list[tuple[str, str, int]]:
    """``(modality, model_id, dim)`` of the modalities ``SIMILAR_WEIGHTS`` uses, image first.

    ``cached``: the serving model as this process last read it
    (:func:`~imgrec_app.services.models.cached_serving_model`: no statement), for callers that
    notice a switch themselves (for-you's history statement does).
    """
    weights = imgrec_settings.SIMILAR_WEIGHTS
    models: list[tuple[str, str, int]] = []
    if weights.get("image", 1.0):
        if cached:
            serving = cached_serving_model()
        else:
            row = serving_model()
            serving = (row.model_id, row.dimensions) if row is not None else None
        if serving is not None:
            models.append(("image", serving[0], serving[1]))
    tmodel = text_model()
    if tmodel is not None and weights.get("text", 0.0):
        models.append(("text", tmodel[0], tmodel[1]))
    return models


def _queries_for(keys: Sequence[str]) -> tuple[dict[str, dict[str, np.ndarray]], list[tuple[str, str, int]]]:
    """Vectors of some products for each active modality: ``{modality: {id: vector}}``."""
    models = active_models()
    return {m: search.vectors_of(keys, model_id=mid) for m, mid, _ in models}, models


def _fused_candidates(
    queries: list[_Query],
    *,
    n: int,
    restrict: QuerySet,
    exclude: Iterable[str],
    extra: Iterable[str] = (),
    session: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """k-NN per modality (one pgvector session), then the missing similarities filled in exactly.

    Returns:
        ``{candidate: {modality: similarity}}`` and the candidates' vectors per modality.
    """
    exclude = list(exclude)
    sims: dict[str, dict[str, float]] = {}
    with search.hnsw_session(n) if session else nullcontext():
        for q in queries:
            for obj, sim in search.nearest(
                q.vector,
                model_id=q.model_id,
                dim=q.dim,
                limit=n,
                restrict_to=restrict,
                exclude_ids=exclude,
                session=False,
            ):
                sims.setdefault(obj, {})[q.modality] = sim
    for obj in extra:
        sims.setdefault(obj, {})
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for q in queries:
        vectors[q.modality] = search.vectors_of(sims.keys(), model_id=q.model_id)
        for obj, v in vectors[q.modality].items():
            sims[obj].setdefault(q.modality, _cos(q.vector, v))
    return sims, vectors


def _fuse(parts: dict[str, float]) -> tuple[float, str]:
    """Weighted sum of the similarities and the modality that contributed most."""
    weights = imgrec_settings.SIMILAR_WEIGHTS
    contributions = {m: weights.get(m, 0.0) * v for m, v in parts.items()}
    if not contributions:
        return 0.0, "image"
    return sum(contributions.values()), max(contributions, key=lambda m: contributions[m])


def similar_products(
    product: Any,
    *,
    limit: int = 8,
    same_category: bool = False,
    price_band: float | None = None,
    attach: bool = True,
) -> list[Recommendation]:
    """Products that look (and read) like ``product``, within the shop's rules.

    Image and text neighbours (pgvector HNSW, rules applied in SQL) and "viewed together" pairs
    are fused with ``SIMILAR_WEIGHTS``; near-duplicate photos are collapsed.

    Args:
        product: a host product instance.
        limit: shelf size (bounded by ``MAX_LIMIT``).
        same_category: only products of the same category.
        price_band: only prices within ×(1 ± band) of this product's, e.g. 0.5.
        attach: fetch the host products (``item.product``) in one query.

    Returns:
        Up to ``limit`` :class:`Recommendation` items, best first; a labelled fallback when the
        product has no vector yet.
    """
    from imgrec_app.services import similar

    return similar.similar_products(
        product, limit=limit, same_category=same_category, price_band=price_band, attach=attach
    )


# --- recommended for you ---------------------------------------------------------------------------


def recommended_for_you(request: HttpRequest, **kwargs: Any) -> list[Recommendation]:
    """The visitor's personal shelf: see :func:`imgrec_app.services.foryou.recommended_for_you`."""
    from imgrec_app.services import foryou

    return foryou.recommended_for_you(request, **kwargs)


def trending(*, limit: int = 8, attach: bool = True) -> list[Recommendation]:
    """The shop's trending products (time-decayed popularity), within the rules."""
    items = _fallback(limit=clamp_limit(limit), exclude=set(), restrict=recommendable_products())
    return attach_products(items) if attach else items


# --- search by photo --------------------------------------------------------------------------------


def search_by_photo(file: Any, *, limit: int = 8) -> list[Recommendation]:
    """Products that look like an uploaded photo (validated first; nothing stored by default).

    Raises:
        django.core.exceptions.ValidationError: the upload is not an acceptable image.
        LookupError: nothing is indexed yet.
    """
    from django.core.exceptions import ValidationError

    from imgrec_app.ml.preprocess import ImageError, load_rgb
    from imgrec_app.services import photo_search
    from imgrec_app.services.models import configured_model
    from imgrec_app.validators import validate_product_image

    info = validate_product_image(file)
    serving = serving_model()
    if serving is None:
        raise LookupError("Nothing is indexed yet.")
    ref = configured_model()
    if ref.model_id != serving.model_id and not serving.model_id.startswith(f"{ref.model_id}:head"):
        raise LookupError("The serving model differs from the configured one; try again after the switch.")
    spec = photo_search.recipe_spec(ref)  # no torch: the web process may have none
    file.seek(0)
    try:
        # Decoded and framed exactly as the catalogue's photos are (indexing._prepare).
        img = load_rgb(
            file.read(),
            allowed_formats=imgrec_settings.ALLOWED_FORMATS,
            max_pixels=imgrec_settings.MAX_IMAGE_PIXELS,
            min_size=spec.resize_size,
        )
    except ImageError as exc:
        raise ValidationError(exc.message, code=exc.code) from exc
    vec = photo_search.query_vector(img, ref)  # here, or on a worker when torch is not installed
    if serving.model_id != ref.model_id:
        # A tuned head serves (imgrec_tune): the photo goes through the same head.
        from imgrec_app.services.tuning import extra_vectors

        tuned = extra_vectors(ref, np.asarray(vec, dtype=np.float32)[None, :])
        if serving.model_id not in tuned:
            raise LookupError("The serving tuned head is not active; try again after the switch.")
        vec = tuned[serving.model_id][0]
    if imgrec_settings.SEARCH_STORE_UPLOADS:
        _store_search_upload(file, info.format)
    rows = search.nearest(
        vec,
        model_id=serving.model_id,
        dim=serving.dimensions,
        limit=clamp_limit(limit),
        restrict_to=recommendable_products(),
    )
    items = [Recommendation(obj, sim, gettext("Looks like your photo"), "search:image") for obj, sim in rows]
    return attach_products(items)


def _store_search_upload(file: Any, fmt: str) -> str:
    """Keep a search photo (only when ``SEARCH_STORE_UPLOADS`` asks), under a generated name."""
    import uuid

    from django.core.files.storage import default_storage

    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}.get(fmt, "img")
    file.seek(0)
    return default_storage.save(f"imgrec/searches/{uuid.uuid4().hex}.{ext}", file)


# --- viewed together ------------------------------------------------------------------------------


def refresh_coviews(*, days: int | None = None) -> int:
    """Rebuild the "viewed together" table from recent interactions (one SQL statement)."""
    from django.db import connection, transaction

    since = timezone.now() - timedelta(days=days or imgrec_settings.TRENDING_DAYS)
    table, inter = CoView._meta.db_table, Interaction._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
        cursor.execute(
            f"""
            WITH owners AS (
                SELECT DISTINCT content_type_id, object_id,
                       COALESCE(user_id::text, visitor_id::text) AS owner
                FROM {inter} WHERE created_at >= %s
            )
            INSERT INTO {table} (content_type_id, object_id, other_id, visitors, updated_at)
            SELECT a.content_type_id, a.object_id, b.object_id, count(*), now()
            FROM owners a JOIN owners b
              ON a.owner = b.owner AND a.content_type_id = b.content_type_id
             AND a.object_id <> b.object_id
            GROUP BY a.content_type_id, a.object_id, b.object_id
            HAVING count(*) >= %s
            """,
            [since, int(imgrec_settings.COVIEW_MIN_VISITORS)],
        )
        return cursor.rowcount
