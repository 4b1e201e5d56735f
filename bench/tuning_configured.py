"""Held-out (k-fold by product) shelves and classifiers as a shop configures them, tuned vs untuned.

``imgrec_evaluate``'s similar-products and classifier sections read the SERVING vectors; once a
tuned head serves, it was trained on every categorised product, so those sections are in-sample.
This bench gives the held-out version of the rows issue 11 asks for, from
``bench/finetune_cache.py``'s caches (no Django), for the base vectors ``gem`` (``prod1-gem``) and
``multi`` (``prod1-gem-multi``, the same vectors as the encoder's ``"gem+multi"`` pooling):

- **image-only p@10**: cosine k-NN of each held-out product among all products, itself excluded;
- **as configured p@10**: the similar shelf's fusion without co-views (no history in a catalogue):
  ``image · cos(image) + text · cos(text)`` with ``SIMILAR_WEIGHTS`` (``--text-weight``, default
  1.0, the configured default); near-duplicate collapse and diversity are left out;
- **classifier image-only** / **image + text**: ``LogisticRegression(C=2)`` fitted on the training
  folds' vectors (image, or image with the text vector appended, as ``services/classifier.py``
  does), scored on the held-out products.

Tuned rows: a head (``ml/head.py``, ``HeadConfig`` JSON) trained on the training folds only (their
vectors, categories and texts) embeds every product; the held-out products' texts are only used
where a shop uses them at query time (the text half of the fused shelf, the text half of the
classifier's input).  The folds are those of ``services/evaluation_tuning.held_out`` (seed 0).

    nice -n 5 .venv/bin/python bench/tuning_configured.py --catalogue demo --bases gem multi
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.finetune_cache import cache_path  # noqa: E402
from bench.tuning_finetune import add_multi_layer  # noqa: E402


def fused_precision(
    image: np.ndarray, text: np.ndarray, labels: np.ndarray, queries: np.ndarray, w_text: float, k: int
) -> np.ndarray:
    """precision@k of each query on ``cos(image) + w_text · cos(text)`` over all other products."""
    from imgrec_app.services.evaluation_tuning import _unit

    img, txt = _unit(image), _unit(text)
    sims = img[queries] @ img.T + w_text * (txt[queries] @ txt.T)
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return (labels[top] == labels[queries][:, None]).sum(axis=1) / k


def measure(z: dict, base: str, config: dict, folds: int, k: int, seed: int, w_text: float) -> dict[str, dict]:
    from imgrec_app.ml.head import HeadConfig, TrainingData, train_head
    from imgrec_app.services.evaluation_tuning import _classifier_accuracy, _subset

    X, labels, text = z[base].astype(np.float32), z["labels"], z["text"].astype(np.float32)
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    data = TrainingData(X, labels, text, None)
    rows: dict[str, dict[str, list[float]]] = {
        name: {"image-only p@10": [], "as configured p@10": [], "clf image": [], "clf image+text": []}
        for name in ("untuned", "tuned")
    }
    for test in np.array_split(order, folds):
        train = np.setdiff1d(order, test)
        head = train_head(_subset(data, train), HeadConfig.from_dict(config))
        for name, V in (("untuned", X), ("tuned", head.apply(X))):
            r = rows[name]
            r["image-only p@10"] += fused_precision(V, text, labels, test, 0.0, k).tolist()
            r["as configured p@10"] += fused_precision(V, text, labels, test, w_text, k).tolist()
            r["clf image"] += [_classifier_accuracy(V, labels, train, test)] * len(test)
            both = np.hstack([V, text])
            r["clf image+text"] += [_classifier_accuracy(both, labels, train, test)] * len(test)
    return {name: {m: float(np.mean(v)) for m, v in r.items()} for name, r in rows.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalogue", default="demo")
    p.add_argument("--variant", default="lite0-prod")
    p.add_argument("--bases", nargs="+", default=["gem", "multi"])
    p.add_argument("--config", default="{}", help="HeadConfig JSON")
    p.add_argument("--text-weight", type=float, default=1.0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = p.parse_args()
    z = dict(np.load(cache_path(args.catalogue, args.variant), allow_pickle=False))
    add_multi_layer(z)
    print(f"{args.catalogue} {args.variant}: {len(z['labels'])} products, text weight {args.text_weight}", flush=True)
    for base in args.bases:
        started = time.perf_counter()
        result = measure(z, base, json.loads(args.config), args.folds, args.k, args.seed, args.text_weight)
        seconds = round(time.perf_counter() - started)
        for name, r in result.items():
            cells = "  ".join(f"{m} {v:.3f}" for m, v in r.items())
            print(f"{args.catalogue:8s} {base:6s} {name:8s} {cells}  ({seconds} s)", flush=True)
        if args.out:
            with args.out.open("a") as fh:
                fh.write(json.dumps({"catalogue": args.catalogue, "base": base, **result, "seconds": seconds}) + "\n")


if __name__ == "__main__":
    main()
