"""Held-out (k-fold by product) ways of fusing image and text for the similar shelf, tuned vs untuned.

Exploratory companion of ``bench/tuning_configured.py`` (same caches, same folds): for each fold,
heads trained on the training folds only, then precision@10 of the held-out products among all
products for

- ``img+w·txt``: the shelf's fusion today, ``cos(image head) + w · cos(raw text)``;
- ``img+w·txthead``: the text vectors through a head of their own (``train_head`` on the text
  vectors, categories only), ``cos(image head) + w · cos(text head)``;
- ``zscore``: each modality's cosines standardised over the candidates before the sum;
- ``joint``: one head on ``[image, text]`` (both unit length), its cosine alone, and fused with
  the others (``img head + txt raw + w·joint``: what a tuned shop serves since the learned
  modality, ``services/learned.py``, with ``w = SIMILAR_WEIGHTS["learned"]``).

    nice -n 5 .venv/bin/python bench/fusion_variants.py --catalogue demo --base multi
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


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def precision(sims: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> list[float]:
    sims = sims.copy()
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return ((labels[top] == labels[queries][:, None]).sum(axis=1) / k).tolist()


def zscore(s: np.ndarray, queries: np.ndarray) -> np.ndarray:
    s = s.copy()
    s[np.arange(len(queries)), queries] = np.nan
    mu = np.nanmean(s, axis=1, keepdims=True)
    sd = np.nanstd(s, axis=1, keepdims=True)
    out = (s - mu) / np.maximum(sd, 1e-6)
    return np.nan_to_num(out, nan=-np.inf)


def main() -> None:
    from imgrec_app.ml.head import HeadConfig, TrainingData, train_head

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalogue", default="demo")
    p.add_argument("--variant", default="lite0-prod")
    p.add_argument("--base", default="multi")
    p.add_argument("--weights", default="1,2,3,4,6")
    p.add_argument("--config", default="{}")
    p.add_argument("--text-config", default='{"text_weight": 0}')
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    z = dict(np.load(cache_path(args.catalogue, args.variant), allow_pickle=False))
    add_multi_layer(z)
    X, labels, T = z[args.base].astype(np.float32), z["labels"], z["text"].astype(np.float32)
    ws = [float(w) for w in args.weights.split(",")]
    n = len(labels)
    order = np.random.default_rng(args.seed).permutation(n)
    rows: dict[str, list[float]] = {}
    started = time.perf_counter()
    cfg, tcfg = HeadConfig.from_dict(json.loads(args.config)), HeadConfig.from_dict(json.loads(args.text_config))
    for test in np.array_split(order, args.folds):
        train = np.setdiff1d(order, test)
        ihead = train_head(TrainingData(X[train], labels[train], T[train], None), cfg)
        thead = train_head(TrainingData(T[train], labels[train], None, None), tcfg)
        J = np.hstack([_unit(X), _unit(T)])
        jhead = train_head(TrainingData(J[train], labels[train], None, None), tcfg)
        Ih, Tr, Th, Jh = ihead.apply(X), _unit(T), thead.apply(T), jhead.apply(J)
        si, st, sth = Ih[test] @ Ih.T, Tr[test] @ Tr.T, Th[test] @ Th.T
        s_raw_i = _unit(X)[test] @ _unit(X).T

        def add(name: str, s: np.ndarray, test: np.ndarray = test) -> None:
            rows.setdefault(name, []).extend(precision(s, labels, test, args.k))

        add("image head", si)
        add("image raw", s_raw_i)
        add("text raw", st)
        add("text head", sth)
        add("joint head", Jh[test] @ Jh.T)
        sj = Jh[test] @ Jh.T
        J0 = jhead.apply(np.hstack([_unit(X), np.zeros_like(T)]))
        add("joint(img,0) among joint(img,0)", J0[test] @ J0.T)
        add("joint(img,0) among joint(img,txt)", J0[test] @ Jh.T)
        for w in ws:
            add(f"img head + {w:g}·joint", si + w * sj)
            add(f"img head + txt raw + {w:g}·joint", si + st + w * sj)
            add(f"img head + {w:g}·txt raw", si + w * st)
            add(f"img head + {w:g}·txt head", si + w * sth)
            add(f"img raw + {w:g}·txt raw", s_raw_i + w * st)
            add(f"z(img head) + {w:g}·z(txt raw)", zscore(si, test) + w * zscore(st, test))
            add(f"z(img head) + {w:g}·z(txt head)", zscore(si, test) + w * zscore(sth, test))
    print(f"{args.catalogue} {args.base}: {n} products, {round(time.perf_counter() - started)} s")
    for name, v in rows.items():
        print(f"{np.mean(v):.3f}  {name}")


if __name__ == "__main__":
    main()
