"""Recommended for you: the visitor's own history, several sources, one blend.

The shelf is built in named steps, each a function that can be tested alone:

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

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import BinaryField, CharField, Exists, Func, OuterRef, Q, QuerySet
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _

from imgrec_app.conf import DEFAULTS, imgrec_settings
from imgrec_app.hosts import (
    category_field_lookup,
    get_product_model,
    pk_strings,
    product_category,
    product_content_type,
    product_key,
    recommendable_products,
)
from imgrec_app.models import CategoryPrediction, CoView, ProductVector
from imgrec_app.services import history, search
from imgrec_app.services.models import serving_model
from imgrec_app.services.recommend import (
    Recommendation,
    _fallback,
    attach_products,
    clamp_limit,
    trending_scores,
)
from imgrec_app.services.text import text_model

SOURCES = ("interest", "coview", "category")
# The documented defaults (conf.DEFAULTS), measured with ``imgrec_evaluate --foryou-grid``.
DEFAULT_WEIGHTS: dict[str, float] = dict(DEFAULTS["FORYOU_WEIGHTS"])


def foryou_weights() -> dict[str, float]:
    """``FORYOU_WEIGHTS`` with every key present (missing keys: the documented defaults)."""
    value = imgrec_settings.FORYOU_WEIGHTS or {}
    return {k: float(value.get(k, d)) for k, d in DEFAULT_WEIGHTS.items()}


# --- 1. the visitor's profile ------------------------------------------------------------------------


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


def active_models() -> list[tuple[str, str, int]]:
    """``(modality, model_id, dim)`` of the modalities ``SIMILAR_WEIGHTS`` uses, image first."""
    weights = imgrec_settings.SIMILAR_WEIGHTS
    out: list[tuple[str, str, int]] = []
    serving = serving_model()
    if serving is not None and weights.get("image", 1.0):
        out.append(("image", serving.model_id, serving.dimensions))
    tmodel = text_model()
    if tmodel is not None and weights.get("text", 0.0):
        out.append(("text", tmodel[0], tmodel[1]))
    return out


def fetch_vectors(ids: Iterable[str], models: Sequence[tuple[str, str, int]]) -> dict[str, dict[str, np.ndarray]]:
    """Vectors of some products for every modality in one query: ``{modality: {id: vector}}``."""
    out: dict[str, dict[str, np.ndarray]] = {m: {} for m, _, _ in models}
    ids = [str(i) for i in ids]
    if not ids or not models:
        return out
    modality_of = {mid: m for m, mid, _ in models}
    rows = (
        ProductVector.objects.filter(
            content_type=product_content_type(), model_id__in=list(modality_of), object_id__in=ids
        )
        .annotate(_imgrec_binary=Func("vector", function="vector_send", output_field=BinaryField()))
        .values_list("model_id", "object_id", "_imgrec_binary")
    )
    for model_id, obj, data in rows:
        out[modality_of[model_id]][obj] = search._from_binary(data)
    return out


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
    model = get_product_model()
    keys = []
    for i in ids:
        try:
            keys.append(model._meta.pk.to_python(i))
        except Exception:
            continue
    manager = model._default_manager
    spec = imgrec_settings.PRODUCT_CATEGORY
    qs = manager.all()
    if spec and "." not in spec:
        try:
            if model._meta.get_field(spec).is_relation:
                qs = qs.select_related(spec)  # categories and their names without a query each
        except Exception:
            pass
    objects = qs.in_bulk(keys)
    return {product_key(pk): obj for pk, obj in objects.items()}


def load_profile(request: HttpRequest, *, recency: float) -> Profile:
    """The visitor's weighted history with vectors, categories and names (3–4 queries, any length)."""
    weighted = weighted_history(request, recency=recency)
    ids = [o for o, _ in weighted]
    models = active_models() if ids else []
    vectors = fetch_vectors(ids, models)
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


# --- 2. candidates from every source -----------------------------------------------------------------


@dataclass
class Interest:
    """One cluster of the history: its members, weight share and query vector per modality."""

    members: list[str]
    share: float
    centroids: dict[str, np.ndarray]


@dataclass
class Candidates:
    """Candidate ids found by each source, with the raw values the sources gave."""

    interests: list[Interest]
    by_source: dict[str, set[str]]
    coview: dict[str, float]  # candidate -> history-weighted co-view count
    coview_anchor: dict[str, str]  # candidate -> the history product it was most viewed with
    popularity: dict[str, float]  # candidate -> trending score
    categories: list[tuple[str, float]]  # the visitor's categories and their shares

    def all(self) -> list[str]:
        return sorted(set().union(*self.by_source.values()))


def cluster(vectors: np.ndarray, weights: np.ndarray, *, max_k: int) -> list[tuple[np.ndarray, float, list[int]]]:
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
    for _round in range(10):
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


def find_interests(profile: Profile) -> list[Interest]:
    """The profile's interests, with a unit query vector per modality (weighted member mean)."""
    ids = profile.usable
    primary = profile.primary
    if not ids or primary is None:
        return []
    V = np.stack([profile.vectors[primary][i] for i in ids])
    W = np.array([profile.weights[i] for i in ids], dtype=np.float32)
    groups = cluster(V, W, max_k=int(imgrec_settings.MAX_INTERESTS))
    total = sum(g[1] for g in groups) or 1.0
    out = []
    for _centroid, weight, members in groups:
        member_ids = [ids[m] for m in members]
        centroids = {}
        for modality, _model_id, _dim in profile.models:
            vecs = [
                profile.vectors[modality][i] * profile.weights[i] for i in member_ids if i in profile.vectors[modality]
            ]
            if vecs:
                c = np.sum(vecs, axis=0)
                centroids[modality] = c / (np.linalg.norm(c) or 1.0)
        out.append(Interest(member_ids, weight / total, centroids))
    return out


def visitor_categories(profile: Profile) -> list[tuple[str, float]]:
    """The categories of the history with their weight shares, heaviest first (at most MAX_INTERESTS)."""
    totals: defaultdict[str, float] = defaultdict(float)
    for i in profile.ids:
        cat = profile.categories.get(i)
        if cat is not None:
            totals[cat] += profile.weights[i]
    total = sum(totals.values()) or 1.0
    top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: int(imgrec_settings.MAX_INTERESTS)]
    return [(c, w / total) for c, w in top]


def _interest_neighbours(
    interests: list[Interest], profile: Profile, *, n: int, restrict: QuerySet, exclude: list[str]
) -> set[str]:
    """k-NN around each interest: one round trip per interest and modality (pgvector's settings
    travel with the query, see :func:`search.nearest`)."""
    found: set[str] = set()
    dims = {m: (mid, dim) for m, mid, dim in profile.models}
    for interest in interests:
        for modality, vector in interest.centroids.items():
            mid, dim = dims[modality]
            rows = search.nearest(vector, model_id=mid, dim=dim, limit=n, restrict_to=restrict, exclude_ids=exclude)
            found.update(obj for obj, _ in rows)
    return found


def _viewed_together(
    profile: Profile, *, restrict: QuerySet, exclude: set[str], limit: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Products viewed together with the history (one query), weighted by the history's weights."""
    rows = (
        CoView.objects.filter(
            content_type=product_content_type(),
            object_id__in=profile.ids,
            visitors__gte=imgrec_settings.COVIEW_MIN_VISITORS,
            other_id__in=pk_strings(restrict),
        )
        .exclude(other_id__in=list(exclude))
        .order_by("-visitors")
        .values_list("object_id", "other_id", "visitors")[: limit * 10]
    )
    strength: dict[str, float] = defaultdict(float)
    best: dict[str, tuple[float, str]] = {}
    for obj, other, visitors in rows:
        s = profile.weights.get(obj, 0.0) * visitors
        strength[other] += s
        if other not in best or s > best[other][0]:
            best[other] = (s, obj)
    return dict(strength), {o: a for o, (_, a) in best.items()}


def _popular_in(
    categories: list[tuple[str, float]], *, restrict: QuerySet, exclude: set[str], limit: int
) -> dict[str, float]:
    """The trending products of each of the visitor's categories (one query per category)."""
    lookup = category_field_lookup()
    out: dict[str, float] = {}
    for cat, _share in categories:
        if lookup is not None:
            predicted = CategoryPrediction.objects.filter(
                content_type=product_content_type(), category=cat, object_id=Cast(OuterRef("pk"), CharField())
            )
            in_cat = restrict.filter(Q(**{lookup: cat}) | Q(Exists(predicted), **{f"{lookup}__isnull": True}))
        else:  # a callable category: the trending products of the shop, sorted out in score()
            in_cat = restrict
        out.update(trending_scores(restrict_to=in_cat, limit=limit, exclude=exclude))
    return out


def retrieve(
    profile: Profile, *, limit: int, restrict: QuerySet, exclude: set[str], weights: dict[str, float]
) -> Candidates:
    """Candidates of every source whose weight is not zero (``exclude`` applied inside the queries).

    Interests: one k-NN per interest and modality (``limit`` + a share of slots each); viewed
    together: one query; popularity: one query per visitor category (at most ``MAX_INTERESTS``).
    """
    interests = find_interests(profile)
    by_source: dict[str, set[str]] = {s: set() for s in SOURCES}
    n = limit + math.ceil(limit / max(1, len(interests)))
    if interests and weights["interest"]:
        by_source["interest"] = _interest_neighbours(
            interests, profile, n=n, restrict=restrict, exclude=sorted(exclude)
        )
    coview: dict[str, float] = {}
    anchors: dict[str, str] = {}
    if weights["coview"] and profile.ids:
        coview, anchors = _viewed_together(profile, restrict=restrict, exclude=exclude, limit=limit)
        by_source["coview"] = set(coview)
    categories = visitor_categories(profile)
    popularity: dict[str, float] = {}
    if weights["category"] and categories:
        popularity = _popular_in(categories, restrict=restrict, exclude=exclude, limit=2 * limit)
        by_source["category"] = set(popularity)
    return Candidates(interests, by_source, coview, anchors, popularity, categories)


# --- 3. score, 4. blend --------------------------------------------------------------------------------


@dataclass
class Scored:
    """One candidate: its features (each in [0, 1]), its score for each interest, and the result.

    ``sims[g]`` is the similarity to interest g; ``features`` holds the co-view and category
    features and, once the item is placed, the interest similarity it was placed with.
    """

    product_id: str
    sims: list[float]
    features: dict[str, float]
    category: str | None = None
    scores: list[float] = field(default_factory=list)
    score: float = 0.0
    interest: int = 0


def score(
    candidates: Candidates, profile: Profile, products: dict[str, Any], vectors: dict[str, dict[str, np.ndarray]]
) -> list[Scored]:
    """Features of every candidate: interest similarity, co-view strength, in-category popularity.

    * interest: the fused (``SIMILAR_WEIGHTS`` image/text) cosine to each interest, exact, for
      candidates of every source (0 when negative);
    * coview: history-weighted co-view count ÷ the strongest candidate's;
    * category: trending score ÷ the category's top score × the category's share of the history,
      0 outside the visitor's categories.
    """
    mod_weights = imgrec_settings.SIMILAR_WEIGHTS
    active = [m for m, _, _ in profile.models]
    total_w = sum(float(mod_weights.get(m, 0.0)) for m in active) or 1.0
    cats = categories_of(products)
    share: dict[str | None, float] = dict(candidates.categories)
    top_pop: dict[str | None, float] = defaultdict(float)
    for obj, pop in candidates.popularity.items():
        top_pop[cats.get(obj)] = max(top_pop[cats.get(obj)], pop)
    max_cov = max(candidates.coview.values(), default=0.0) or 1.0
    out = []
    for obj in candidates.all():
        if obj not in products:
            continue
        sims = []
        for interest in candidates.interests:
            s = 0.0
            for modality in active:
                v = vectors.get(modality, {}).get(obj)
                c = interest.centroids.get(modality)
                if v is not None and c is not None:
                    s += float(mod_weights.get(modality, 0.0)) * float(np.dot(v, c))
            sims.append(max(0.0, s / total_w))
        cat = cats.get(obj)
        pop = candidates.popularity.get(obj, 0.0)
        features = {
            "interest": max(sims, default=0.0),
            "coview": candidates.coview.get(obj, 0.0) / max_cov,
            "category": (pop / top_pop[cat]) * share.get(cat, 0.0) if pop and top_pop[cat] else 0.0,
        }
        out.append(Scored(obj, sims, features, category=cat))
    return out


def blend(scored: list[Scored], weights: dict[str, float]) -> list[Scored]:
    """Each candidate's score for each interest: the weighted sum of its features, best first.

    score_g = w_interest × sim_g + w_coview × coview + w_category × category; the candidate's
    score is its best score_g (ties: product id).  Candidates scoring 0 are dropped.
    """
    for s in scored:
        rest = weights["coview"] * s.features["coview"] + weights["category"] * s.features["category"]
        s.scores = [weights["interest"] * sim + rest for sim in s.sims] or [rest]
        s.interest = int(np.argmax(s.scores))
        s.score = s.scores[s.interest]
    # A candidate that no weighted source supports is not recommended (the fallback fills up).
    scored = [s for s in scored if s.score > 0]
    scored.sort(key=lambda s: (-s.score, s.product_id))
    return scored


# --- 5. diversify ----------------------------------------------------------------------------------------


def diversify(
    ranked: list[Scored], interests: list[Interest], vectors: dict[str, np.ndarray], *, limit: int
) -> list[Scored]:
    """Share the slots by the interests' weights (heaviest first, round robin); collapse near-duplicates.

    Each interest takes its share of slots from its own ranking (score for that interest); a
    product goes to the first interest that takes it.  When an interest runs out, the others fill in.
    """
    threshold = float(imgrec_settings.NEAR_DUPLICATE_SIMILARITY)
    n_groups = max(1, len(interests))
    rankings = [
        # sorted() runs within each iteration: the key always sees that iteration's g.
        sorted(ranked, key=lambda s: (-s.scores[min(g, len(s.scores) - 1)], s.product_id))  # noqa: B023
        for g in range(n_groups)
    ]
    shares = [max(1, math.ceil(limit * i.share)) for i in interests] or [limit]
    cursors = [0] * n_groups
    chosen: list[Scored] = []
    taken: set[str] = set()

    def duplicate(s: Scored) -> bool:
        v = vectors.get(s.product_id)
        return v is not None and any(
            c.product_id in vectors and float(np.dot(v, vectors[c.product_id])) >= threshold for c in chosen
        )

    while len(chosen) < limit and any(cursors[g] < len(rankings[g]) for g in range(n_groups)):
        for g in range(n_groups):
            added = 0
            while cursors[g] < len(rankings[g]) and added < shares[g] and len(chosen) < limit:
                s = rankings[g][cursors[g]]
                cursors[g] += 1
                if s.product_id in taken:
                    continue
                taken.add(s.product_id)
                if duplicate(s):
                    continue
                if s.sims:
                    s.interest = min(g, len(s.sims) - 1)
                    s.features["interest"] = s.sims[s.interest]
                    s.score = s.scores[s.interest]
                chosen.append(s)
                added += 1
    return chosen


# --- 6. explain -------------------------------------------------------------------------------------------


def explain(
    chosen: list[Scored],
    candidates: Candidates,
    profile: Profile,
    weights: dict[str, float],
    *,
    current: str | None,
    vectors: dict[str, np.ndarray],
    category_names: dict[str, str],
) -> list[Recommendation]:
    """Shelf items with the reason of the source that contributed most.

    Interest: "Because you viewed <the most similar product of that interest>"; co-view: "Often
    viewed with <history product>"; category: "Popular in <category>".  The product the visitor
    is looking at (``current``) is never named: the next closest history product is, or a
    generic reason when there is none.
    """
    items = []
    for s in chosen:
        contributions = {src: weights[src] * s.features[src] for src in SOURCES}
        source = max(SOURCES, key=lambda src: contributions[src])
        anchor = None
        if source == "interest":
            anchor = _interest_anchor(s, candidates, profile, current=current, vector=vectors.get(s.product_id))
            reason = (
                _("Because you viewed %(name)s") % {"name": profile.names.get(anchor, _("a product"))}
                if anchor
                else _("Based on your browsing")
            )
        elif source == "coview":
            anchor = candidates.coview_anchor.get(s.product_id)
            if anchor is None or anchor == current:
                anchor = None
                reason = _("Often viewed together")
            else:
                reason = _("Often viewed with %(name)s") % {"name": profile.names.get(anchor, _("a product"))}
        else:
            key = s.category or ""
            name = category_names.get(key) or profile.category_names.get(key) or str(s.category)
            reason = _("Popular in %(category)s") % {"category": name}
        items.append(Recommendation(s.product_id, s.score, reason, f"for_you:{source}", [anchor] if anchor else []))
    return items


def _interest_anchor(
    s: Scored, candidates: Candidates, profile: Profile, *, current: str | None, vector: np.ndarray | None
) -> str | None:
    """The history product closest to the item, from its interest first, never ``current``."""
    members: list[str] = []
    if candidates.interests:
        members = [m for m in candidates.interests[s.interest].members if m != current]
    if not members:
        members = [m for m in profile.usable if m != current]
    if not members:
        return None
    primary = profile.primary
    if vector is None or primary is None:
        return members[0]
    return max(members, key=lambda m: float(np.dot(profile.vectors[primary][m], vector)))


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
