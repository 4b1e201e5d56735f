"""Recommended for you on simulated shoppers: the grid chosen on one half, read on the other.

    REDIS_URL=... IMGREC_VAR_DIR=var/demo python bench/foryou_grid.py [--seed 0] [--shoppers 200]
        [--out var/demo/foryou-grid-0.json] [--ceiling 20] [--shopper-model taste] [--background N]

Runs the for-you part of ``imgrec_evaluate --foryou-grid`` (``evaluate_for_you`` with the same
``Random(seed + 2)`` as ``imgrec_evaluate --seed``: the same shoppers) and prints:

* the main table: the service as configured (``FORYOU_WEIGHTS``) and the baselines, all shoppers;
* the grid's best setting chosen on the "choose" half of the shoppers (even positions), and its
  hit rate on the "check" half (odd positions) next to the best baseline's on that half;
* with ``--ceiling N``: what the simulation allows at all, on N more seeds of the same generator
  (``simulate_shoppers`` on this catalogue, no database): the best baseline against an oracle that
  knows each shopper's true categories and the true popularity (the generator's own 1/rank
  weights), ranking unseen products by P(next view).  The oracle is the best any shelf can do on
  these shoppers in expectation; if it is below 1.1 × the baseline, so is every recommender.

Everything the evaluation writes is rolled back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _take(ranked: list[str], exclude: set[str], n: int) -> list[str]:
    return [i for i in ranked if i not in exclude][:n]


def _category_truth(catalogue: Any, rng: random.Random, count: int, events: int) -> tuple[list, list]:
    """The default shoppers, and for each the generator's P(next view) as a function of what was seen."""
    from imgrec_app.services.evaluation_common import PREFERRED_SHARE
    from imgrec_app.services.evaluation_foryou import simulate_shoppers

    state = rng.getstate()
    sessions = simulate_shoppers(catalogue, count=count, events=events, rng=rng)
    # The generator's popularity: replay its first draws (one shuffle per category, sorted).
    replay = random.Random()
    replay.setstate(state)
    by_cat: dict[str, list[str]] = defaultdict(list)
    for item in catalogue.recommendable:
        if catalogue.category.get(item) is not None:
            by_cat[catalogue.category[item]].append(item)
    cats = sorted((c for c, items in by_cat.items() if len(items) >= 3), key=str)
    prior: dict[str, float] = {}
    for c in cats:
        ranking = list(by_cat[c])
        replay.shuffle(ranking)
        prior.update({item: 1.0 / (rank + 1) for rank, item in enumerate(ranking)})

    def truth(preferred: list[str]) -> Any:
        share = {preferred[0]: 1.0} if len(preferred) == 1 else {preferred[0]: 0.65, preferred[1]: 0.35}

        def p_next(seen: set[str]) -> dict[str, float]:
            p: dict[str, float] = {}
            for c in cats:
                unseen = [i for i in by_cat[c] if i not in seen]
                total = sum(prior[i] for i in unseen) or 1.0
                for i in unseen:
                    p[i] = (PREFERRED_SHARE * share.get(c, 0.0) + (1 - PREFERRED_SHARE) / len(cats)) * prior[i] / total
            return p

        return p_next

    return [b for _, b in sessions], [truth(list(pref)) for pref, _ in sessions]


def _taste_truth(catalogue: Any, rng: random.Random, count: int, events: int, colours: dict) -> tuple[list, list]:
    """The taste shoppers, and for each the generator's exact P(next view)."""
    from imgrec_app.services.evaluation_taste import simulate_taste_shoppers, taste_next_view_probabilities

    world, sessions = simulate_taste_shoppers(catalogue, count=count, events=events, rng=rng, colours=colours)
    truths = [
        (lambda seen, shopper=shopper: taste_next_view_probabilities(world, shopper, seen)) for shopper, _ in sessions
    ]
    return [b for _, b in sessions], truths


def ceiling(
    catalogue: Any,
    *,
    seeds: int,
    shoppers: int,
    events: int,
    k: int,
    model: str = "category",
    background: int = 0,
    colours: dict | None = None,
) -> dict[str, float]:
    """Best baseline vs the oracle on ``seeds`` simulations of the real generator (no database).

    The oracle ranks each shopper's unseen products by the generator's own P(next view) (for the
    default shoppers with the expected main share 0.65 of two categories; exact for the taste
    shoppers); the baseline's popularity counts the evaluated shoppers' training views and every
    background shopper's views, as the evaluation does.
    """
    from imgrec_app.services.evaluation_common import HELD_OUT_SHARE

    base_hits, oracle_hits = [], []
    for seed in range(seeds):
        rng = random.Random(1000 + seed)
        if model == "taste":
            browsed, truths = _taste_truth(catalogue, rng, shoppers + background, events, colours or {})
        else:
            browsed, truths = _category_truth(catalogue, rng, shoppers + background, events)
        split = [
            (b[: -max(1, round(HELD_OUT_SHARE * len(b)))], b[-max(1, round(HELD_OUT_SHARE * len(b))) :])
            for b in browsed[:shoppers]
        ]
        views = Counter(i for seen, _ in split for i in seen)
        views.update(i for b in browsed[shoppers:] for i in b)
        ranked = sorted(catalogue.recommendable, key=lambda i: -views.get(i, 0))
        ranked_in: dict[str, list[str]] = defaultdict(list)
        for i in ranked:
            ranked_in[catalogue.category.get(i)].append(i)
        for truth, (seen, held) in zip(truths, split):
            base_hits.append(bool(set(held) & set(_baseline_shelf(catalogue, ranked, ranked_in, seen, k))))
            p = truth(set(seen))
            oracle_hits.append(bool(set(held) & set(sorted(p, key=lambda i: -p[i])[:k])))
    b, o = float(np.mean(base_hits)), float(np.mean(oracle_hits))
    return {"seeds": seeds, "shoppers_each": shoppers, "baseline": b, "oracle": o, "ratio": o / b, "model": model}


def _baseline_shelf(catalogue: Any, ranked: list[str], ranked_in: dict, seen: list[str], k: int) -> list[str]:
    """Baselines.category_popular: the viewed categories' most viewed products, by share."""
    taken = set(seen)
    weights = Counter(catalogue.category.get(i) for i in seen)
    shelf: list[str] = []
    for cat, w in sorted(weights.items(), key=lambda kv: -kv[1]):
        picked = _take(ranked_in.get(cat, []), taken, min(max(1, math.ceil(k * w / len(seen))), k - len(shelf)))
        shelf += picked
        taken.update(picked)
    return shelf + _take(ranked, taken, k - len(shelf))


def _estimated_p(i: str, catalogue: Any, world: Any, shopper: Any, share: dict, views: Counter) -> float:
    """P(next view) with the history's category shares, view counts (+1) and the TRUE taste."""
    from imgrec_app.services import evaluation_taste as et

    w = views.get(i, 0) + 1.0
    if shopper.colour is not None and world.colour.get(i) == shopper.colour:
        w *= et.TASTE_BOOST
    if world.style.get(i) == shopper.style:
        w *= et.TASTE_BOOST
    c = catalogue.category.get(i)
    return (et.PREFERRED_SHARE * share.get(c, 0.0) + (1 - et.PREFERRED_SHARE) / len(world.cats)) * w


def taste_bounds(catalogue: Any, *, seeds: int, shoppers: int, events: int, k: int, colours: dict) -> dict[str, float]:
    """What each piece of knowledge is worth on the taste shoppers: hit rate@k ÷ the best baseline.

    Rankers by the generator's own P(next view) (``taste_next_view_probabilities``) given more or
    less of the truth: the full oracle; without the taste (true categories and popularity only);
    with the categories *estimated* from the history's shares (all a shelf can know) and the true
    popularity, with and without the true colour and style; and with the categories estimated,
    the popularity estimated from the views (+1) and the true colour and style — an upper bound for
    any shelf that must estimate categories and popularity from the data, however well it reads
    the taste.
    """
    from imgrec_app.services import evaluation_taste as et
    from imgrec_app.services.evaluation_common import HELD_OUT_SHARE

    hits: dict[str, list[bool]] = defaultdict(list)
    for seed in range(seeds):
        rng = random.Random(1000 + seed)
        world, sessions = et.simulate_taste_shoppers(catalogue, count=shoppers, events=events, rng=rng, colours=colours)
        if world is None:
            break
        cut = [max(1, round(HELD_OUT_SHARE * len(b))) for _, b in sessions]
        split = [(b[:-n], b[-n:]) for (_, b), n in zip(sessions, cut)]
        views = Counter(i for seen, _ in split for i in seen)
        ranked = sorted(catalogue.recommendable, key=lambda i: -views.get(i, 0))
        ranked_in: dict[str, list[str]] = defaultdict(list)
        for i in ranked:
            ranked_in[catalogue.category.get(i)].append(i)
        candidates = [i for i in catalogue.recommendable if catalogue.category.get(i) in world.by_cat]
        for (shopper, _), (seen, held) in zip(sessions, split):
            held_set, seen_set = set(held), set(seen)
            hits["best baseline"].append(bool(held_set & set(_baseline_shelf(catalogue, ranked, ranked_in, seen, k))))
            shares = Counter(catalogue.category.get(i) for i in seen)
            est = ([c for c in shares], [n / len(seen) for n in shares.values()])
            rankers = {
                "oracle": (shopper.preferred, shopper.shares, shopper.colour, shopper.style),
                "oracle without the taste": (shopper.preferred, shopper.shares, None, -1),
                "estimated categories, true popularity": (*est, None, -1),
                "estimated categories, true popularity, true taste": (*est, shopper.colour, shopper.style),
            }
            for name, (pref, sh, colour, style) in rankers.items():
                who = et.TasteShopper(list(pref), list(sh), colour, style)
                p = et.taste_next_view_probabilities(world, who, seen_set)
                hits[name].append(bool(held_set & set(sorted(p, key=lambda i: -p[i])[:k])))
            share = dict(zip(*est))
            unseen = (i for i in candidates if i not in seen_set)
            top = sorted(unseen, key=lambda i: (-_estimated_p(i, catalogue, world, shopper, share, views), i))[:k]
            hits["estimated categories and popularity, true taste"].append(bool(held_set & set(top)))
    base = float(np.mean(hits["best baseline"]))
    return {name: float(np.mean(h)) / base for name, h in hits.items()} | {"baseline hit rate": base, "seeds": seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shoppers", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write the whole result as JSON")
    parser.add_argument("--no-grid", action="store_true", help="the main table only")
    parser.add_argument("--ceiling", type=int, default=0, help="also the oracle ceiling on N more seeds")
    parser.add_argument("--ceiling-only", action="store_true", help="only the ceiling (no shelves are built)")
    parser.add_argument("--shopper-model", choices=("category", "taste"), default="category")
    parser.add_argument("--background", type=int, default=0, help="background shoppers (written, never evaluated)")
    parser.add_argument("--taste-bounds", type=int, default=0, help="only taste_bounds() on N seeds (no shelves)")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_demo.settings")
    import django

    django.setup()
    from imgrec_app.services.evaluation import EvaluationOptions, _identity, evaluate_for_you, load_catalogue

    catalogue = load_catalogue()
    colours: dict[str, str] = {}
    if args.shopper_model == "taste":
        from imgrec_app.services.evaluation_taste import product_colours

        colours = product_colours(catalogue)
        print("colour families of the photos:", dict(Counter(colours.values()).most_common()))
    kw = {"model": args.shopper_model, "background": args.background, "colours": colours}
    if args.taste_bounds:
        from imgrec_app.services.evaluation_taste import product_colours

        colours = colours or product_colours(catalogue)
        b = taste_bounds(
            catalogue, seeds=args.taste_bounds, shoppers=args.shoppers, events=10, k=args.k, colours=colours
        )
        for name, value in b.items():
            print(f"  {name:50s} {value:.3f}")
        return
    if args.ceiling_only:
        c = ceiling(catalogue, seeds=args.ceiling or 20, shoppers=args.shoppers, events=10, k=args.k, **kw)
        print(json.dumps(c))
        return
    options = EvaluationOptions(
        k=args.k,
        seed=args.seed,
        simulated_shoppers=args.shoppers,
        foryou_grid=not args.no_grid,
        shopper_model=args.shopper_model,
        background_shoppers=args.background,
    )
    started = time.perf_counter()
    result = evaluate_for_you(catalogue, options, random.Random(args.seed + 2), _identity)
    result["seconds"] = time.perf_counter() - started
    if args.ceiling:
        result["ceiling"] = ceiling(catalogue, seeds=args.ceiling, shoppers=args.shoppers, events=10, k=args.k, **kw)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    print(
        f"{len(catalogue.recommendable)} recommendable products, {len(catalogue.category_names)} categories; "
        f"{result.get('shoppers')} shoppers (simulated: {result.get('simulated')}, model "
        f"{result.get('shopper_model')}, background {result.get('background_shoppers')}), seed {args.seed}, "
        f"{result.get('coview_pairs')} co-view pairs, {result['seconds']:.0f} s"
    )
    print(f"FORYOU_WEIGHTS {result['weights']}")
    for name, m in result.get("methods", {}).items():
        print(
            f"  {name:18s} hit rate {m['hit_rate']:.3f}  NDCG {m['ndcg']:.3f}  category match {m['category_match']:.3f}"
        )
    grid = result.get("grid")
    if grid:
        best = grid["best"]
        setting = {key: best[key] for key in ("interest", "coview", "category", "recency")}
        print(
            f"grid best on the 'choose' half: {setting}  choose {best['hit_rate_choose']:.3f} "
            f"(baseline {grid['baseline_hit_rate_choose']:.3f})  check {best['hit_rate_check']:.3f} "
            f"(baseline {grid['baseline_hit_rate_check']:.3f}, ratio "
            f"{best['hit_rate_check'] / grid['baseline_hit_rate_check']:.3f})"
        )
        for row in sorted(grid["rows"], key=lambda r: -r["hit_rate_choose"])[:12]:
            print(
                "  ",
                {key: row[key] for key in setting},
                f"choose {row['hit_rate_choose']:.3f} check {row['hit_rate_check']:.3f} "
                f"all {row['hit_rate']:.3f} ndcg {row['ndcg']:.3f}",
            )
    if "ceiling" in result:
        c = result["ceiling"]
        print(
            f"ceiling over {c['seeds']} seeds: baseline {c['baseline']:.3f}, "
            f"oracle {c['oracle']:.3f} = {c['ratio']:.3f} x"
        )


if __name__ == "__main__":
    main()
