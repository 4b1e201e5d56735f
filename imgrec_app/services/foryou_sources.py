"""Recommended for you, steps 2–3: candidates from every source, and their features in [0, 1].

Sources: k-NN around each *interest* (a cluster of the history), products *viewed together* with
the history, and the *popular* products of the categories the visitor looks at.  See
:mod:`imgrec_app.services.foryou` for the whole shelf.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db.models import CharField, F, FloatField, OuterRef, QuerySet, Subquery, Sum, Window
from django.db.models.functions import Cast, Coalesce, RowNumber

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import category_field_lookup, pk_strings, product_content_type
from imgrec_app.models import CategoryPrediction, CoView
from imgrec_app.services import search
from imgrec_app.services.foryou_profile import Profile, categories_of
from imgrec_app.services.recommend import recent_interactions, trending_scores

SOURCES = ("interest", "coview", "category")


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
    # category -> trending score summed over its products the visitor has not seen (plain-field
    # categories; a callable category is summed over the candidates in score())
    category_mass: dict[str, float] = field(default_factory=dict)

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


def find_interests(profile: Profile) -> list[Interest]:
    """The profile's interests, with a unit query vector per modality (weighted member mean)."""
    ids = profile.usable
    if not ids:
        return []
    primary = profile.primary
    assert primary is not None  # ids are profile.usable: there is a primary modality
    V = np.stack([profile.vectors[primary][i] for i in ids])
    W = np.array([profile.weights[i] for i in ids], dtype=np.float32)
    groups = cluster(V, W, max_k=int(imgrec_settings.MAX_INTERESTS))
    total = sum(g[1] for g in groups) or 1.0
    out = []
    for _, weight, members in groups:
        member_ids = [ids[m] for m in members]
        centroids = {}
        for modality, _, _ in profile.models:
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
    totals: dict[str, float] = {}
    for i in profile.ids:
        cat = profile.categories.get(i)
        if cat is not None:
            totals[cat] = totals.get(cat, 0.0) + profile.weights[i]
    total = sum(totals.values()) or 1.0
    top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: int(imgrec_settings.MAX_INTERESTS)]
    return [(c, w / total) for c, w in top]


def _interest_neighbours(
    interests: list[Interest], profile: Profile, *, n: int, restrict: QuerySet, exclude: list[str]
) -> set[str]:
    """k-NN around each interest, for every modality: **one statement** (a ``UNION ALL`` of one
    ``ORDER BY distance LIMIT n`` branch per interest and modality, each walking its model's HNSW
    index with the shop's rules inside, pgvector's settings in the same round trip, see
    :func:`search.run_knn_statement`).  The same ids as :func:`search.nearest` per branch
    (tests/test_foryou.py compares them)."""
    dims = {m: (mid, dim) for m, mid, dim in profile.models}
    branches: list[str] = []
    params: list[Any] = []
    for interest in interests:
        for modality, vector in interest.centroids.items():
            mid, dim = dims[modality]
            qs = search.nearest_query(vector, model_id=mid, dim=dim, limit=n, restrict_to=restrict, exclude_ids=exclude)
            try:
                sql, p = qs.query.get_compiler(using=qs.db).as_sql()
            except EmptyResultSet:
                continue
            branches.append(f"({sql})")
            params.extend(p)
    if not branches:
        return set()
    rows = search.run_knn_statement(" UNION ALL ".join(branches), params, limit=n)
    return {obj for obj, _ in rows}


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
) -> tuple[dict[str, float], dict[str, float]]:
    """The trending products of each of the visitor's categories, and each category's total
    popularity over the products the visitor has not seen: **one statement** for every category.

    A product's category is the shop's field, else the classifier's prediction (as
    :func:`~imgrec_app.services.foryou_profile.categories_of` reads it); its popularity is
    :func:`~imgrec_app.services.recommend.trending_scores`' time-decayed sum; per category, a window
    function numbers the products by popularity (ties by id, as ``trending_scores`` orders them)
    and sums the category's popularity before the top ``limit`` are kept.  The same result as
    ``trending_scores`` + ``trending_mass`` per category (tests/test_foryou.py compares them).

    Returns:
        ``({candidate: trending score}, {category: total})``; no totals for a callable category.
    """
    lookup = category_field_lookup()
    if lookup is None:  # a callable category: the trending products of the shop, sorted out in score()
        return dict(trending_scores(restrict_to=restrict, limit=limit * len(categories), exclude=exclude)), {}
    if not categories:
        return {}, {}
    ct = product_content_type()
    predicted = CategoryPrediction.objects.filter(content_type=ct, object_id=Cast(OuterRef("pk"), CharField())).values(
        "category"
    )[:1]
    recent, decay = recent_interactions(restrict_to=None, exclude=())
    score_of = (
        recent.filter(object_id=OuterRef("_imgrec_key")).values("object_id").annotate(score=Sum(decay)).values("score")
    )
    by_category = Window(
        RowNumber(), partition_by=F("_imgrec_cat"), order_by=[F("_imgrec_score").desc(), F("_imgrec_key").asc()]
    )
    rows = (
        restrict.order_by()
        .annotate(
            _imgrec_key=Cast("pk", CharField()),
            _imgrec_cat=Coalesce(Cast(lookup, CharField()), Subquery(predicted)),
        )
        .filter(_imgrec_cat__in=[c for c, _ in categories])
        .exclude(_imgrec_key__in=sorted(exclude))
        .annotate(_imgrec_score=Subquery(score_of, output_field=FloatField()))
        .filter(_imgrec_score__isnull=False)
        .annotate(
            _imgrec_rank=by_category,
            _imgrec_mass=Window(Sum("_imgrec_score"), partition_by=F("_imgrec_cat")),
        )
        .filter(_imgrec_rank__lte=limit)
        .values_list("_imgrec_key", "_imgrec_cat", "_imgrec_score", "_imgrec_mass")
    )
    out: dict[str, float] = {}
    mass: dict[str, float] = {}
    for key, cat, pop, total in rows:
        out[key] = float(pop)
        mass[cat] = float(total)
    return out, mass


def retrieve(
    profile: Profile, *, limit: int, restrict: QuerySet, exclude: set[str], weights: dict[str, float]
) -> Candidates:
    """Candidates of every source whose weight is not zero (``exclude`` applied inside the queries).

    Interests: one k-NN per interest and modality (``limit`` + a share of slots each); viewed
    together: one query; popularity: one query for every visitor category (at most ``MAX_INTERESTS``).
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
    mass: dict[str, float] = {}
    if weights["category"] and categories:
        popularity, mass = _popular_in(categories, restrict=restrict, exclude=exclude, limit=2 * limit)
        by_source["category"] = set(popularity)
    return Candidates(interests, by_source, coview, anchors, popularity, categories, mass)


# --- features -----------------------------------------------------------------------------------------


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


# A category's popularity counts fully once this many (time-decayed) views of the products the
# visitor has not seen back it; below, the category source weighs mass / (mass + this): in a new or
# small shop a handful of views does not make a bestseller.
POPULARITY_EVIDENCE_VIEWS = 5.0


def category_probabilities(candidates: Candidates, cats: dict[str, str | None]) -> dict[str, float]:
    """The category source's feature: how likely the visitor's next view is each candidate.

    P(next = i) = share(category of i) × popularity(i) ÷ the category's popularity over the
    products the visitor has not seen (a shopper who picks one of their categories, then a product
    by popularity among those not seen yet), ÷ the largest over the candidates, × the evidence
    of the category (``mass / (mass + POPULARITY_EVIDENCE_VIEWS)``).  0 outside the visitor's
    categories.  Probabilities, not per-category ranks: a category with one bestseller and a long
    tail gives its second product less than a category whose top products are even.
    """
    share = dict(candidates.categories)
    mass: dict[str, float] = dict(candidates.category_mass)
    if not mass:  # callable categories: summed over the candidates found
        for obj, pop in candidates.popularity.items():
            cat = cats.get(obj)
            if cat in share:
                mass[cat] = mass.get(cat, 0.0) + pop
    raw: dict[str, float] = {}
    for obj, pop in candidates.popularity.items():
        cat = cats.get(obj)
        if pop > 0 and cat in share and mass.get(cat, 0.0) > 0:
            raw[obj] = share[cat] * pop / mass[cat]
    top = max(raw.values(), default=0.0)
    if not top:
        return {}
    evidence = {c: m / (m + POPULARITY_EVIDENCE_VIEWS) for c, m in mass.items()}
    return {obj: p / top * evidence[cats[obj]] for obj, p in raw.items()}  # type: ignore[index]


def score(
    candidates: Candidates, profile: Profile, products: dict[str, Any], vectors: dict[str, dict[str, np.ndarray]]
) -> list[Scored]:
    """Features of every candidate: interest similarity, co-view strength, in-category popularity.

    * interest: the fused (``SIMILAR_WEIGHTS`` image/text) cosine to each interest, exact, for
      candidates of every source (0 when negative);
    * coview: history-weighted co-view count ÷ the strongest candidate's;
    * category: :func:`category_probabilities`.
    """
    mod_weights = imgrec_settings.SIMILAR_WEIGHTS
    active = [m for m, _, _ in profile.models]
    total_w = sum(float(mod_weights.get(m, 0.0)) for m in active) or 1.0
    cats = categories_of(products)
    category = category_probabilities(candidates, cats)
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
        features = {
            "interest": max(sims, default=0.0),
            "coview": candidates.coview.get(obj, 0.0) / max_cov,
            "category": category.get(obj, 0.0),
        }
        out.append(Scored(obj, sims, features, category=cats.get(obj)))
    return out
