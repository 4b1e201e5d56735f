"""Held-out evaluation of catalogue tuning: k-fold by product, tuned vs untuned, side by side.

Anything learned from the catalogue is measured only on products it did not see.  The products
are split into k folds; for each fold a head is trained on the other folds' products (their
vectors, categories, texts and pairs: the held-out products contribute nothing), every product
is embedded with that head, and then, for the held-out products only:

* **image-only precision@k**: the share of a held-out product's k nearest products (cosine, among
  the shop's recommendable products, itself excluded) that have its category; the untuned row is
  the same computation on the base vectors, so the two differ only by the head;
* **as configured precision@k**: the same, on the shelf's fusion with ``SIMILAR_WEIGHTS``
  (co-views left out): untuned = base image + text cosines (the shelf before tuning), tuned =
  head image + text + learned (image + text head, also trained on the training folds only);
* **classifier accuracy**: a logistic regression fitted on the training folds' (tuned or base)
  vectors predicts the held-out products' categories.

The shelves here are exact cosine k-NN in numpy (5 heads cannot each get a serving index), i.e.
the image part of the similar-products shelf without its near-duplicate collapse and diversity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from imgrec_app.ml.head import (
    HeadConfig,
    ProjectionHead,
    TrainingData,
    TrainingDataError,
    learned_input,
    train_head,
    train_learned_head,
)

LABEL = "Learned catalogue (held-out, k-fold by product)"


def _subset(data: TrainingData, rows: np.ndarray) -> TrainingData:
    pairs = None
    if data.pairs is not None and len(data.pairs):
        keep = set(int(r) for r in rows)
        position = {int(r): n for n, r in enumerate(rows)}
        mapped = [(position[a], position[b]) for a, b in data.pairs.tolist() if a in keep and b in keep]
        pairs = np.asarray(mapped, dtype=np.int64) if mapped else None
    return TrainingData(
        vectors=data.vectors[rows],
        labels=data.labels[rows],
        text=data.text[rows] if data.text is not None else None,
        pairs=pairs,
    )


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def precision_at_k(
    vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> np.ndarray:
    """precision@k of each query row: share of its k nearest candidates with its label."""
    return fused_precision_at_k([(1.0, vectors)], labels, queries, candidates, k)


def fused_precision_at_k(
    parts: list[tuple[float, np.ndarray]], labels: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> np.ndarray:
    """precision@k on the weighted sum of cosines, ``Σ weight · cos(vectors)`` (the shelf's fusion).

    A row of zeros (a product without that modality) contributes 0, as a missing part does on
    the shelf.
    """
    sims = np.zeros((len(queries), len(candidates)), dtype=np.float32)
    for weight, vectors in parts:
        if weight:
            V = _unit(np.asarray(vectors, dtype=np.float32))
            sims += weight * (V[queries] @ V[candidates].T)
    sims[queries[:, None] == candidates[None, :]] = -np.inf  # never its own neighbour
    kk = min(k, len(candidates) - 1)
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((len(queries), 0), dtype=int)
    hits = labels[candidates][top] == labels[queries][:, None]
    return hits.sum(axis=1) / k


def _classifier_accuracy(X: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float | None:
    from imgrec_app.ml.linear import ChosenCLogistic

    tr = train[labels[train] >= 0]
    te = test[labels[test] >= 0]
    if len(te) == 0 or len(np.unique(labels[tr])) < 2:
        return None
    clf = ChosenCLogistic()  # the shop classifier's learner, C chosen on the training fold
    clf.fit(X[tr], labels[tr])
    return float(np.mean(clf.predict(X[te]) == labels[te]))


def _configured_weights(has_text: bool) -> dict[str, float]:
    """The shelf's image/text/learned weights (``SIMILAR_WEIGHTS``; co-views are not simulated)."""
    from imgrec_app.conf import imgrec_settings

    weights = imgrec_settings.SIMILAR_WEIGHTS
    return {
        "image": float(weights.get("image", 1.0)),
        "text": float(weights.get("text", 0.0)) if has_text else 0.0,
        "learned": float(weights.get("learned", 0.0)) if has_text else 0.0,
    }


def _learned_vectors(data: TrainingData, train: np.ndarray, config: HeadConfig) -> np.ndarray | None:
    """Every product's learned (image + text) vector from a head trained on ``train`` only.

    Products without text get a row of zeros (they have no learned vector on the shelf either).
    """
    if not config.learned or data.text is None:
        return None
    try:
        joint = train_learned_head(_subset(data, train), config)
    except TrainingDataError:
        return None
    has = np.abs(np.asarray(data.text)).sum(axis=1) > 0
    out = np.zeros((len(data.vectors), joint.dim), dtype=np.float32)
    out[has] = joint.apply(learned_input(data.vectors[has], data.text[has]))
    return out


def held_out(
    catalogue: Any,
    config: HeadConfig,
    *,
    folds: int = 5,
    k: int = 10,
    seed: int = 0,
    candidates: list[str] | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """k-fold held-out scores of a head configuration on a catalogue (:class:`tuning.Catalogue`).

    Args:
        catalogue: product ids and :class:`TrainingData`.
        config: the head to train in each fold.
        folds: k of the k-fold split by product.
        k: shelf length of precision@k.
        seed: the split's shuffle.
        candidates: product ids a shelf may show (default: the shop's recommendable products).
        on_fold: called ``(folds done, folds)`` after each fold.

    Returns:
        ``untuned`` and ``tuned`` precision/classifier scores, ``gain`` (precision), sizes, timing.
    """
    data: TrainingData = catalogue.data
    ids: list[str] = catalogue.ids
    n = len(ids)
    started = time.perf_counter()
    if candidates is None:
        from imgrec_app.hosts import product_key, recommendable_products

        allowed = {product_key(pk) for pk in recommendable_products().values_list("pk", flat=True)}
    else:
        allowed = set(candidates)
    cand = np.array([r for r, i in enumerate(ids) if i in allowed], dtype=np.int64)
    labels = np.asarray(data.labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    split = np.array_split(order, folds)
    base = _unit(np.asarray(data.vectors, dtype=np.float32))
    try:
        from threadpoolctl import threadpool_limits

        # Small matrices: one BLAS thread (spinning threads on a busy machine cost 10×).
        limits = threadpool_limits(config.threads) if config.threads else None
    except ImportError:  # pragma: no cover - comes with scikit-learn
        limits = None
    scores: dict[str, dict[str, list[float]]] = {
        "untuned": {"precision": [], "configured": [], "classifier": []},
        "tuned": {"precision": [], "configured": [], "classifier": []},
    }
    text = _unit(np.asarray(data.text, dtype=np.float32)) if data.text is not None else None
    w = _configured_weights(text is not None)
    per_fold = []
    for f, test in enumerate(split):
        train = np.setdiff1d(order, test)
        head: ProjectionHead = train_head(_subset(data, train), config)
        tuned = head.apply(data.vectors)
        joint = _learned_vectors(data, train, config) if w["learned"] else None
        queries = test[labels[test] >= 0]
        row: dict[str, Any] = {"fold": f + 1, "queries": int(len(queries))}
        for name, X in (("untuned", base), ("tuned", tuned)):
            if len(queries) and len(cand) > 1:
                p = precision_at_k(X, labels, queries, cand, k)
                scores[name]["precision"] += p.tolist()
                row[f"{name}_precision"] = float(p.mean())
                parts = [(w["image"], X)]
                if text is not None:
                    parts.append((w["text"], text))
                if name == "tuned" and joint is not None:
                    parts.append((w["learned"], joint))
                c = fused_precision_at_k(parts, labels, queries, cand, k)
                scores[name]["configured"] += c.tolist()
                row[f"{name}_configured"] = float(c.mean())
            acc = _classifier_accuracy(X, labels, train, test)
            if acc is not None:
                scores[name]["classifier"] += [acc] * int(np.sum(labels[test] >= 0))
                row[f"{name}_classifier"] = acc
        per_fold.append(row)
        if on_fold:
            on_fold(f + 1, folds)
    if limits is not None:
        limits.restore_original_limits()
    out: dict[str, Any] = {"label": LABEL, "folds": folds, "k": k, "products": n, "candidates": int(len(cand))}
    for name, values in scores.items():
        out[name] = {metric: (float(np.mean(v)) if v else None) for metric, v in values.items()}
    up, tp = out["untuned"]["precision"], out["tuned"]["precision"]
    out["gain"] = (tp - up) if up is not None and tp is not None else None
    out["per_fold"] = per_fold
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def evaluate_tuning(*, folds: int = 5, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """The held-out tuning rows of ``imgrec_evaluate``: the configured head on the base vectors.

    Returns ``{"skipped": reason}`` when the catalogue cannot be tuned (see ``tuning.check``).
    """
    from imgrec_app.services import tuning
    from imgrec_app.services.models import configured_model, serving_model

    ref = configured_model()
    catalogue = tuning.gather(ref.model_id)
    try:
        tuning.check(catalogue)
    except tuning.TuningRefused as exc:
        return {"label": LABEL, "skipped": str(exc)}
    out = held_out(catalogue, tuning.head_config(), folds=max(2, folds), k=k, seed=seed)
    out["base_model"] = ref.model_id
    serving = serving_model()
    active = tuning.active_run(ref.model_id)
    out["serving_model"] = serving.model_id if serving else None
    if active is not None:
        out["active_run"] = {"run": active.pk, "model_id": active.model_id, "metrics": active.metrics}
    if serving is not None and serving.model_id != ref.model_id:
        from imgrec_app.services.classifier import learning_model_id

        if learning_model_id(serving.model_id) != serving.model_id:
            above = "the similar-products and classifier rows above are measured on its base vectors (untuned)"
        else:
            above = "its base vectors are gone, so the similar-products and classifier rows above are IN-SAMPLE"
        out["note"] = (
            f"Shelves are served by the tuned {serving.model_id}, trained on every product's category: {above}. "
            "The held-out rows here compare tuned and untuned on products the head did not see."
        )
    return out


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Console/report rows: untuned vs tuned, held-out."""
    if not result:
        return []
    if result.get("skipped"):
        return [(LABEL, "skipped", result["skipped"])]
    section = f"{LABEL}: {result['folds']} folds, k = {result['k']}"

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    rows = [
        (section, "image-only precision@k, untuned (base vectors)", pct(result["untuned"]["precision"])),
        (section, "image-only precision@k, tuned head", pct(result["tuned"]["precision"])),
        (
            section,
            "as configured precision@k, untuned (base image + text vectors)",
            pct(result["untuned"].get("configured")),
        ),
        (
            section,
            "as configured precision@k, tuned (head + text + learned image + text vectors)",
            pct(result["tuned"].get("configured")),
        ),
        (section, "classifier accuracy, untuned (base vectors)", pct(result["untuned"]["classifier"])),
        (section, "classifier accuracy, tuned head", pct(result["tuned"]["classifier"])),
    ]
    if result.get("note"):
        rows.append((section, "note", result["note"]))
    return rows
