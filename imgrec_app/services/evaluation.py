"""Offline evaluation of the shelves on the shop's own catalogue, against simple baselines.

Three questions a merchant can ask before trusting the shelves, each answered with the real
services (the shop's rules, settings and vectors), so what is measured is what customers see:

* **Similar products**: how often a neighbour on the "similar products" shelf shares the
  product's category (precision@k), for the configured ``SIMILAR_WEIGHTS`` and for image-only
  cosine, next to a random shelf, the trending shelf and a same-category trending shelf.
* **Categories**: how well the shop's category classifier (k-fold) does, next to linear probes on
  the image vectors alone and on image + text vectors, and the majority class.
* **Recommended for you**: hit rate and NDCG@k on held-out browsing: the visitors' real history
  when there is enough of it, otherwise *simulated* shoppers with category preferences whose
  events are written through the real history service inside a transaction that is rolled back.

:func:`evaluate` returns plain data (JSON-able); :func:`render_report` turns it into a
self-contained HTML page with matplotlib plots (an optional dependency: ``django-imgrec[eval]``).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import Any, TypeVar

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import FieldDoesNotExist
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.test.utils import override_settings

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    get_product_model,
    product_category,
    product_content_type,
    product_key,
    recommendable_products,
)
from imgrec_app.models import CoView, Interaction, ProductVector
from imgrec_app.services import foryou, history, recommend, search
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


# --- similar products ------------------------------------------------------------------------------


def _weights(value: dict[str, float]) -> dict[str, float]:
    """Weights as ``similar_products`` reads them (missing keys: image 1, text 0, coview 0)."""
    return {
        "image": float(value.get("image", 1.0)),
        "text": float(value.get("text", 0.0)),
        "coview": float(value.get("coview", 0.0)),
    }


@contextmanager
def similar_weights(weights: dict[str, float]) -> Iterator[None]:
    """Serve ``similar_products`` with other ``SIMILAR_WEIGHTS``, in this process only.

    The service reads the weights from settings on every call; the evaluation runs in its own
    process (a management command), so the running shop is not affected.
    """
    with override_settings(IMGREC={**imgrec_settings.user_settings, "SIMILAR_WEIGHTS": dict(weights)}):
        yield


class SimilarRunner:
    """Runs the real "similar products" shelf for a sample of products, once per weight setting."""

    def __init__(self, catalogue: Catalogue, queries: list[Any], k: int, progress: Progress) -> None:
        self.catalogue = catalogue
        self.queries = queries
        self.k = k
        self.progress = progress
        self.coview_pairs = coview_pairs()
        self._cache: dict[tuple[float, float, float], dict[str, Any]] = {}

    def shelves(self, weights: dict[str, float], label: str) -> dict[str, Any]:
        """Precision scores of the real service with ``weights`` (cached per weight setting)."""
        w = _weights(weights)
        # Without co-view pairs the coview term is 0 for every candidate: shelves that differ
        # only in the coview weight are the same shelves, so they are built once.
        key = (w["image"], w["text"], w["coview"] if self.coview_pairs else 0.0)
        if key not in self._cache:
            shelves: dict[str, list[str]] = {}
            fallbacks = 0
            with similar_weights(w):
                for product in self.progress(self.queries, f"similar {label}", len(self.queries)):
                    items = recommend.similar_products(product, limit=self.k, attach=False)
                    shelves[product_key(product)] = [i.product_id for i in items]
                    fallbacks += sum(1 for i in items if i.source.startswith("fallback"))
            scores = precision_scores(self.catalogue, shelves, self.k)
            scores["fallback_share"] = fallbacks / max(1, self.k * len(self.queries))
            scores["confusions"] = confusions(self.catalogue, shelves)
            self._cache[key] = scores
        return {**self._cache[key], "weights": w}


def precision_scores(catalogue: Catalogue, shelves: dict[str, list[str]], k: int) -> dict[str, Any]:
    """Mean precision@1..k over query products, overall and by the query's category."""
    curves: list[list[float]] = []
    by_cat: dict[str | None, list[float]] = defaultdict(list)
    for query, shelf in shelves.items():
        cat = catalogue.category.get(query)
        curve = precision_curve([catalogue.category.get(i) == cat for i in shelf], k)
        curves.append(curve)
        by_cat[cat].append(curve[-1])
    mean_curve = np.mean(curves, axis=0).tolist() if curves else [0.0] * k
    per_category = {catalogue.name(c): float(np.mean(v)) for c, v in by_cat.items()}
    return {
        "precision": mean_curve[-1],
        "macro_precision": float(np.mean(list(per_category.values()))) if per_category else 0.0,
        "curve": mean_curve,
        "per_category": dict(sorted(per_category.items())),
    }


def confusions(catalogue: Catalogue, shelves: dict[str, list[str]], top: int = 8) -> list[dict[str, Any]]:
    """The category pairs most often mixed up on the shelves (share of the query category's slots)."""
    pairs: Counter[tuple[str | None, str | None]] = Counter()
    slots: Counter[str | None] = Counter()
    for query, shelf in shelves.items():
        cat = catalogue.category.get(query)
        slots[cat] += len(shelf)
        for item in shelf:
            other = catalogue.category.get(item)
            if other != cat:
                pairs[(cat, other)] += 1
    return [
        {"category": catalogue.name(a), "shown": catalogue.name(b), "share": n / slots[a]}
        for (a, b), n in pairs.most_common(top)
    ]


def evaluate_similar(catalogue: Catalogue, runner: SimilarRunner, rng: random.Random) -> dict[str, Any]:
    """Precision@k of the real shelf (configured and image-only) and of the baselines."""
    k = runner.k
    configured = dict(imgrec_settings.SIMILAR_WEIGHTS)
    methods = {
        "configured": runner.shelves(configured, "configured"),
        "image_only": runner.shelves(IMAGE_ONLY, "image-only"),
    }
    base = Baselines(catalogue, rng)
    keys = [product_key(p) for p in runner.queries]
    baseline_shelves = {
        "random": {q: base.random({q}, k) for q in keys},
        "popular": {q: base.popular({q}, k) for q in keys},
        "category_popular": {q: base.category_popular({catalogue.category.get(q): 1.0}, {q}, k) for q in keys},
    }
    for name, shelves in baseline_shelves.items():
        methods[name] = precision_scores(catalogue, shelves, k)
    return {
        "k": k,
        "queries": len(keys),
        "indexed": len(catalogue.indexed),
        "products": len(catalogue.category),
        "not_indexed": len(catalogue.category) - len(catalogue.indexed),
        "recommendable": len(catalogue.recommendable),
        "configured_weights": _weights(configured),
        "methods": methods,
    }


def coview_pairs() -> int:
    """How many "viewed together" pairs are strong enough to be used."""
    return CoView.objects.filter(
        content_type=product_content_type(), visitors__gte=imgrec_settings.COVIEW_MIN_VISITORS
    ).count()


def evaluate_grid(catalogue: Catalogue, runner: SimilarRunner) -> dict[str, Any]:
    """precision@k of the real shelf over a grid of ``SIMILAR_WEIGHTS`` (image weight 1)."""
    pairs = runner.coview_pairs
    has_text = bool(catalogue.text_indexed)
    rows = []
    for coview in GRID_COVIEW:
        for text in GRID_TEXT:
            note = ""
            if text and not has_text:
                note = "no text vectors: same as text 0"
            if coview and not pairs:
                note = "no co-view pairs yet: same as coview 0"
            weights = {"image": 1.0, "text": text if has_text else 0.0, "coview": coview}
            scores = runner.shelves(weights, f"grid t={text} c={coview}")
            rows.append(
                {
                    "image": 1.0,
                    "text": text,
                    "coview": coview,
                    "precision": scores["precision"],
                    "macro_precision": scores["macro_precision"],
                    "note": note,
                }
            )
    best = max(rows, key=lambda r: (round(r["precision"], 4), -r["text"], -r["coview"]))
    return {"k": runner.k, "queries": len(runner.queries), "coview_pairs": pairs, "rows": rows, "best": best}


# --- categories ------------------------------------------------------------------------------------


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


def evaluate_classifier(catalogue: Catalogue, *, folds: int, progress: Progress) -> dict[str, Any]:
    """k-fold accuracy of the shop's classifier, of linear probes, and of the majority class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from imgrec_app.services import classifier

    out: dict[str, Any] = {"methods": {}}
    try:
        # train() stores a classifier and rewrites predictions: measure it, then undo it all
        # (and keep its "Trained classifier N" log line quiet: that classifier never exists).
        with rolled_back(), _quiet(classifier.logger):
            report = classifier.train(folds=folds)
    except classifier.NotEnoughData as exc:
        return {"skipped": str(exc), "methods": {}}
    out["methods"]["shop_classifier"] = {
        "label": "imgrec category classifier (as trained by the shop)",
        "accuracy": report.cv_accuracy,
    }
    out.update(folds=report.folds, samples=report.samples, categories=report.categories)

    ids = [i for i in catalogue.indexed if catalogue.category.get(i) is not None]
    counts = Counter(catalogue.category[i] for i in ids)
    ids = [i for i in ids if counts[catalogue.category[i]] >= 2]
    y = np.array([catalogue.category[i] for i in ids])
    image = search.vectors_of(ids, model_id=catalogue.image_model[0])
    X_image = np.stack([image[i] for i in ids])
    features = {"image_probe": ("Linear probe, image vectors only", X_image)}
    tmodel = text_model()
    if tmodel and catalogue.text_indexed:
        text = search.vectors_of(ids, model_id=tmodel[0])
        # A product without a text vector gets zeros, as a shop would see it.
        X_text = np.stack([text.get(i, np.zeros(tmodel[1], dtype=np.float32)) for i in ids])
        features["image_text_probe"] = ("Linear probe, image + text vectors", np.hstack([X_image, X_text]))
    cv = StratifiedKFold(n_splits=report.folds, shuffle=True, random_state=0)
    best_pred = None
    for name, (label, X) in progress(list(features.items()), "classifier probes", len(features)):
        pred = cross_val_predict(LogisticRegression(C=2.0, max_iter=2000), X, y, cv=cv)
        out["methods"][name] = {"label": label, "accuracy": float(np.mean(pred == y))}
        best_pred = pred
    out["methods"]["majority"] = {
        "label": "Majority category (always the biggest one)",
        "accuracy": report.baseline_accuracy,
    }
    if best_pred is not None:
        per: dict[str, list[bool]] = defaultdict(list)
        mixed: Counter[tuple[str, str]] = Counter()
        for truth, guess in zip(y, best_pred):
            per[catalogue.name(truth)].append(truth == guess)
            if truth != guess:
                mixed[(catalogue.name(truth), catalogue.name(guess))] += 1
        out["per_category"] = {c: float(np.mean(v)) for c, v in sorted(per.items())}
        out["confusions"] = [{"category": a, "predicted": b, "products": n} for (a, b), n in mixed.most_common(8)]
        out["per_category_method"] = list(features)[-1]
    return out


# --- recommended for you ---------------------------------------------------------------------------


@dataclass
class Shopper:
    """One evaluated visitor: the request that carries their (training) history, and what they did next."""

    request: HttpRequest
    seen: list[str]
    held_out: list[str]


def shopper_request(*, user: Any = None, visitor: str | None = None) -> HttpRequest:
    """A request for one visitor, with the shop's session engine (nothing is saved)."""
    request = HttpRequest()
    request.method = "GET"
    request.META["HTTP_USER_AGENT"] = "imgrec-evaluate"
    request.user = user if user is not None else AnonymousUser()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore()
    if visitor is not None:
        request.session[history.VISITOR_SESSION_KEY] = visitor
    return request


def real_history_owners() -> list[tuple[Any, Any]]:
    """``(user_id, visitor_id)`` of visitors with enough distinct products in their history."""
    rows = (
        Interaction.objects.filter(content_type=product_content_type())
        .values("user_id", "visitor_id")
        .annotate(n=Count("object_id", distinct=True))
        .filter(n__gte=MIN_REAL_EVENTS)
        .order_by("user_id", "visitor_id")
        .values_list("user_id", "visitor_id")
    )
    return list(rows)


def hold_out_real(owners: list[tuple[Any, Any]], catalogue: Catalogue) -> list[Shopper]:
    """Leave each visitor's last 20 % of products out of their history (call inside a rollback)."""
    users = get_user_model()._default_manager.in_bulk([u for u, _ in owners if u is not None])
    shoppers = []
    ct = product_content_type()
    for user_id, visitor in owners:
        owner = {"user_id": user_id} if user_id is not None else {"visitor_id": visitor, "user__isnull": True}
        events = list(
            Interaction.objects.filter(content_type=ct, **owner)
            .order_by("created_at", "pk")
            .values_list("pk", "object_id", "created_at")
        )
        order = list(dict.fromkeys(obj for _, obj, _ in events))
        n_hold = max(1, round(HELD_OUT_SHARE * len(order)))
        first_held = next(created for _, obj, created in events if obj == order[-n_hold])
        Interaction.objects.filter(content_type=ct, created_at__gte=first_held, **owner).delete()
        seen = list(dict.fromkeys(obj for _, obj, created in events if created < first_held))
        held = [o for o in order[-n_hold:] if o not in seen and o in catalogue.category]
        if not held or not seen:
            continue
        if user_id is not None:
            request = shopper_request(user=users[user_id])
        else:
            request = shopper_request(visitor=str(visitor))
        shoppers.append(Shopper(request, seen, held))
    return shoppers


def simulate_shoppers(
    catalogue: Catalogue, *, count: int, events: int, rng: random.Random
) -> list[tuple[list[str | None], list[str]]]:
    """Browsing sessions of shoppers who each prefer one or two categories.

    Within a category, products are picked with a long-tailed popularity (weight 1/rank over a
    random ranking of the category), so some products are popular and most are not; 15 % of views
    explore any category.  Only recommendable products are browsed (the others cannot be
    recommended, so they could never be hit).

    Returns:
        ``(preferred categories, browsed product ids in order)`` per shopper.
    """
    by_cat: dict[str | None, list[str]] = defaultdict(list)
    for item in catalogue.recommendable:
        if catalogue.category.get(item) is not None:
            by_cat[catalogue.category[item]].append(item)
    cats = sorted((c for c, items in by_cat.items() if len(items) >= 3), key=str)
    if not cats:
        return []
    prior: dict[str, float] = {}
    for c in cats:
        ranking = list(by_cat[c])
        rng.shuffle(ranking)
        prior.update({item: 1.0 / (rank + 1) for rank, item in enumerate(ranking)})
    sessions = []
    for _ in range(count):
        preferred = rng.sample(cats, min(len(cats), rng.choice([1, 2])))
        main = rng.uniform(0.5, 0.8)
        share = [1.0] if len(preferred) == 1 else [main, 1.0 - main]
        browsed: list[str] = []
        while len(browsed) < events:
            cat = rng.choices(preferred, share)[0] if rng.random() < PREFERRED_SHARE else rng.choice(cats)
            options = [i for i in by_cat[cat] if i not in browsed]
            if options:
                browsed.append(rng.choices(options, [prior[i] for i in options])[0])
            elif all(all(i in browsed for i in by_cat[c]) for c in cats):
                break
        sessions.append((list(preferred), browsed))
    return sessions


def record_simulated(sessions: list[tuple[list[str | None], list[str]]]) -> list[Shopper]:
    """Write the sessions' browsing (all but the held-out tail) through the history service."""
    shoppers = []
    for _, browsed in sessions:
        n_hold = max(1, round(HELD_OUT_SHARE * len(browsed)))
        seen, held = browsed[:-n_hold], browsed[-n_hold:]
        if not seen:
            continue
        request = shopper_request()
        for item in seen:
            history.record(request, item)
        shoppers.append(Shopper(request, seen, held))
    return shoppers


def score_for_you(
    catalogue: Catalogue,
    shoppers: list[Shopper],
    k: int,
    rng: random.Random,
    progress: Progress,
    *,
    baselines: bool = True,
    label: str = "recommended for you",
) -> dict[str, Any]:
    """Hit rate@k, NDCG@k and category match@k of for-you and (``baselines``) of the baselines.

    Popularity (the baselines' and for-you's own) is read from the histories as they are now:
    the training part of every shopper's browsing, never a held-out view (those were removed,
    or never written).
    """
    base = Baselines(catalogue, rng) if baselines else None
    totals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for shopper in progress(shoppers, label, len(shoppers)):
        seen = set(shopper.seen)
        held = set(shopper.held_out)
        held_cats = {catalogue.category.get(i) for i in held}
        weights = Counter(catalogue.category.get(i) for i in shopper.seen)
        shelves = {
            "for_you": [r.product_id for r in recommend.recommended_for_you(shopper.request, limit=k, attach=False)],
        }
        if base is not None:
            shelves["random"] = base.random(seen, k)
            shelves["popular"] = base.popular(seen, k)
            shelves["category_popular"] = base.category_popular(dict(weights), seen, k)
        for name, shelf in shelves.items():
            totals[name]["hit_rate"].append(float(bool(held & set(shelf[:k]))))
            totals[name]["ndcg"].append(ndcg(shelf, held, k))
            totals[name]["category_match"].append(sum(catalogue.category.get(i) in held_cats for i in shelf[:k]) / k)
    return {
        name: {metric: float(np.mean(values)) for metric, values in metrics.items()} for name, metrics in totals.items()
    }


def evaluate_for_you(
    catalogue: Catalogue, options: EvaluationOptions, rng: random.Random, progress: Progress
) -> dict[str, Any]:
    """Held-out browsing: real visitors when there are enough, otherwise simulated shoppers.

    Everything runs in a transaction that is rolled back: held-out real events are removed only
    for the measurement, simulated events are never kept.
    """
    owners = real_history_owners()
    out: dict[str, Any] = {"k": options.k, "real_visitors": len(owners), "min_real_visitors": MIN_REAL_VISITORS}
    with rolled_back():
        if len(owners) >= MIN_REAL_VISITORS:
            if options.sample and len(owners) > options.sample:
                owners = rng.sample(owners, options.sample)
            shoppers = hold_out_real(owners, catalogue)
            out["simulated"] = False
        else:
            if options.simulated_shoppers <= 0:
                out["skipped"] = (
                    f"Only {len(owners)} visitors have {MIN_REAL_EVENTS}+ products in their history "
                    f"(need {MIN_REAL_VISITORS}) and simulation is off."
                )
                return out
            sessions = simulate_shoppers(
                catalogue, count=options.simulated_shoppers, events=options.events_per_shopper, rng=rng
            )
            shoppers = record_simulated(sessions)
            out["simulated"] = True
            out["events_per_shopper"] = options.events_per_shopper
        # "Viewed together" pairs rebuilt from what is left (training views only): pairs built by
        # the shop from the full history would hand for-you the held-out views.
        out["coview_pairs"] = recommend.refresh_coviews()
        out["shoppers"] = len(shoppers)
        out["held_out_per_shopper"] = float(np.mean([len(s.held_out) for s in shoppers])) if shoppers else 0.0
        out["methods"] = score_for_you(catalogue, shoppers, options.k, rng, progress) if shoppers else {}
        out["weights"] = foryou.foryou_weights()
        if options.foryou_grid and shoppers:
            out["grid"] = foryou_grid(catalogue, shoppers, options.k, progress)
    return out


FORYOU_GRID = {
    "interest": (0.0, 1.0),
    "coview": (0.0, 0.5),
    "category": (0.0, 0.5, 1.0, 2.0),
    "recency": (0.0, 0.5),
}


@contextmanager
def foryou_weights(weights: dict[str, float]) -> Iterator[None]:
    """Serve ``recommended_for_you`` with other ``FORYOU_WEIGHTS``, in this process only."""
    with override_settings(IMGREC={**imgrec_settings.user_settings, "FORYOU_WEIGHTS": dict(weights)}):
        yield


def foryou_grid(catalogue: Catalogue, shoppers: list[Shopper], k: int, progress: Progress) -> dict[str, Any]:
    """Hit rate@k and NDCG@k of for-you over :data:`FORYOU_GRID` (every source on and off).

    For each shopper and recency value the candidates of every source are gathered once
    (:func:`foryou.gather`, the real queries) and ranked with each weight setting
    (:func:`foryou.rank`, the real blend); shelves are topped up with the service's own fallback.
    A setting whose source weights are all zero is skipped (the shelf would be the fallback).
    Because every source's candidates are in the pool, a row with a source at 0 can still show
    that source's candidates when another source scores them; the configured row of the main
    table is the service exactly as it serves.
    """
    import itertools

    keys = [key for key in FORYOU_GRID if key != "recency"]
    settings_ = [dict(zip(keys, values)) for values in itertools.product(*(FORYOU_GRID[key] for key in keys))]
    settings_ = [w for w in settings_ if any(w[src] for src in foryou.SOURCES)]
    totals: dict[tuple[float, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    restrict = recommendable_products()
    for recency in FORYOU_GRID["recency"]:
        everything = {**{src: 1.0 for src in foryou.SOURCES}, "recency": recency}
        for shopper in progress(shoppers, f"for-you grid, recency {recency:g}", len(shoppers)):
            pool = foryou.gather(shopper.request, limit=k, weights=everything, restrict=restrict)
            held = set(shopper.held_out)
            for w in settings_:
                weights = {**w, "recency": recency}
                shelf = [r.product_id for r in foryou.rank(pool, weights, limit=k)]
                if len(shelf) < k:
                    shelf += [
                        r.product_id
                        for r in recommend._fallback(
                            limit=k - len(shelf), exclude=pool.excluded | set(shelf), restrict=restrict
                        )
                    ]
                key = tuple(weights[x] for x in FORYOU_GRID)
                totals[key]["hit_rate"].append(float(bool(held & set(shelf[:k]))))
                totals[key]["ndcg"].append(ndcg(shelf, held, k))
    rows = [
        {**dict(zip(FORYOU_GRID, key)), **{m: float(np.mean(v)) for m, v in metrics.items()}}
        for key, metrics in totals.items()
    ]
    best = max(rows, key=lambda r: (round(r["hit_rate"], 4), round(r["ndcg"], 4)))
    return {"k": k, "rows": rows, "best": best}


# --- the whole evaluation --------------------------------------------------------------------------


def evaluate(options: EvaluationOptions | None = None, *, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate the shelves and the category classifier on the shop's own catalogue.

    Args:
        options: what to evaluate (defaults finish in a couple of minutes on ~600 products).
        progress: wraps long loops, e.g. ``lambda it, desc, total: tqdm(it, desc=desc, total=total)``.

    Returns:
        Plain data (JSON-able): ``similar``, ``classifier``, ``for_you``, ``grid`` (with
        ``options.grid``) and ``timings`` in seconds.

    Raises:
        EvaluationError: when the shop has nothing indexed or no categories.
    """
    options = options or EvaluationOptions()
    wrap: Progress = progress or _identity
    rng = random.Random(options.seed)
    catalogue = load_catalogue()
    queries = list(catalogue.indexed)
    rng.shuffle(queries)
    if options.sample:
        queries = queries[: options.sample]
    model = get_product_model()
    instances = model._default_manager.in_bulk([model._meta.pk.to_python(q) for q in queries])
    by_key = {product_key(pk): p for pk, p in instances.items()}
    runner = SimilarRunner(catalogue, [by_key[q] for q in queries if q in by_key], options.k, wrap)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {
        "options": {
            "k": options.k,
            "sample": options.sample,
            "seed": options.seed,
            "simulated_shoppers": options.simulated_shoppers,
            "events_per_shopper": options.events_per_shopper,
            "folds": options.folds,
            "grid": options.grid,
            "foryou_grid": options.foryou_grid,
            "tuning": options.tuning,
        },
        "image_model": catalogue.image_model[0],
        "text_model": (text_model() or (None,))[0],
        "categories": len(catalogue.category_names),
    }
    started = time.perf_counter()
    result["similar"] = evaluate_similar(catalogue, runner, random.Random(options.seed + 1))
    timings["similar"] = time.perf_counter() - started
    if options.grid:
        started = time.perf_counter()
        result["grid"] = evaluate_grid(catalogue, runner)
        timings["grid"] = time.perf_counter() - started
    started = time.perf_counter()
    result["classifier"] = evaluate_classifier(catalogue, folds=options.folds, progress=wrap)
    timings["classifier"] = time.perf_counter() - started
    if options.tuning:
        # Catalogue tuning (imgrec_tune), held-out by product: services/evaluation_tuning.py.
        from imgrec_app.services.evaluation_tuning import evaluate_tuning

        started = time.perf_counter()
        result["tuning"] = evaluate_tuning(folds=options.folds, k=options.k, seed=options.seed)
        timings["tuning"] = time.perf_counter() - started
    started = time.perf_counter()
    result["for_you"] = evaluate_for_you(catalogue, options, random.Random(options.seed + 2), wrap)
    timings["for_you"] = time.perf_counter() - started
    result["timings"] = timings
    return result


# --- presenting it ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(section, method, value)`` rows of the headline numbers, for the console and the report."""
    rows: list[tuple[str, str, str]] = []
    sim = result["similar"]
    for name, scores in sim["methods"].items():
        rows.append(
            (f"Similar products: precision@{sim['k']} by category", METHOD_LABELS[name], _pct(scores["precision"]))
        )
    clf = result["classifier"]
    if clf.get("skipped"):
        rows.append(("Category classifier", "skipped", clf["skipped"]))
    for scores in clf["methods"].values():
        rows.append(
            (f"Category classifier: {clf.get('folds', '?')}-fold accuracy", scores["label"], _pct(scores["accuracy"]))
        )
    if result.get("tuning"):
        from imgrec_app.services.evaluation_tuning import summary_rows as tuning_rows

        rows += tuning_rows(result["tuning"])
    fy = result["for_you"]
    if fy.get("skipped"):
        rows.append(("Recommended for you", "skipped", fy["skipped"]))
    source = "SIMULATED shoppers" if fy.get("simulated") else "real visitors"
    for name, scores in fy.get("methods", {}).items():
        rows.append(
            (
                f"Recommended for you ({source}): hit rate@{fy['k']} / NDCG@{fy['k']}",
                METHOD_LABELS[name],
                f"{_pct(scores['hit_rate'])} / {scores['ndcg']:.3f}",
            )
        )
    for row in fy.get("grid", {}).get("rows", []):
        rows.append(
            (
                f"FORYOU_WEIGHTS grid ({source}): hit rate@{fy['k']} / NDCG@{fy['k']}",
                ", ".join(f"{key} {row[key]:g}" for key in FORYOU_GRID),
                f"{_pct(row['hit_rate'])} / {row['ndcg']:.3f}",
            )
        )
    if "grid" in result:
        grid = result["grid"]
        for row in grid["rows"]:
            rows.append(
                (
                    f"SIMILAR_WEIGHTS grid: precision@{grid['k']}",
                    f"image 1, text {row['text']:g}, coview {row['coview']:g}"
                    + (f" ({row['note']})" if row["note"] else ""),
                    _pct(row["precision"]),
                )
            )
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    """The summary rows as an aligned text table, one block per section."""
    width = max((len(m) for _, m, _ in rows), default=10)
    lines: list[str] = []
    section = None
    for sec, method, value in rows:
        if sec != section:
            lines += ["", sec]
            section = sec
        lines.append(f"  {method:<{width}}  {value}")
    return "\n".join(lines).lstrip("\n")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(
    plt: Any, labels: list[str], series: dict[str, list[float]], title: str, ylabel: str, *, horizontal: bool = False
) -> str:
    """A grouped bar chart as base64 PNG."""
    n = len(series)
    positions = np.arange(len(labels))
    width = 0.8 / max(1, n)
    height = max(3.0, 0.28 * len(labels) * n) if horizontal else 3.6
    fig, ax = plt.subplots(figsize=(8, height))
    for j, (name, values) in enumerate(series.items()):
        offsets = positions + (j - (n - 1) / 2) * width
        if horizontal:
            ax.barh(offsets, values, height=width, label=name)
        else:
            ax.bar(offsets, values, width=width, label=name)
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(positions, labels, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return _png(fig)


def plots(result: dict[str, Any]) -> dict[str, str]:
    """The report's figures, as base64-encoded PNGs (matplotlib, Agg backend)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EvaluationError("The HTML report needs matplotlib: pip install 'django-imgrec[eval]'.") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    sim = result["similar"]
    k = sim["k"]
    methods = sim["methods"]
    out["similar_bars"] = _bars(
        plt,
        [METHOD_LABELS[m] for m in methods],
        {f"precision@{k}": [s["precision"] for s in methods.values()]},
        f"Similar products: neighbours in the product's category (precision@{k})",
        "precision",
    )
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, scores in methods.items():
        ax.plot(range(1, k + 1), scores["curve"], marker="o", label=METHOD_LABELS[name])
    ax.set_xlabel("shelf position k")
    ax.set_ylabel("precision@k")
    ax.set_ylim(0, 1.05)
    ax.set_title("Precision as the shelf gets longer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out["similar_curve"] = _png(fig)
    cats = list(methods["configured"]["per_category"])
    out["similar_by_category"] = _bars(
        plt,
        cats,
        {
            METHOD_LABELS[m]: [methods[m]["per_category"].get(c, 0.0) for c in cats]
            for m in ("configured", "image_only")
        },
        f"precision@{k} by category",
        "precision",
        horizontal=True,
    )
    clf = result["classifier"]
    if clf["methods"]:
        out["classifier"] = _bars(
            plt,
            [s["label"] for s in clf["methods"].values()],
            {"accuracy": [s["accuracy"] for s in clf["methods"].values()]},
            f"Category classifier, {clf.get('folds', '?')}-fold accuracy",
            "accuracy",
        )
    fy = result["for_you"]
    if fy.get("methods"):
        names = list(fy["methods"])
        source = "simulated shoppers" if fy.get("simulated") else "real visitors"
        out["for_you"] = _bars(
            plt,
            [METHOD_LABELS[n] for n in names],
            {
                f"hit rate@{fy['k']}": [fy["methods"][n]["hit_rate"] for n in names],
                f"NDCG@{fy['k']}": [fy["methods"][n]["ndcg"] for n in names],
                f"category match@{fy['k']}": [fy["methods"][n]["category_match"] for n in names],
            },
            f"Recommended for you on held-out browsing ({source.upper() if fy.get('simulated') else source})",
            "score",
        )
    if "grid" in result:
        grid = result["grid"]
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for coview in GRID_COVIEW:
            rows = [r for r in grid["rows"] if r["coview"] == coview]
            ax.plot([r["text"] for r in rows], [r["precision"] for r in rows], marker="o", label=f"coview {coview:g}")
        ax.set_xlabel("text weight (image weight 1)")
        ax.set_ylabel(f"precision@{grid['k']}")
        ax.set_title("SIMILAR_WEIGHTS grid")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out["grid"] = _png(fig)
    return out


def render_report(result: dict[str, Any]) -> str:
    """The evaluation as one self-contained HTML page (plots embedded as base64 PNG)."""
    from django.utils import timezone

    sim = result["similar"]
    context = {
        "result": result,
        "plots": plots(result),
        "summary": summary_rows(result),
        "generated_at": timezone.now(),
        "similar_rows": [
            {
                "label": METHOD_LABELS[name],
                "precision": _pct(s["precision"]),
                "macro": _pct(s["macro_precision"]),
                "fallback": _pct(s.get("fallback_share")),
            }
            for name, s in sim["methods"].items()
        ],
        "category_rows": [
            {
                "category": c,
                "configured": _pct(v),
                "image_only": _pct(sim["methods"]["image_only"]["per_category"].get(c)),
            }
            for c, v in sorted(sim["methods"]["configured"]["per_category"].items(), key=lambda kv: kv[1])
        ],
        "similar_confusions": [
            {**c, "share": _pct(c["share"])} for c in sim["methods"]["configured"].get("confusions", [])
        ],
        "classifier_rows": [
            {"label": s["label"], "accuracy": _pct(s["accuracy"])} for s in result["classifier"]["methods"].values()
        ],
        "classifier_categories": [
            {"category": c, "accuracy": _pct(v)}
            for c, v in sorted(result["classifier"].get("per_category", {}).items(), key=lambda kv: kv[1])
        ],
        "for_you_rows": [
            {
                "label": METHOD_LABELS[name],
                "hit_rate": _pct(s["hit_rate"]),
                "ndcg": f"{s['ndcg']:.3f}",
                "category_match": _pct(s["category_match"]),
            }
            for name, s in result["for_you"].get("methods", {}).items()
        ],
        "grid_rows": [
            {
                **r,
                "precision": _pct(r["precision"]),
                "macro_precision": _pct(r["macro_precision"]),
                "best": r == result["grid"]["best"],
            }
            for r in result.get("grid", {}).get("rows", [])
        ],
    }
    return render_to_string("imgrec_app/evaluation_report.html", context)
