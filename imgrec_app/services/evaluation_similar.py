"""Offline evaluation of the "similar products" shelf (precision@k, grid) and of the category classifier.

Part of :mod:`imgrec_app.services.evaluation` (which re-exports everything here).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from django.test.utils import override_settings

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    product_content_type,
    product_key,
)
from imgrec_app.models import CoView
from imgrec_app.services import recommend, search
from imgrec_app.services.evaluation_common import (
    GRID_COVIEW,
    GRID_TEXT,
    IMAGE_ONLY,
    Baselines,
    Catalogue,
    Progress,
    _quiet,
    precision_curve,
    rolled_back,
)
from imgrec_app.services.models import reading_model
from imgrec_app.services.text import text_model

# --- similar products ------------------------------------------------------------------------------


def _weights(value: dict[str, float]) -> dict[str, float]:
    """Weights as ``similar_products`` reads them (missing keys: image 1, the others 0)."""
    return {
        "image": float(value.get("image", 1.0)),
        "text": float(value.get("text", 0.0)),
        "coview": float(value.get("coview", 0.0)),
        "learned": float(value.get("learned", 0.0)),
    }


@contextmanager
def similar_weights(weights: dict[str, float]) -> Iterator[None]:
    """Serve ``similar_products`` with other ``SIMILAR_WEIGHTS``, in this process only.

    The service reads the weights from settings on every call; the evaluation runs in its own
    process (a management command), so the running shop is not affected.
    """
    with override_settings(IMGREC={**imgrec_settings.user_settings, "SIMILAR_WEIGHTS": dict(weights)}):
        yield


def measured_vectors(serving: tuple[str, int]) -> dict[str, Any]:
    """Which image vectors the similar-products rows are measured on, and whether that is honest.

    While a tuned head (``imgrec_tune``) serves, its vectors were trained on these very products'
    categories: a shelf on them is in-sample (~100 %).  The rows are then measured on the head's
    base model's vectors (the untuned shelf, as :func:`classifier.learning_model_id` finds them);
    the head itself is evaluated held-out by product in the tuning section.  When the base
    vectors are gone the serving vectors are used and ``in_sample`` says so.
    """
    from django.db.models import Func, IntegerField

    from imgrec_app.hosts import product_content_type
    from imgrec_app.models import ProductVector, TuningRun
    from imgrec_app.services.classifier import learning_model_id

    serving_id, serving_dim = serving
    out: dict[str, Any] = {
        "model_id": serving_id,
        "dimensions": int(serving_dim),
        "serving_model_id": serving_id,
        "tuned_head": TuningRun.objects.filter(model_id=serving_id).exists(),
        "in_sample": False,
        "note": f"serving vectors {serving_id}",
    }
    if not out["tuned_head"]:
        return out
    base = learning_model_id(serving_id)
    dim = (
        ProductVector.objects.filter(content_type=product_content_type(), model_id=base)
        .annotate(_imgrec_dims=Func("vector", function="vector_dims", output_field=IntegerField()))
        .values_list("_imgrec_dims", flat=True)
        .first()
    )
    if base == serving_id or dim is None:
        out["in_sample"] = True
        out["note"] = (
            f"IN-SAMPLE: the serving tuned head {serving_id} learned these products' categories and its base "
            "vectors are gone, so these rows overstate quality; the head's held-out numbers are in the "
            "tuning section"
        )
        return out
    out.update(
        model_id=base,
        dimensions=int(dim),
        note=f"base vectors {base}; the serving head {serving_id} is evaluated held-out below",
    )
    return out


class SimilarRunner:
    """Runs the real "similar products" shelf for a sample of products, once per weight setting.

    While a tuned head serves, the shelves read its base model's vectors (:func:`measured_vectors`,
    :func:`imgrec_app.services.models.reading_model`); nothing that serves changes.
    """

    def __init__(self, catalogue: Catalogue, queries: list[Any], k: int, progress: Progress) -> None:
        self.catalogue = catalogue
        self.queries = queries
        self.k = k
        self.progress = progress
        self.coview_pairs = coview_pairs()
        self.vectors = measured_vectors(catalogue.image_model)
        self._cache: dict[tuple[float, float, float, float], dict[str, Any]] = {}

    def shelves(self, weights: dict[str, float], label: str) -> dict[str, Any]:
        """Precision scores of the real service with ``weights`` (cached per weight setting)."""
        w = _weights(weights)
        # Without co-view pairs the coview term is 0 for every candidate: shelves that differ
        # only in the coview weight are the same shelves, so they are built once.
        key = (w["image"], w["text"], w["coview"] if self.coview_pairs else 0.0, w["learned"])
        if key not in self._cache:
            shelves: dict[str, list[str]] = {}
            fallbacks = 0
            with similar_weights(w), reading_model(self.vectors["model_id"], self.vectors["dimensions"]):
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
        "vectors": runner.vectors,
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


def evaluate_classifier(catalogue: Catalogue, *, folds: int, progress: Progress) -> dict[str, Any]:
    """k-fold accuracy of the shop's classifier, of linear probes, and of the majority class."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from imgrec_app.ml.linear import ChosenCLogistic
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
    # The vectors the shop's classifier learns from: the base model's while a tuned head serves
    # (the head saw these products' categories; on its vectors a probe would be in-sample).
    image = search.vectors_of(ids, model_id=classifier.learning_model_id(catalogue.image_model[0]))
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
        pred = cross_val_predict(ChosenCLogistic(), X, y, cv=cv)  # the shop classifier's learner
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
