"""Recommended for you: the visitor's own history, several sources, one blend.

The shelf is built in named steps, each a function that can be tested alone (steps 1:
:mod:`~imgrec_app.services.foryou_profile`, 2–3: :mod:`~imgrec_app.services.foryou_sources`,
4–6: :mod:`~imgrec_app.services.foryou_blend`; every name stays importable from here):

1. :func:`load_profile` — the visitor's recent history (recency-weighted; cart and purchase weigh
   more than views), the vectors of those products (one fetch for every modality) and their
   categories (the shop's, or the classifier's prediction when a product has none).
2. :func:`retrieve` — candidates from every source: k-NN around each *interest* (a cluster of the
   history, image + text centroids), products *viewed together* with the history, and the
   *popular* products of the categories the visitor looks at.
3. :func:`score` — one exact similarity of every candidate to every interest (one vector fetch),
   the co-view strength and the popularity inside the candidate's category, as numbers in [0, 1].
4. :func:`blend` — the weighted sum with ``FORYOU_WEIGHTS``; each candidate goes to its nearest
   interest.
5. :func:`diversify` — slots shared by the interests' weights (several interests are not averaged
   away), near-duplicate photos collapsed.
6. :func:`explain` — a reason per item from the source that contributed most; it never names the
   product the visitor is looking at.

On a product page the shelf is told the current ``product`` and the ids already on its "similar
products" shelf: those are left out, so the two shelves never repeat each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import QuerySet
from django.http import HttpRequest

from imgrec_app.conf import DEFAULTS, imgrec_settings
from imgrec_app.hosts import product_key, recommendable_products
from imgrec_app.services.foryou_blend import blend, diversify, explain
from imgrec_app.services.foryou_profile import (
    Profile,
    categories_of,
    category_label,
    fetch_vectors,
    load_profile,
    products_by_key,
    weighted_history,
)
from imgrec_app.services.foryou_sources import (
    POPULARITY_EVIDENCE_VIEWS,
    SOURCES,
    Candidates,
    Interest,
    Scored,
    category_probabilities,
    cluster,
    find_interests,
    retrieve,
    score,
    visitor_categories,
)
from imgrec_app.services.recommend import Recommendation, _fallback, active_models, attach_products, clamp_limit

__all__ = [
    "DEFAULT_WEIGHTS",
    "POPULARITY_EVIDENCE_VIEWS",
    "SOURCES",
    "Candidates",
    "Interest",
    "Pool",
    "Profile",
    "Scored",
    "active_models",
    "blend",
    "categories_of",
    "category_probabilities",
    "category_label",
    "cluster",
    "diversify",
    "explain",
    "fetch_vectors",
    "find_interests",
    "for_product_page",
    "foryou_weights",
    "gather",
    "load_profile",
    "page_exclusions",
    "products_by_key",
    "rank",
    "recommended_for_you",
    "retrieve",
    "score",
    "similar_for_page",
    "visitor_categories",
    "weighted_history",
]

# The documented defaults (conf.DEFAULTS), measured with ``imgrec_evaluate --foryou-grid``.
DEFAULT_WEIGHTS: dict[str, float] = dict(DEFAULTS["FORYOU_WEIGHTS"])


def foryou_weights() -> dict[str, float]:
    """``FORYOU_WEIGHTS`` with every key present (missing keys: the documented defaults)."""
    value = imgrec_settings.FORYOU_WEIGHTS or {}
    return {k: float(value.get(k, d)) for k, d in DEFAULT_WEIGHTS.items()}


# --- the shelf ----------------------------------------------------------------------------------------------


@dataclass
class Pool:
    """Everything the shelf is ranked from: the profile, the candidates and their features.

    Built once per request by :func:`gather`; :func:`rank` turns it into a shelf for given weights
    (the evaluation's grid ranks one pool with many weights).
    """

    profile: Profile
    candidates: Candidates | None
    scored: list[Scored]
    products: dict[str, Any]
    vectors: dict[str, np.ndarray]  # primary-modality vectors of the candidates
    excluded: set[str]
    current: str | None


def gather(
    request: HttpRequest,
    *,
    limit: int,
    weights: dict[str, float],
    product: Any = None,
    exclude: Iterable[str] = (),
    restrict: QuerySet | None = None,
) -> Pool:
    """Steps 1–3: the visitor's profile, the candidates of the sources ``weights`` turn on, their features."""
    restrict = recommendable_products() if restrict is None else restrict
    profile = load_profile(request, recency=weights["recency"])
    current = product_key(product) if product is not None else None
    skip = {str(e) for e in exclude} | ({current} if current else set())
    seen = set(profile.weights) if imgrec_settings.EXCLUDE_SEEN else set()
    excluded = seen | skip
    if not profile.ids:
        return Pool(profile, None, [], {}, {}, excluded, current)
    candidates = retrieve(profile, limit=limit, restrict=restrict, exclude=excluded, weights=weights)
    ids = candidates.all()
    products = products_by_key(ids)
    vectors = fetch_vectors(ids, profile.models)
    scored = score(candidates, profile, products, vectors)
    return Pool(profile, candidates, scored, products, vectors.get(profile.primary or "", {}), excluded, current)


def rank(pool: Pool, weights: dict[str, float], *, limit: int) -> list[Recommendation]:
    """Steps 4–6: blend, diversify, explain (no query)."""
    if pool.candidates is None or not pool.scored:
        return []
    scored = [Scored(s.product_id, s.sims, dict(s.features), s.category) for s in pool.scored]
    chosen = diversify(blend(scored, weights), pool.candidates.interests, pool.vectors, limit=limit)
    names = {s.category: category_label(pool.products[s.product_id], s.category) for s in chosen if s.category}
    return explain(
        chosen,
        pool.candidates,
        pool.profile,
        weights,
        current=pool.current,
        vectors=pool.vectors,
        category_names=names,
    )


def recommended_for_you(
    request: HttpRequest,
    *,
    limit: int = 8,
    attach: bool = True,
    product: Any = None,
    exclude: Iterable[str] = (),
    weights: dict[str, float] | None = None,
) -> list[Recommendation]:
    """Products for the current visitor, from their own recent history only.

    Args:
        request: carries the visitor (user or anonymous session).
        limit: shelf size (bounded by ``MAX_LIMIT``).
        attach: fetch the host products (``item.product``).
        product: the product the visitor is looking at (a product page): left out, never named
            in a reason.
        exclude: more product ids to leave out, e.g. the page's "similar products" shelf.
        weights: ``FORYOU_WEIGHTS`` for this call (default: the setting).

    Returns:
        Up to ``limit`` items, best first, each with a reason; a labelled fallback ("Trending
        now", "New in the shop") for a new visitor or to fill the shelf.
    """
    limit = clamp_limit(limit)
    weights = {**foryou_weights(), **(weights or {})}
    restrict = recommendable_products()
    pool = gather(request, limit=limit, weights=weights, product=product, exclude=exclude, restrict=restrict)
    items = rank(pool, weights, limit=limit)
    if len(items) < limit:
        more = _fallback(
            limit=limit - len(items), exclude=pool.excluded | {i.product_id for i in items}, restrict=restrict
        )
        items += attach_products(more) if attach else more
    if attach:
        for item in items:
            if item.product is None:
                item.product = pool.products.get(item.product_id)
        items = [i for i in items if i.product is not None]
    return items


# --- one product page: the similar shelf, computed once per request ----------------------------------------

_PAGE_ATTR = "_imgrec_similar_shelves"


def similar_for_page(
    request: HttpRequest | None, product: Any, *, limit: int = 8, same_category: bool = False
) -> list[Recommendation]:
    """The product's "similar products" shelf, computed at most once per request and argument set.

    The similar-shelf tag and the for-you shelf of the same page share it: the personal shelf
    leaves these items out without a second k-NN.
    """
    from imgrec_app.services.recommend import similar_products

    memo = getattr(request, _PAGE_ATTR, None) if request is not None else None
    key = (product_key(product), clamp_limit(limit), bool(same_category))
    if memo is not None and key in memo:
        return memo[key]
    items = similar_products(product, limit=limit, same_category=same_category)
    if request is not None:
        if memo is None:
            memo = {}
            setattr(request, _PAGE_ATTR, memo)
        memo[key] = items
    return items


def page_exclusions(request: HttpRequest | None, product: Any, *, limit: int = 8) -> set[str]:
    """Ids on the product's similar shelf(s) of this request; the shelf is computed if none was yet."""
    key = product_key(product)
    memo = getattr(request, _PAGE_ATTR, None) if request is not None else None
    shelves = [items for (pid, _, _), items in (memo or {}).items() if pid == key]
    if not shelves:
        shelves = [similar_for_page(request, product, limit=limit)]
    return {i.product_id for items in shelves for i in items}


def for_product_page(
    request: HttpRequest, product: Any, *, limit: int = 8, similar_limit: int = 8, attach: bool = True
) -> list[Recommendation]:
    """The personal shelf of a product page: without the product and its similar shelf's items."""
    exclude = page_exclusions(request, product, limit=similar_limit)
    return recommended_for_you(request, limit=limit, attach=attach, product=product, exclude=exclude)
