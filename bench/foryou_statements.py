"""For-you: statements and latency of one cold ``GET recommendations/``, the service as it is vs
the code a change replaced (``--peer``), in one run, in one process.

    IMGREC_VAR_DIR=var/demo REDIS_URL=... python bench/foryou_statements.py [--requests 40] [--views 3 12]
        [--peer per-interest|per-category]

On the indexed demo catalogue (``seed_demo`` + ``imgrec_reindex``), for a visitor who viewed N
products (round-robin over three categories, so three visitor categories), requests
``GET /api/imgrec/recommendations/?limit=8`` through ``django.test.Client`` (routing, middleware,
DRF, JSON: the whole request but the socket), alternating request by request between:

* ``now``: the service as it is;
* ``--peer per-interest`` (default): the same service with, put back for the request, one k-NN
  round trip per interest and modality (``search.nearest`` each, before the ``UNION ALL`` of
  ``foryou_sources._interest_neighbours``) and the serving model read every request
  (``recommend.active_models``, before ``foryou_profile.history_vectors`` cached it per process);
* ``--peer per-category``: the previous ``_popular_in`` put back (``trending_scores`` +
  ``trending_mass`` per category: two statements each, before the grouped statement).

Both peers are kept below verbatim.

Per variant: statements per request and p50/p95 latency.  The shelves of both are compared too
(same ids in the same order).  The visitor's views are written inside a transaction that is rolled
back: nothing stays in the demo's history.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_category_popular_in(
    categories: list[tuple[str, float]], *, restrict: Any, exclude: set[str], limit: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The ``_popular_in`` before the grouped statement (two statements per category), verbatim."""
    from django.db.models import CharField, Exists, OuterRef, Q
    from django.db.models.functions import Cast

    from imgrec_app.hosts import category_field_lookup, product_content_type
    from imgrec_app.models import CategoryPrediction
    from imgrec_app.services.recommend import trending_mass, trending_scores

    lookup = category_field_lookup()
    out: dict[str, float] = {}
    mass: dict[str, float] = {}
    for cat, _ in categories:
        if lookup is not None:
            predicted = CategoryPrediction.objects.filter(
                content_type=product_content_type(), category=cat, object_id=Cast(OuterRef("pk"), CharField())
            )
            in_cat = restrict.filter(Q(**{lookup: cat}) | Q(Exists(predicted), **{f"{lookup}__isnull": True}))
        else:
            out.update(trending_scores(restrict_to=restrict, limit=limit * len(categories), exclude=exclude))
            return out, mass
        out.update(trending_scores(restrict_to=in_cat, limit=limit, exclude=exclude))
        mass[cat] = trending_mass(restrict_to=in_cat, exclude=exclude)
    return out, mass


def per_interest_neighbours(interests: Any, profile: Any, *, n: int, restrict: Any, exclude: list[str]) -> set[str]:
    """The ``_interest_neighbours`` before the ``UNION ALL``: one round trip per interest and modality."""
    from imgrec_app.services import search

    found: set[str] = set()
    dims = {m: (mid, dim) for m, mid, dim in profile.models}
    for interest in interests:
        for modality, vector in interest.centroids.items():
            mid, dim = dims[modality]
            rows = search.nearest(vector, model_id=mid, dim=dim, limit=n, restrict_to=restrict, exclude_ids=exclude)
            found.update(obj for obj, _ in rows)
    return found


def queried_history_vectors(ids: Any) -> tuple[list[tuple[str, str, int]], dict[str, dict[str, Any]]]:
    """The profile's models and vectors before the per-process cache: the serving model queried."""
    from imgrec_app.services.foryou_profile import fetch_vectors
    from imgrec_app.services.recommend import active_models

    models = active_models()
    return models, fetch_vectors(ids, models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="requests per variant and history length")
    parser.add_argument("--views", type=int, nargs="+", default=[3, 12])
    parser.add_argument("--peer", choices=["per-interest", "per-category"], default="per-interest")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_demo.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from imgrec_app.hosts import product_category, recommendable_products
    from imgrec_app.services import foryou_profile, foryou_sources
    from imgrec_app.services.evaluation_common import rolled_back

    peers: dict[str, list[tuple[Any, str, Any]]] = {
        "per-interest": [
            (foryou_sources, "_interest_neighbours", per_interest_neighbours),
            (foryou_profile, "history_vectors", queried_history_vectors),
        ],
        "per-category": [(foryou_sources, "_popular_in", per_category_popular_in)],
    }
    variants: dict[str, list[tuple[Any, str, Any]]] = {"now": [], args.peer: peers[args.peer]}
    by_cat: dict[str | None, list[Any]] = {}
    for p in recommendable_products().order_by("pk"):
        by_cat.setdefault(product_category(p), []).append(p)
    three = [items for _, items in sorted(by_cat.items(), key=lambda kv: str(kv[0]))][:3]
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    for n in args.views:
        with rolled_back():
            client = Client()
            for i in range(n):
                product = three[i % 3][i // 3]
                r = client.post("/api/imgrec/events/", {"product_id": product.pk}, content_type="application/json")
                assert r.status_code == 201, r.content
            times: dict[str, list[float]] = {v: [] for v in variants}
            statements: dict[str, set[int]] = {v: set() for v in variants}
            shelves: dict[str, list[str]] = {}
            for round_ in range(args.requests + 2):  # two warm-up rounds
                order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
                for name in order:
                    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in variants[name]]
                    for module, attr, func in variants[name]:
                        setattr(module, attr, func)
                    try:
                        with CaptureQueriesContext(connection) as q:
                            started = time.perf_counter()
                            r = client.get("/api/imgrec/recommendations/?limit=8")
                            elapsed = time.perf_counter() - started
                    finally:
                        for module, attr, func in saved:
                            setattr(module, attr, func)
                    assert r.status_code == 200, r.content
                    shelves[name] = [item["product_id"] for item in r.json()["results"]]
                    if round_ >= 2:
                        times[name].append(elapsed * 1000)
                        statements[name].add(len(q))
            same = shelves["now"] == shelves[args.peer]
            for name in variants:
                ts = sorted(times[name])
                p95 = ts[min(len(ts) - 1, round(0.95 * (len(ts) - 1)))]
                print(
                    f"{n:3d} views  {name:13s} statements {sorted(statements[name])}  "
                    f"p50 {statistics.median(ts):6.1f} ms  p95 {p95:6.1f} ms  ({len(ts)} requests)"
                )
            ratio = statistics.median(times["now"]) / statistics.median(times[args.peer])
            print(f"{n:3d} views  now ÷ {args.peer} p50 {ratio:.2f}; same shelf: {same}")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
