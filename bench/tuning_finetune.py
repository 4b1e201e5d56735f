"""Held-out (k-fold by product) quality of catalogue tuning variants, from ``bench/finetune_cache.py``'s caches.

Rows (each measured on products its training did not see, the folds drawn by product exactly as
``services/evaluation_tuning.held_out`` draws them):

- ``base:<pool>``: the frozen base vectors (``avg`` or ``gem``), untuned;
- ``head:<pool> {...}``: the projection head of ``ml/head.py`` (``HeadConfig`` JSON) on those vectors
  (``held_out`` itself);
- ``tail {...}``: partial fine-tuning (``ml/finetune.py``, ``FinetuneConfig`` JSON): the last
  block(s) + head conv + projection, trained from the cached activations of the training folds.

For each: image-only precision@10 (cosine k-NN of each held-out product among ALL products of the
catalogue, itself excluded: the leave-one-out candidates of ``bench/feature_variants.py``), and
held-out classifier accuracy: a logistic regression (C = 2) on the vectors, and for tails also the
trained cosine classifier (nearest class proxy) and a 10-NN vote among the training products.
No Django.

    nice -n 10 .venv/bin/python bench/tuning_finetune.py --catalogue demo --variant lite0-prod \
        --rows base:gem 'head:gem {}' 'tail {}' 'tail {"tap": 12}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.finetune_cache import VARIANTS, cache_path  # noqa: E402


def folds_of(n: int, folds: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    order = np.random.default_rng(seed).permutation(n)
    return order, np.array_split(order, folds)


def knn_vote(X: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, k: int = 10) -> float:
    sims = X[test] @ X[train].T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    votes = labels[train][top]
    pred = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
    return float(np.mean(pred == labels[test]))


def run_tail(z: Any, options: dict[str, Any], folds: int, k: int, seed: int, net: Any) -> dict[str, Any]:
    from imgrec_app.ml.finetune import FinetuneConfig, train_tail
    from imgrec_app.services.evaluation_tuning import _classifier_accuracy, precision_at_k

    config = FinetuneConfig.from_dict(options)
    acts = z[f"act{config.tap}"]
    labels = z["labels"]
    text = z["text"]
    n = len(labels)
    order, split = folds_of(n, folds, seed)
    cand = np.arange(n)
    prec: list[float] = []
    scores: dict[str, list[float]] = {"logistic": [], "proxies": [], "knn": []}
    for test in split:
        train = np.setdiff1d(order, test)
        tail = train_tail(net, acts[train], labels[train], text[train], config)
        X = tail.apply(acts)
        prec += precision_at_k(X, labels, test, cand, k).tolist()
        scores["logistic"] += [_classifier_accuracy(X, labels, train, test)] * len(test)
        scores["proxies"] += (tail.predict(X[test]) == labels[test]).tolist()
        scores["knn"] += [knn_vote(X, labels, train, test)] * len(test)
    return {"precision": float(np.mean(prec)), **{f"clf {m}": float(np.mean(v)) for m, v in scores.items()}}


def run_head(z: Any, pool: str, options: dict[str, Any], folds: int, k: int, seed: int) -> dict[str, Any]:
    from imgrec_app.ml.head import HeadConfig, TrainingData
    from imgrec_app.services.evaluation_tuning import held_out

    ids = [str(s) for s in z["slugs"]]
    catalogue = SimpleNamespace(ids=ids, data=TrainingData(z[pool], z["labels"], z["text"], None))
    r = held_out(catalogue, HeadConfig.from_dict(options), folds=folds, k=k, seed=seed, candidates=ids)
    return {
        "precision": r["tuned"]["precision"],
        "clf logistic": r["tuned"]["classifier"],
        "untuned precision": r["untuned"]["precision"],
        "untuned clf logistic": r["untuned"]["classifier"],
    }


def run_base(z: Any, pool: str, folds: int, k: int, seed: int, classifiers: bool = True) -> dict[str, Any]:
    from imgrec_app.services.evaluation_tuning import _classifier_accuracy, precision_at_k

    X, labels = z[pool], z["labels"]
    n = len(labels)
    order, split = folds_of(n, folds, seed)
    prec, clf, knn = [], [], []
    for test in split:
        train = np.setdiff1d(order, test)
        prec += precision_at_k(X, labels, test, np.arange(n), k).tolist()
        if classifiers:
            clf += [_classifier_accuracy(X, labels, train, test)] * len(test)
            knn += [knn_vote(X, labels, train, test)] * len(test)
    out = {"precision": float(np.mean(prec))}
    if classifiers:
        out.update({"clf logistic": float(np.mean(clf)), "clf knn": float(np.mean(knn))})
    return out


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def add_multi_layer(z: dict[str, Any], weight: float = 0.5) -> None:
    """Multi-layer base vectors: the GeM vector with the average-pooled inputs of blocks 12 and 15.

    ``multi``: ``[gem, w·avg(act12), w·avg(act15)]``, each part unit length, the whole unit length
    (the intermediate maps are block outputs, signed: averaged, not GeM-pooled).
    """
    parts = [z["gem"]]
    for tap in (12, 15):
        if f"act{tap}" in z:
            parts.append(weight * _unit(z[f"act{tap}"].astype(np.float32).mean(axis=(2, 3))))
    if len(parts) > 1:
        z["multi"] = _unit(np.concatenate([_unit(parts[0]), *parts[1:]], axis=1)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalogue", default="demo")
    p.add_argument("--variant", default="lite0-prod")
    p.add_argument("--rows", nargs="+", default=["base:gem", "head:gem {}", "tail {}"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-classifier", action="store_true", help="base rows: precision only (fast)")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = p.parse_args()
    z = dict(np.load(cache_path(args.catalogue, args.variant), allow_pickle=False))
    add_multi_layer(z)
    n, c = len(z["labels"]), len(set(z["labels"].tolist()))
    print(f"{args.catalogue} {args.variant} ({z['model_id']}): {n} products, {c} categories", flush=True)
    net = None
    for row in args.rows:
        kind, _, raw = row.partition(" ")
        options = json.loads(raw) if raw.strip() else {}
        started = time.perf_counter()
        if kind.startswith("base:"):
            r = run_base(z, kind.split(":")[1], args.folds, args.k, args.seed, not args.no_classifier)
        elif kind.startswith("head:"):
            r = run_head(z, kind.split(":")[1], options, args.folds, args.k, args.seed)
        elif kind == "tail":
            if net is None:
                from imgrec_app.ml.encoder import Encoder
                from imgrec_app.ml.registry import get_backbone

                backbone, opts = VARIANTS[args.variant]
                net = Encoder(get_backbone(backbone), options=opts, device="cpu", top_labels=0).model.net
            r = run_tail(z, options, args.folds, args.k, args.seed, net)
        else:
            raise SystemExit(f"unknown row {row!r}")
        r["seconds"] = round(time.perf_counter() - started)
        cells = " ".join(
            f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}" for key, value in r.items()
        )
        print(f"{args.catalogue:8s} {args.variant:11s} {row:50s} {cells}", flush=True)
        if args.out:
            with args.out.open("a") as fh:
                fh.write(json.dumps({"catalogue": args.catalogue, "variant": args.variant, "row": row, **r}) + "\n")


if __name__ == "__main__":
    main()
