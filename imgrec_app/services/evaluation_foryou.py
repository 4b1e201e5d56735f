"""Offline evaluation of "recommended for you" on held-out (real or simulated) browsing.

Part of :mod:`imgrec_app.services.evaluation` (which re-exports everything here).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db.models import Count
from django.http import HttpRequest
from django.test.utils import override_settings

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    product_content_type,
    recommendable_products,
)
from imgrec_app.models import Interaction
from imgrec_app.services import foryou, history, recommend
from imgrec_app.services.evaluation_common import (
    HELD_OUT_SHARE,
    MIN_REAL_EVENTS,
    MIN_REAL_VISITORS,
    PREFERRED_SHARE,
    SHOPPER_MODELS,
    Baselines,
    Catalogue,
    EvaluationOptions,
    Progress,
    ndcg,
    rolled_back,
)

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


def simulated_sessions(
    catalogue: Catalogue, options: EvaluationOptions, rng: random.Random
) -> list[tuple[list[str | None], list[str]]]:
    """``options.simulated_shoppers`` + ``options.background_shoppers`` sessions of the chosen
    shopper model (the evaluated ones first: the same shoppers whatever the background)."""
    count = options.simulated_shoppers + max(0, options.background_shoppers)
    if options.shopper_model == "taste":
        from imgrec_app.services.evaluation_taste import simulate_taste_shoppers

        _, taste = simulate_taste_shoppers(catalogue, count=count, events=options.events_per_shopper, rng=rng)
        sessions: list[tuple[list[str | None], list[str]]] = [([*s.preferred], browsed) for s, browsed in taste]
        return sessions
    if options.shopper_model != "category":
        raise ValueError(f"Unknown shopper model {options.shopper_model!r} (one of {', '.join(SHOPPER_MODELS)}).")
    return simulate_shoppers(catalogue, count=count, events=options.events_per_shopper, rng=rng)


def record_background(sessions: list[tuple[list[str | None], list[str]]]) -> None:
    """Write other shoppers' whole browsing (never evaluated): the shop's other traffic."""
    for _, browsed in sessions:
        request = shopper_request()
        for item in browsed:
            history.record(request, item)


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
            sessions = simulated_sessions(catalogue, options, rng)
            background = sessions[options.simulated_shoppers :]
            sessions = sessions[: options.simulated_shoppers]
            record_background(background)
            out["shopper_model"] = options.shopper_model
            out["background_shoppers"] = len(background)
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
    "interest": (0.0, 0.5, 1.0),
    "coview": (0.0, 0.5, 1.0),
    "category": (0.0, 1.0, 2.0, 4.0),
    "recency": (0.0, 0.5),
}
# The grid's shoppers are split in two halves by position (even: "choose", odd: "check"): the best
# setting is chosen on one half and its score reported on the other, so the number reported is
# not the maximum of many noisy measurements of the same shoppers.
GRID_HALVES = ("choose", "check")


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

    Every row is also measured on each half of the shoppers (:data:`GRID_HALVES`), with the best
    baseline ("most popular in the viewed categories") on the same half: ``best`` is the row with
    the best hit rate on the "choose" half, to be read on the "check" half.
    """
    import itertools

    keys = [key for key in FORYOU_GRID if key != "recency"]
    settings_ = [dict(zip(keys, values)) for values in itertools.product(*(FORYOU_GRID[key] for key in keys))]
    settings_ = [w for w in settings_ if any(w[src] for src in foryou.SOURCES)]
    totals: dict[tuple[float, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    restrict = recommendable_products()
    base = Baselines(catalogue, random.Random(0))
    baseline: dict[str, list[float]] = defaultdict(list)
    for index, shopper in enumerate(shoppers):
        shelf = base.category_popular(
            dict(Counter(catalogue.category.get(i) for i in shopper.seen)), set(shopper.seen), k
        )
        baseline[GRID_HALVES[index % 2]].append(float(bool(set(shopper.held_out) & set(shelf[:k]))))
    for recency in FORYOU_GRID["recency"]:
        everything = {**{src: 1.0 for src in foryou.SOURCES}, "recency": recency}
        for index, shopper in enumerate(progress(shoppers, f"for-you grid, recency {recency:g}", len(shoppers))):
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
                hit = float(bool(held & set(shelf[:k])))
                totals[key]["hit_rate"].append(hit)
                totals[key][f"hit_rate_{GRID_HALVES[index % 2]}"].append(hit)
                gain = ndcg(shelf, held, k)
                totals[key]["ndcg"].append(gain)
                totals[key][f"ndcg_{GRID_HALVES[index % 2]}"].append(gain)
    rows = [
        {**dict(zip(FORYOU_GRID, key)), **{m: float(np.mean(v)) for m, v in metrics.items()}}
        for key, metrics in totals.items()
    ]
    # Ties on the "choose" half are broken on that half too: nothing of the "check" half decides.
    best = max(rows, key=lambda r: (round(r.get("hit_rate_choose", 0.0), 4), round(r.get("ndcg_choose", 0.0), 4)))
    halves = {f"baseline_hit_rate_{h}": float(np.mean(v)) for h, v in baseline.items()}
    return {"k": k, "rows": rows, "best": best, **halves}
