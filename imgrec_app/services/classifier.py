"""The shop's own categories: a linear classifier trained on product vectors.

Products that already have a category teach a multinomial logistic regression over the serving
model's product vectors (image, concatenated with text when text vectors exist; the base model's
image vectors while a tuned head serves, see :func:`learning_model_id`).  Its k-fold
cross-validated accuracy is stored next to a majority-class baseline; every product with a vector
then gets a predicted category with a confidence, and the admin lists disagreements.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction

from imgrec_app.hosts import get_product_model, product_category, product_content_type
from imgrec_app.models import CategoryClassifier, CategoryPrediction, ProductVector
from imgrec_app.services.models import serving_model
from imgrec_app.services.text import text_model

logger = logging.getLogger(__name__)


class NotEnoughData(ValueError):
    """Too few categorised products to train (at least 2 categories with 2 products each)."""


class TrainingNotQueued(RuntimeError):
    """The training task could not be sent (the broker is unreachable)."""


def queue_training(*, folds: int = 5) -> None:
    """Train on a worker (task ``imgrec.train_classifier`` on the embed queue, whose workers have
    the ``[worker]`` extra and so scikit-learn): the admin's "Retrain" never trains in a request.

    Raises:
        NotEnoughData: nothing is indexed yet (checked here, so the admin can say so at once).
        TrainingNotQueued: the broker cannot be reached.
    """
    from celery import current_app

    from imgrec_app.conf import imgrec_settings

    if serving_model() is None:
        raise NotEnoughData("No product vectors yet: index images first.")
    try:
        current_app.send_task(
            "imgrec.train_classifier",
            kwargs={"folds": folds},
            queue=imgrec_settings.QUEUES["embed"],
            ignore_result=True,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2},
        )
    except Exception as exc:
        logger.warning("imgrec could not queue classifier training: %s", exc)
        raise TrainingNotQueued(f"Training could not be queued: the task queue cannot be reached ({exc}).") from exc


@dataclass(frozen=True)
class TrainingReport:
    """What a training run found."""

    classifier_id: int
    samples: int
    categories: int
    cv_accuracy: float | None
    baseline_accuracy: float
    folds: int
    predictions: int
    disagreements: int
    # The logistic regression's inverse regularisation strength (chosen by inner cross-validation
    # on the training products unless fixed by the caller).
    C: float = 0.0


def _product_vectors(model_id: str) -> tuple[list[str], np.ndarray]:
    ct = product_content_type()
    rows = list(ProductVector.objects.filter(content_type=ct, model_id=model_id).values_list("object_id", "vector"))
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    ids = [r[0] for r in rows]
    return ids, np.asarray([np.asarray(r[1], dtype=np.float32) for r in rows])


def learning_model_id(serving_id: str) -> str:
    """The image vectors the classifier learns from: the base model's while a tuned head serves.

    A head (``imgrec_tune``) was trained on these products' categories: a classifier on its
    vectors reads back what the head memorised (cross-validated ~100 %, in-sample) and does worse
    on products the head has not seen than on the base vectors (demo, held-out by product, with
    texts: 73.5 % against 95.2 %; docs/EVALUATION.md).  Falls back to the serving vectors when the
    base ones are gone.
    """
    from imgrec_app.models import TuningRun

    base = TuningRun.objects.filter(model_id=serving_id).values_list("base_model_id", flat=True).first()
    if base and ProductVector.objects.filter(content_type=product_content_type(), model_id=base).exists():
        return str(base)
    return serving_id


def _text_features() -> tuple[str, int] | None:
    """``(model_id, dim)`` of the text vectors to append, when text vectors are on and exist."""
    tmodel = text_model()
    if tmodel and ProductVector.objects.filter(content_type=product_content_type(), model_id=tmodel[0]).exists():
        return tmodel
    return None


def _with_text(ids: list[str], X: np.ndarray, text_model_id: str, dim: int) -> np.ndarray:
    """Append each product's text vector to its image vector (zeros when it has none)."""
    texts = dict(
        ProductVector.objects.filter(
            content_type=product_content_type(), model_id=text_model_id, object_id__in=ids
        ).values_list("object_id", "vector")
    )
    zeros = np.zeros(dim, dtype=np.float32)
    T = np.asarray([np.asarray(texts[i], dtype=np.float32) if i in texts else zeros for i in ids])
    return np.hstack([X, T])


def _categories_of(ids: list[str]) -> dict[str, str | None]:
    model = get_product_model()
    products = model._default_manager.in_bulk([model._meta.pk.to_python(i) for i in ids])
    return {str(pk): product_category(p) for pk, p in products.items()}


def train(*, folds: int = 5, min_per_class: int = 2, C: float | None = None) -> TrainingReport:
    """Train, cross-validate, store and apply a category classifier.

    Args:
        folds: k of the stratified k-fold cross-validation (reduced for small classes).
        min_per_class: categories with fewer labelled products are left out of training.
        C: inverse regularisation strength of the logistic regression; None (the default) chooses
            it among ``ml.linear.CANDIDATE_CS`` by an inner cross-validation on the training
            products (inside each fold of the reported cross-validation too, so it stays held-out).

    Raises:
        NotEnoughData: when there is nothing sensible to learn from.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from imgrec_app.ml.linear import ChosenCLogistic

    serving = serving_model()
    if serving is None:
        raise NotEnoughData("No product vectors yet: index images first.")
    model_id = learning_model_id(serving.model_id)
    ids, X = _product_vectors(model_id)
    text = _text_features()
    if text is not None and ids:
        X = _with_text(ids, X, *text)
    labels = _categories_of(ids)
    y_all = [labels.get(i) for i in ids]
    counts: dict[str, int] = {}
    for y in y_all:
        if y is not None:
            counts[y] = counts.get(y, 0) + 1
    keep = {c for c, n in counts.items() if n >= min_per_class}
    mask = np.array([y in keep for y in y_all], dtype=bool)
    if len(keep) < 2:
        raise NotEnoughData(f"Need at least 2 categories with {min_per_class}+ indexed products; have {counts}.")
    X_train = X[mask]
    y_train = np.array([y for y in y_all if y in keep])
    k = max(2, min(folds, min(np.unique(y_train, return_counts=True)[1])))
    clf = ChosenCLogistic(C=C)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=0)
    scores = cross_val_score(clf, X_train, y_train, cv=cv)
    values, value_counts = np.unique(y_train, return_counts=True)
    baseline = float(value_counts.max() / value_counts.sum())
    clf.fit(X_train, y_train)
    coef = clf.coef_
    intercept = clf.intercept_
    classes = [str(c) for c in clf.classes_]
    if len(classes) == 2:  # sklearn's binary form: one row; expand to two for uniform scoring
        coef = np.vstack([-coef[0], coef[0]]) / 2
        intercept = np.array([-intercept[0], intercept[0]]) / 2
    with transaction.atomic():
        CategoryClassifier.objects.filter(is_active=True).update(is_active=False)
        record = CategoryClassifier.objects.create(
            model_id=model_id,
            text_model_id=text[0] if text else "",
            categories=classes,
            coef=np.round(coef, 6).tolist(),
            intercept=np.round(intercept, 6).tolist(),
            cv_accuracy=float(scores.mean()),
            baseline_accuracy=baseline,
            sample_count=int(mask.sum()),
            is_active=True,
        )
        written, disagreements = _predict_all(record, ids, X, labels)
    logger.info("Trained category classifier %s: cv accuracy %.3f, C %g", record.pk, scores.mean(), clf.C_)
    return TrainingReport(
        classifier_id=record.pk,
        samples=int(mask.sum()),
        categories=len(classes),
        cv_accuracy=float(scores.mean()),
        baseline_accuracy=baseline,
        folds=k,
        predictions=written,
        disagreements=disagreements,
        C=clf.C_,
    )


def _scores(record: CategoryClassifier, X: np.ndarray) -> np.ndarray:
    logits = X @ np.asarray(record.coef, dtype=np.float32).T + np.asarray(record.intercept, dtype=np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def _predict_all(
    record: CategoryClassifier, ids: list[str], X: np.ndarray, labels: dict[str, str | None]
) -> tuple[int, int]:
    ct = product_content_type()
    probs = _scores(record, X)
    best = probs.argmax(axis=1)
    CategoryPrediction.objects.filter(content_type=ct).delete()
    rows = [
        CategoryPrediction(
            content_type=ct,
            object_id=pid,
            classifier=record,
            category=record.categories[int(b)],
            confidence=float(probs[row, b]),
            assigned_category=labels.get(pid) or "",
        )
        for row, (pid, b) in enumerate(zip(ids, best))
    ]
    CategoryPrediction.objects.bulk_create(rows, batch_size=1000)
    return len(rows), sum(1 for r in rows if r.disagrees)


def predict(product: Any) -> tuple[str, float] | None:
    """The active classifier's category and confidence for one product, or None."""
    record = CategoryClassifier.objects.filter(is_active=True).first()
    if record is None:
        return None
    vec = (
        ProductVector.objects.filter(
            content_type=product_content_type(), object_id=str(product.pk), model_id=record.model_id
        )
        .values_list("vector", flat=True)
        .first()
    )
    if vec is None:
        return None
    X = np.asarray(vec, dtype=np.float32)[None, :]
    if record.text_model_id:
        X = _with_text([str(product.pk)], X, record.text_model_id, len(record.coef[0]) - X.shape[1])
    probs = _scores(record, X)[0]
    best = int(probs.argmax())
    return record.categories[best], float(probs[best])


def apply_suggestion(prediction: CategoryPrediction) -> bool:
    """Set the product's category to the predicted one (field-based categories only)."""
    from imgrec_app.hosts import category_field_lookup

    field = category_field_lookup()
    if field is None:
        return False
    model = get_product_model()
    updated = model._default_manager.filter(pk=prediction.object_id).update(**{field: prediction.category})
    if updated:
        CategoryPrediction.objects.filter(pk=prediction.pk).update(assigned_category=prediction.category)
    return bool(updated)
