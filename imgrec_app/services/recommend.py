"""Shelves: similar products, recommended for you, trending, search by photo.

Every shelf item carries a *reason*: which product(s) it came from or which fallback made it.
Candidates come from pgvector k-NN queries that apply the shop's rules inside SQL; scores fuse
image similarity, text similarity and "viewed together" counts with the ``SIMILAR_WEIGHTS``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterable, Sequence

import numpy as np
from django.db.models import Count, F, FloatField, Func, QuerySet, Sum, Value
from django.db.models.functions import Extract, Now
from django.http import HttpRequest
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    category_field_lookup,
    get_product_model,
    pk_strings,
    product_category,
    product_content_type,
    product_key,
    recommendable_products,
)
from imgrec_app.models import CoView, Interaction
from imgrec_app.services import history, search
from imgrec_app.services.models import serving_model
from imgrec_app.services.text import text_model

logger = logging.getLogger(__name__)


@dataclass
class Recommendation:
    """One shelf item: the product id, a score, and why it is there."""

    product_id: str
    score: float
    reason: str
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
        category = product_category(same_category_as)
        if lookup and category is not None:
            qs = qs.filter(**{lookup: category})
    if price_band and product is not None and getattr(product, "price", None) is not None:
        price = float(product.price)
        qs = qs.filter(price__gte=price / (1 + price_band), price__lte=price * (1 + price_band))
    return qs


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def trending_scores(*, restrict_to: QuerySet | None = None, limit: int = 20, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
    """Time-decayed popularity: sum over recent interactions of kind weight × 0.5^(age/half-life)."""
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
    decay = Func(Value(0.5), age / Value(half_life), function="power", output_field=FloatField())
    rows = (
        qs.values("object_id")
        .annotate(score=Sum(decay))
        .order_by("-score", "object_id")
        .values_list("object_id", "score")[:limit]
    )
    return [(obj, float(score)) for obj, score in rows]


def _fallback(
    *, limit: int, exclude: set[str], restrict: QuerySet, category_of: Any = None
) -> list[Recommendation]:
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

    if category_of is not None:
        same = _rules(same_category_as=category_of)
        same = same & restrict if restrict is not None else same
        add(trending_scores(restrict_to=same, limit=limit * 2, exclude=taken), "More from this category", "fallback:category")
        if len(items) < limit:
            ids = [product_key(pk) for pk in same.exclude(pk__in=_pks(taken)).order_by("-pk").values_list("pk", flat=True)[: limit * 2]]
            add(((i, 0.0) for i in ids), "More from this category", "fallback:category")
    if len(items) < limit:
        add(trending_scores(restrict_to=restrict, limit=limit * 2, exclude=taken), "Trending now", "fallback:trending")
    if len(items) < limit:
        ids = [product_key(pk) for pk in restrict.exclude(pk__in=_pks(taken)).order_by("-pk").values_list("pk", flat=True)[: limit * 2]]
        add(((i, 0.0) for i in ids), "New in the shop", "fallback:new")
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


def similar_products(
    product: Any,
    *,
    limit: int = 8,
    same_category: bool = False,
    price_band: float | None = None,
    attach: bool = True,
) -> list[Recommendation]:
    """Products that look (and read) like ``product``, within the shop's rules.

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
    limit = clamp_limit(limit)
    key = product_key(product)
    restrict = _rules(same_category_as=product if same_category else None, price_band=price_band, product=product)
    weights = imgrec_settings.SIMILAR_WEIGHTS
    serving = serving_model()
    tmodel = text_model()
    image_vec = text_vec = None
    if serving is not None:
        image_vec = search.vectors_of([key], model_id=serving.model_id).get(key)
    if tmodel is not None and weights.get("text", 0):
        text_vec = search.vectors_of([key], model_id=tmodel[0]).get(key)
    if image_vec is None and text_vec is None:
        items = _fallback(limit=limit, exclude={key}, restrict=restrict, category_of=product)
        return attach_products(items) if attach else items
    n = limit * int(imgrec_settings.CANDIDATE_FACTOR)
    image_sims: dict[str, float] = {}
    text_sims: dict[str, float] = {}
    if image_vec is not None:
        image_sims = dict(search.nearest(image_vec, model_id=serving.model_id, dim=serving.dimensions, limit=n, restrict_to=restrict, exclude_ids=[key]))
    if text_vec is not None:
        text_sims = dict(search.nearest(text_vec, model_id=tmodel[0], dim=tmodel[1], limit=n, restrict_to=restrict, exclude_ids=[key]))
    coviews = _coviews(key, restrict) if weights.get("coview", 0) else {}
    candidates = set(image_sims) | set(text_sims) | set(coviews)
    # Fill in the missing modality exactly for every candidate (a few dozen dot products).
    img_vecs = search.vectors_of(candidates, model_id=serving.model_id) if image_vec is not None else {}
    if image_vec is not None:
        for c, v in img_vecs.items():
            image_sims.setdefault(c, _cos(image_vec, v))
    if text_vec is not None:
        for c, v in search.vectors_of(set(candidates) - set(text_sims), model_id=tmodel[0]).items():
            text_sims.setdefault(c, _cos(text_vec, v))
    max_cov = max(coviews.values(), default=0)
    scored = []
    for c in candidates:
        s_img, s_txt = image_sims.get(c), text_sims.get(c)
        cov = coviews.get(c, 0) / max_cov if max_cov else 0.0
        score = (
            weights.get("image", 1.0) * (s_img if s_img is not None else 0.0)
            + weights.get("text", 0.0) * (s_txt if s_txt is not None else 0.0)
            + weights.get("coview", 0.0) * cov
        )
        parts = [("image", weights.get("image", 1.0) * (s_img or 0.0)), ("text", weights.get("text", 0.0) * (s_txt or 0.0)), ("coview", weights.get("coview", 0.0) * cov)]
        source = max(parts, key=lambda p: p[1])[0]
        reason = {"image": "Looks similar", "text": "Similar description", "coview": "Often viewed together"}[source]
        scored.append(Recommendation(c, score, reason, f"similar:{source}", [key]))
    scored.sort(key=lambda r: (-r.score, r.product_id))
    scored = _dedupe_and_diversify(scored, img_vecs, image_vec, limit)
    if len(scored) < limit:
        scored += _fallback(limit=limit - len(scored), exclude={key, *(r.product_id for r in scored)}, restrict=restrict, category_of=product)
    return attach_products(scored) if attach else scored


def _coviews(key: str, restrict: QuerySet) -> dict[str, int]:
    rows = CoView.objects.filter(
        content_type=product_content_type(),
        object_id=key,
        visitors__gte=imgrec_settings.COVIEW_MIN_VISITORS,
        other_id__in=pk_strings(restrict),
    ).order_by("-visitors").values_list("other_id", "visitors")[:50]
    return dict(rows)


def _dedupe_and_diversify(
    items: list[Recommendation], vecs: dict[str, np.ndarray], query: np.ndarray | None, limit: int
) -> list[Recommendation]:
    """Collapse near-duplicate images, then apply the configured diversity (MMR or category cap)."""
    threshold = float(imgrec_settings.NEAR_DUPLICATE_SIMILARITY)
    kept: list[Recommendation] = []
    for item in items:
        v = vecs.get(item.product_id)
        if v is not None:
            if query is not None and _cos(query, v) >= threshold:
                continue  # the same photo as the product itself
            if any(vecs.get(k.product_id) is not None and _cos(v, vecs[k.product_id]) >= threshold for k in kept):
                continue
        kept.append(item)
    mode = imgrec_settings.DIVERSITY
    if mode == "mmr" and vecs:
        lam = float(imgrec_settings.MMR_LAMBDA)
        chosen: list[Recommendation] = []
        pool = list(kept)
        while pool and len(chosen) < limit:
            def mmr(r: Recommendation) -> float:
                v = vecs.get(r.product_id)
                redundancy = max((_cos(v, vecs[c.product_id]) for c in chosen if v is not None and c.product_id in vecs), default=0.0)
                return lam * r.score - (1 - lam) * redundancy
            best = max(pool, key=mmr)
            pool.remove(best)
            chosen.append(best)
        return chosen
    if mode == "category":
        cap = int(imgrec_settings.CATEGORY_CAP)
        model = get_product_model()
        products = model._default_manager.in_bulk(_pks(r.product_id for r in kept))
        per: dict[Any, int] = {}
        out = []
        for r in kept:
            p = products.get(model._meta.pk.to_python(r.product_id))
            cat = product_category(p) if p is not None else None
            per[cat] = per.get(cat, 0) + 1
            if cat is None or per[cat] <= cap:
                out.append(r)
        return out[:limit]
    return kept[:limit]


# --- recommended for you ---------------------------------------------------------------------------


def _weighted_history(request: HttpRequest) -> list[tuple[str, float]]:
    rows = list(
        history.own_history(request).values_list("object_id", "kind", "created_at")[: imgrec_settings.HISTORY_LENGTH]
    )
    now = timezone.now()
    half_life = float(imgrec_settings.HISTORY_HALF_LIFE_DAYS) * 86400.0
    weights: dict[str, float] = {}
    for obj, kind, created in rows:
        age = max((now - created).total_seconds(), 0.0)
        w = history.KIND_WEIGHTS.get(kind, 1.0) * 0.5 ** (age / half_life)
        weights[obj] = weights.get(obj, 0.0) + w
    return sorted(weights.items(), key=lambda kv: -kv[1])


def interests(vectors: np.ndarray, weights: np.ndarray, *, max_k: int) -> list[tuple[np.ndarray, float, list[int]]]:
    """Cluster a history's vectors into up to ``max_k`` interests (weighted spherical k-means).

    Returns:
        ``(centroid, total weight, member indices)`` per interest, heaviest first.
    """
    n = len(vectors)
    k = max(1, min(max_k, n // 2 if n >= 4 else 1))
    # Deterministic farthest-point seeding from the heaviest item.
    seeds = [int(np.argmax(weights))]
    while len(seeds) < k:
        sims = vectors @ vectors[seeds].T
        seeds.append(int(np.argmin(sims.max(axis=1))))
    centroids = vectors[seeds].copy()
    assign = np.zeros(n, dtype=int)
    for _ in range(10):
        assign = np.argmax(vectors @ centroids.T, axis=1)
        for j in range(k):
            members = assign == j
            if members.any():
                c = (vectors[members] * weights[members, None]).sum(axis=0)
                centroids[j] = c / (np.linalg.norm(c) or 1.0)
    out = []
    for j in range(k):
        members = np.flatnonzero(assign == j)
        if len(members):
            out.append((centroids[j], float(weights[members].sum()), members.tolist()))
    out.sort(key=lambda t: -t[1])
    return out


def recommended_for_you(request: HttpRequest, *, limit: int = 8, attach: bool = True) -> list[Recommendation]:
    """Products for the current visitor, from their own recent history only.

    The history (recency-weighted; cart and purchase weigh more than views) is clustered into a
    few interests; each interest retrieves its nearest products and the lists are interleaved in
    proportion to the interests' weights.  Every item says which viewed product it came from.
    New visitors get a labelled "Trending now" shelf.
    """
    limit = clamp_limit(limit)
    restrict = recommendable_products()
    weighted = _weighted_history(request)
    seen = {obj for obj, _ in weighted} if imgrec_settings.EXCLUDE_SEEN else set()
    serving = serving_model()
    vecs = search.vectors_of([o for o, _ in weighted], model_id=serving.model_id) if (serving and weighted) else {}
    usable = [(o, w) for o, w in weighted if o in vecs]
    if not usable:
        items = _fallback(limit=limit, exclude=seen, restrict=restrict)
        return attach_products(items) if attach else items
    ids = [o for o, _ in usable]
    V = np.stack([vecs[o] for o in ids])
    W = np.array([w for _, w in usable], dtype=np.float32)
    groups = interests(V, W, max_k=int(imgrec_settings.MAX_INTERESTS))
    names = _names(ids)
    total_w = sum(g[1] for g in groups)
    shares = [max(1, math.ceil(limit * weight / total_w)) for _, weight, _ in groups]
    # One pgvector session and one vector fetch for all interests: queries do not grow with
    # the history, only with MAX_INTERESTS.
    with search.hnsw_session(max(shares) + len(seen) + limit):
        raw = [
            search.nearest(
                centroid, model_id=serving.model_id, dim=serving.dimensions,
                limit=share + len(seen) + limit, restrict_to=restrict, exclude_ids=seen, session=False,
            )
            for (centroid, _, _), share in zip(groups, shares)
        ]
    cand_vecs = search.vectors_of({obj for rows in raw for obj, _ in rows}, model_id=serving.model_id)
    lists = []
    for (centroid, weight, members), share, rows in zip(groups, shares, raw):
        member_ids = [ids[m] for m in members]
        member_vecs = V[members]
        items = []
        for obj, sim in rows:
            cv = cand_vecs.get(obj)
            anchor = member_ids[int(np.argmax(member_vecs @ cv))] if cv is not None else member_ids[0]
            items.append(Recommendation(obj, sim * weight / total_w, f"Because you viewed {names.get(anchor, 'a product')}", "for_you:interest", [anchor]))
        lists.append((share, items))
    result: list[Recommendation] = []
    taken: set[str] = set()
    # Weighted round-robin: each interest contributes its share, heaviest first.
    cursors = [0] * len(lists)
    while len(result) < limit and any(cursors[i] < len(lst[1]) for i, lst in enumerate(lists)):
        for i, (share, items) in enumerate(lists):
            added = 0
            while cursors[i] < len(items) and added < share and len(result) < limit:
                item = items[cursors[i]]
                cursors[i] += 1
                if item.product_id not in taken:
                    taken.add(item.product_id)
                    result.append(item)
                    added += 1
    if len(result) < limit:
        result += _fallback(limit=limit - len(result), exclude=seen | taken, restrict=restrict)
    return attach_products(result) if attach else result


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
    from imgrec_app.ml.preprocess import ImageError, load_rgb
    from imgrec_app.services.indexing import load_encoder
    from imgrec_app.services.models import configured_model
    from imgrec_app.validators import validate_product_image
    from django.core.exceptions import ValidationError

    validate_product_image(file)
    serving = serving_model()
    if serving is None:
        raise LookupError("Nothing is indexed yet.")
    ref = configured_model()
    if ref.model_id != serving.model_id:
        raise LookupError("The serving model differs from the configured one; try again after the switch.")
    file.seek(0)
    try:
        img = load_rgb(file.read(), allowed_formats=imgrec_settings.ALLOWED_FORMATS, max_pixels=imgrec_settings.MAX_IMAGE_PIXELS, min_size=256)
    except ImageError as exc:
        raise ValidationError(exc.message, code=exc.code) from exc
    vec = load_encoder(ref).encode([img])[0]
    rows = search.nearest(vec, model_id=serving.model_id, dim=serving.dimensions, limit=clamp_limit(limit), restrict_to=recommendable_products())
    items = [Recommendation(obj, sim, "Looks like your photo", "search:image") for obj, sim in rows]
    return attach_products(items)


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
