"""Shared parts of the offline evaluation: options, the catalogue as it sees it, metrics, baselines.

Split out of :mod:`imgrec_app.services.evaluation` (which re-exports everything here).
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from django.core.exceptions import FieldDoesNotExist
from django.db import transaction

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    get_product_model,
    product_category,
    product_content_type,
    product_key,
    recommendable_products,
)
from imgrec_app.models import ProductVector
from imgrec_app.services import recommend
from imgrec_app.services.models import serving_model
from imgrec_app.services.text import text_model

T = TypeVar("T")
Progress = Callable[[Iterable[T], str, int], Iterable[T]]

IMAGE_ONLY = {"image": 1.0, "text": 0.0, "coview": 0.0}
GRID_TEXT = (0.0, 0.25, 0.5, 1.0)
GRID_COVIEW = (0.0, 0.3)
# Enough real history to evaluate on it instead of simulated shoppers.
MIN_REAL_VISITORS = 50
MIN_REAL_EVENTS = 3
# Simulated shoppers: share of views in their preferred categories (the rest explores).
PREFERRED_SHARE = 0.85
HELD_OUT_SHARE = 0.2
SHOPPER_MODELS = ("category", "taste")

METHOD_LABELS = {
    "configured": "imgrec, your SIMILAR_WEIGHTS",
    "image_only": "imgrec, image-only cosine",
    "for_you": "imgrec recommended for you",
    "random": "Random products",
    "popular": "Most popular (trending shelf)",
    "category_popular": "Most popular in the same category",
}


class EvaluationError(ValueError):
    """The shop cannot be evaluated yet (nothing indexed, no categories, ...)."""


@dataclass(frozen=True)
class EvaluationOptions:
    """What to evaluate and how much of it.

    Attributes:
        k: shelf size the metrics look at (precision@k, hit rate@k, NDCG@k).
        sample: products queried for "similar products" and real visitors evaluated for
            "recommended for you" (None: all of them).
        seed: seed of every random choice (samples, random baseline, simulated shoppers).
        simulated_shoppers: shoppers simulated when the real history is too thin (0: none).
        events_per_shopper: products each simulated shopper browses (the last 20 % held out).
        folds: k of the classifier's cross-validation.
        grid: also measure precision@k over a grid of ``SIMILAR_WEIGHTS``.
        foryou_grid: also measure for-you hit rate@k over a grid of ``FORYOU_WEIGHTS``.
        shopper_model: the simulated shoppers: ``"category"`` (category + popularity, the default)
            or ``"taste"`` (also a colour and a latent style, :mod:`~imgrec_app.services.evaluation_taste`).
        background_shoppers: more simulated shoppers of the same model whose whole browsing is
            written first and never evaluated (the shop's other traffic: popularity, co-views).
    """

    k: int = 10
    sample: int | None = 200
    seed: int = 0
    simulated_shoppers: int = 200
    events_per_shopper: int = 10
    folds: int = 5
    grid: bool = False
    foryou_grid: bool = False
    tuning: bool = True
    shopper_model: str = "category"
    background_shoppers: int = 0


def _identity(items: Iterable[T], desc: str, total: int) -> Iterable[T]:
    return items


# --- the catalogue as the evaluation sees it -------------------------------------------------------


@dataclass
class Catalogue:
    """Every product's category, which products may be shown, and which have vectors."""

    category: dict[str, str | None]
    category_names: dict[str, str]
    recommendable: list[str]  # newest first: the order of the shop's "New in the shop" fallback
    indexed: list[str]
    text_indexed: set[str]
    image_model: tuple[str, int]

    def name(self, category: str | None) -> str:
        return "(none)" if category is None else self.category_names.get(category, category)


def load_catalogue() -> Catalogue:
    """Read categories, the shop's rules and the indexed products (one pass over products).

    Raises:
        EvaluationError: when nothing is indexed or the shop has no categories.
    """
    serving = serving_model()
    if serving is None:
        raise EvaluationError("Nothing is indexed yet: run `manage.py imgrec_reindex --missing` first.")
    spec = imgrec_settings.PRODUCT_CATEGORY
    if not spec:
        raise EvaluationError(
            'IMGREC["PRODUCT_CATEGORY"] is not set: the evaluation measures shelves against the shop\'s categories.'
        )
    model = get_product_model()
    related = None
    if "." not in spec:
        try:
            related = spec if model._meta.get_field(spec).is_relation else None
        except FieldDoesNotExist:
            related = None
    qs = model._default_manager.all()
    if related:
        qs = qs.select_related(related)
    category: dict[str, str | None] = {}
    names: dict[str, str] = {}
    for product in qs.iterator(chunk_size=2000):
        key = product_category(product)
        category[product_key(product)] = key
        if key is not None and key not in names:
            names[key] = str(getattr(product, related)) if related else key
    if not any(c is not None for c in category.values()):
        raise EvaluationError("No product has a category: nothing to measure shelves against.")
    ct = product_content_type()
    recommendable = [product_key(pk) for pk in recommendable_products().order_by("-pk").values_list("pk", flat=True)]
    indexed = list(
        ProductVector.objects.filter(content_type=ct, model_id=serving.model_id).values_list("object_id", flat=True)
    )
    tmodel = text_model()
    text_indexed = (
        set(ProductVector.objects.filter(content_type=ct, model_id=tmodel[0]).values_list("object_id", flat=True))
        if tmodel
        else set()
    )
    return Catalogue(
        category=category,
        category_names=names,
        recommendable=recommendable,
        indexed=[i for i in indexed if i in category],
        text_indexed=text_indexed,
        image_model=(serving.model_id, serving.dimensions),
    )


# --- metrics ---------------------------------------------------------------------------------------


def precision_curve(relevant: Sequence[bool], k: int) -> list[float]:
    """precision@1..k of one ranked list (missing slots count as not relevant)."""
    hits = 0
    out = []
    for j in range(k):
        hits += bool(j < len(relevant) and relevant[j])
        out.append(hits / (j + 1))
    return out


def ndcg(shelf: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary-relevance NDCG@k."""
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(shelf[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


# --- baselines -------------------------------------------------------------------------------------


class Baselines:
    """Shelves a shop could show without imgrec: random, trending, trending in a category.

    Popularity is the shop's own trending score (time-decayed interactions); ties, and products
    nobody viewed, follow the newest-first order of the shop's "New in the shop" fallback.
    """

    def __init__(self, catalogue: Catalogue, rng: random.Random) -> None:
        self.catalogue = catalogue
        self.rng = rng
        pool = catalogue.recommendable
        scores = dict(recommend.trending_scores(restrict_to=recommendable_products(), limit=max(1, len(pool))))
        # sorted() is stable: equal scores keep the newest-first order.
        self.ranked = sorted(pool, key=lambda i: -scores.get(i, 0.0))
        self.by_category: dict[str | None, list[str]] = defaultdict(list)
        for item in self.ranked:
            self.by_category[catalogue.category.get(item)].append(item)

    def random(self, exclude: set[str], k: int) -> list[str]:
        pool = self.catalogue.recommendable
        picked = self.rng.sample(pool, min(len(pool), k + len(exclude)))
        return [i for i in picked if i not in exclude][:k]

    def popular(self, exclude: set[str], k: int) -> list[str]:
        return _take(self.ranked, exclude, k)

    def category_popular(self, weights: dict[str | None, float], exclude: set[str], k: int) -> list[str]:
        """Trending products of the given categories, slots shared by weight, topped up with trending."""
        total = sum(weights.values()) or 1.0
        shelf: list[str] = []
        taken = set(exclude)
        for cat, weight in sorted(weights.items(), key=lambda kv: -kv[1]):
            share = max(1, math.ceil(k * weight / total))
            picked = _take(self.by_category.get(cat, []), taken, min(share, k - len(shelf)))
            shelf += picked
            taken.update(picked)
        return shelf + _take(self.ranked, taken, k - len(shelf))


def _take(ranked: Sequence[str], exclude: set[str], n: int) -> list[str]:
    out: list[str] = []
    for item in ranked:
        if len(out) >= n:
            break
        if item not in exclude:
            out.append(item)
    return out


# --- transactions and logging ----------------------------------------------------------------------


@contextmanager
def rolled_back() -> Iterator[None]:
    """A transaction that is always rolled back: what happens inside leaves no trace."""
    with transaction.atomic():
        try:
            yield
        finally:
            transaction.set_rollback(True)


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous
