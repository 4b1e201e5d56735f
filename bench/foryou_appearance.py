"""Would an appearance preference read from the history's photos lift "recommended for you"?

An exploration on the simulated shoppers (no shelf is built, no database writes; seconds): each
shopper's unseen products are ranked by an estimate of P(next view) — the history's category
shares (85 % / 15 % as the generator mixes them) × the product's share of its category's views
(+1) — multiplied by ``exp(beta · feature)``, for

- ``appearance``: cosine between the product's image vector minus its category's mean vector and
  the mean of the same residuals over the history (the part of a photo its category does not
  explain: colour, style);
- ``nearest``: the product's largest image cosine to a history product;
- ``DIAGNOSTIC colour``: 1 when the product's colour family (the simulation's own hue histogram,
  ``evaluation_taste.colour_family``) is the history's most frequent one. It reads the
  simulation's ground truth, so it is not a shelf imgrec could ship: it bounds what a perfect
  colour reader gains with this ranking.

``beta = 0`` is the estimate alone. Ratios are to the best baseline ("most popular in the viewed
categories", as ``imgrec_evaluate`` builds it) of the same shoppers.

    REDIS_URL=... IMGREC_VAR_DIR=var/demo python bench/foryou_appearance.py --seeds 6
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--shoppers", type=int, default=200)
    p.add_argument("--shopper-model", choices=("category", "taste"), default="taste")
    p.add_argument("--betas", default="0,1,2,4")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_demo.settings")
    import django

    django.setup()
    from bench.foryou_grid import _baseline_shelf, _category_truth, _taste_truth
    from imgrec_app.services.evaluation import load_catalogue
    from imgrec_app.services.evaluation_common import HELD_OUT_SHARE, PREFERRED_SHARE
    from imgrec_app.services.evaluation_taste import product_colours
    from imgrec_app.services.models import configured_model
    from imgrec_app.services.search import vectors_of

    catalogue = load_catalogue()
    colours = product_colours(catalogue)
    found = vectors_of(sorted(catalogue.recommendable), model_id=configured_model().model_id)
    items = sorted(found)
    X = np.stack([found[i] for i in items]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    row = {i: n for n, i in enumerate(items)}
    cats = [catalogue.category.get(i) for i in items]
    centre = {c: X[[n for n, cc in enumerate(cats) if cc == c]].mean(axis=0) for c in set(cats)}
    residual = np.stack([X[n] - centre[cats[n]] for n in range(len(items))])
    residual /= np.maximum(np.linalg.norm(residual, axis=1, keepdims=True), 1e-9)
    betas = [float(b) for b in args.betas.split(",")]
    hits: dict[str, list[bool]] = defaultdict(list)
    for seed in range(args.seeds):
        rng = random.Random(1000 + seed)
        if args.shopper_model == "taste":
            browsed, _ = _taste_truth(catalogue, rng, args.shoppers, 10, colours)
        else:
            browsed, _ = _category_truth(catalogue, rng, args.shoppers, 10)
        cut = [max(1, round(HELD_OUT_SHARE * len(b))) for b in browsed]
        split = [(b[:-n], b[-n:]) for b, n in zip(browsed, cut)]
        views = Counter(i for seen, _ in split for i in seen)
        ranked = sorted(catalogue.recommendable, key=lambda i: -views.get(i, 0))
        ranked_in: dict[str, list[str]] = defaultdict(list)
        for i in ranked:
            ranked_in[catalogue.category.get(i)].append(i)
        pop = np.array([views.get(i, 0) + 1.0 for i in items])
        cat_views: Counter = Counter()
        for n, c in enumerate(cats):
            cat_views[c] += pop[n]
        within = np.array([pop[n] / cat_views[cats[n]] for n in range(len(items))])
        n_cats = len(set(cats))
        for seen, held in split:
            held_set = set(held)
            hits["best baseline"].append(
                bool(held_set & set(_baseline_shelf(catalogue, ranked, ranked_in, seen, args.k)))
            )
            shares = Counter(catalogue.category.get(i) for i in seen)
            p_cat = np.array(
                [PREFERRED_SHARE * shares.get(c, 0) / len(seen) + (1 - PREFERRED_SHARE) / n_cats for c in cats]
            )
            rows = [row[i] for i in seen if i in row]
            taste = residual[rows].mean(axis=0)
            features = {
                "appearance": residual @ (taste / max(float(np.linalg.norm(taste)), 1e-9)),
                "nearest": (X @ X[rows].T).max(axis=1),
            }
            top_colour = Counter(colours.get(i) for i in seen if colours.get(i)).most_common(1)
            features["DIAGNOSTIC colour"] = np.array(
                [float(bool(top_colour) and colours.get(i) == top_colour[0][0]) for i in items]
            )
            seen_mask = np.array([i in set(seen) for i in items])
            for name, feature in features.items():
                for beta in betas:
                    score = p_cat * within * np.exp(beta * feature)
                    score[seen_mask] = -1.0
                    top = {items[n] for n in np.argsort(-score)[: args.k]}
                    hits[f"{name}, beta {beta:g}"].append(bool(held_set & top))
    base = float(np.mean(hits["best baseline"]))
    print(f"{len(items)} products, {args.seeds} seeds x {args.shoppers} {args.shopper_model} shoppers")
    for name, h in hits.items():
        print(f"  {name:28s} hit rate {np.mean(h):.3f}  {np.mean(h) / base:.3f} x")


if __name__ == "__main__":
    main()
