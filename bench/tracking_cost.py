"""What impression tracking costs a rendered shelf: tracked vs untracked, in one run, in one process.

Issue 15 asks that a measured shelf cost at most one extra write per rendered shelf.  This bench
renders the same shelves with ``IMGREC["TRACKING"]`` on and off, alternating request by request in
a rotating order for the same random products, through ``django.test.Client`` (routing,
middleware, sessions, templates: the whole request except the socket):

* ``fragment``: ``GET imgrec/fragments/similar/<id>/`` (one rendered shelf);
* ``product page``: the demo's product page (similar, bought-together and for-you shelves, and the
  history write of the view).

Each visitor is a returning one (a session and a visitor id already), as most requests are.  Per
mode: p50/p95 latency, the tracked/untracked ratio (the peer is the same request untracked),
statements and *writes* (INSERT/UPDATE/DELETE) per request, counted with
``connection.execute_wrapper``.  The catalogue is synthetic (products in visual clusters with
random unit vectors, no model run), so the bench needs no torch and no photos.

Example::

    .venv/bin/python bench/tracking_cost.py --products 600 --requests 200
"""

from __future__ import annotations

import random
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common  # noqa: E402

MODEL_ID = "bench-tracking:v1"
DIM = 64
MODES = ("fragment", "product page")
WRITES = ("INSERT", "UPDATE", "DELETE")


class StatementMeter:
    """Counts statements and writes (an ``execute_wrapper``)."""

    def __init__(self) -> None:
        self.count = self.writes = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        if sql.lstrip().split(None, 1)[0].upper() in WRITES:
            self.writes += 1
        return execute(sql, params, many, context)


def prepare(n: int, seed: int) -> list[Any]:
    """``n`` published products in 6 visual clusters with served image vectors (made once)."""
    import numpy as np
    from django.contrib.contenttypes.models import ContentType

    from imgrec_app.models import ProductVector, ServingModel
    from imgrec_app.services.vectors import ensure_hnsw_index
    from shop_demo.catalog.models import Category, Product

    existing = list(Product.objects.filter(slug__startswith="bench-tracking-"))
    if len(existing) >= n:
        return existing[:n]
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, DIM))
    cats = [Category.objects.get_or_create(slug=f"bench-t{i}", defaults={"name": f"Cluster {i}"})[0] for i in range(6)]
    products = Product.objects.bulk_create(
        [
            Product(
                slug=f"bench-tracking-{i}",
                name=f"Bench product {i}",
                price=Decimal("9.90"),
                stock=5,
                published=True,
                category=cats[i % 6],
            )
            for i in range(len(existing), n)
        ]
    )
    ct = ContentType.objects.get_for_model(Product)
    rows = []
    for i, p in enumerate(products):
        v = centers[i % 6] + 0.3 * rng.normal(size=DIM)
        rows.append(
            ProductVector(
                content_type=ct, object_id=str(p.pk), model_id=MODEL_ID, vector=(v / np.linalg.norm(v)).tolist()
            )
        )
    ProductVector.objects.bulk_create(rows)
    ServingModel.objects.update_or_create(modality="image", defaults={"model_id": MODEL_ID, "dimensions": DIM})
    ensure_hnsw_index(MODEL_ID, DIM)
    return existing + products


def url_of(mode: str, product: Any) -> str:
    return f"/imgrec/fragments/similar/{product.pk}/" if mode == "fragment" else product.get_absolute_url()


def one(client: Any, mode: str, product: Any, tracking: bool, meter: StatementMeter | None = None) -> float:
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    with override_settings(IMGREC={**settings.IMGREC, "TRACKING": tracking}):
        t0 = time.perf_counter()
        if meter is None:
            response = client.get(url_of(mode, product))
        else:
            with connection.execute_wrapper(meter):
                response = client.get(url_of(mode, product))
        seconds = time.perf_counter() - t0
    assert response.status_code == 200, (mode, product.pk, response.status_code)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=600, help="synthetic products")
    p.add_argument("--requests", type=int, default=200, help="timed requests per mode, tracked and untracked")
    args = p.parse_args(argv)
    common.setup_django()
    common.migrate()
    from django.test import Client

    from imgrec_app.models import ShelfImpression
    from shop_demo.catalog.models import Product

    Product.objects.filter(slug__startswith="bench-tracking-").exclude(published=True).delete()
    products = prepare(args.products, args.seed)
    rng = random.Random(args.seed)
    clients = {t: Client() for t in (False, True)}
    for c in clients.values():  # returning visitors: a session and a visitor id
        c.get(products[0].get_absolute_url())
    keys = [(m, t) for m in MODES for t in (False, True)]
    for m, t in keys * 5:  # warm-up
        one(clients[t], m, rng.choice(products), t)
    samples: dict[tuple[str, bool], list[float]] = {k: [] for k in keys}
    before = ShelfImpression.objects.count()
    for i in range(args.requests):
        product = rng.choice(products)
        for m, t in keys[i % len(keys) :] + keys[: i % len(keys)]:
            samples[(m, t)].append(one(clients[t], m, product, t))
    impressions = ShelfImpression.objects.count() - before
    rows = []
    for m in MODES:
        counts = {}
        for t in (False, True):
            meters = [StatementMeter() for _ in range(20)]
            for meter, product in zip(meters, products[1:21]):
                one(clients[t], m, product, t, meter)
            counts[t] = (
                sum(x.count for x in meters) / len(meters),
                sum(x.writes for x in meters) / len(meters),
            )
        base = common.percentiles(samples[(m, False)])
        for t in (False, True):
            pct = common.percentiles(samples[(m, t)])
            rows.append(
                {
                    "request": m,
                    "tracking": "on" if t else "off",
                    "requests": len(samples[(m, t)]),
                    "p50 ms": pct["p50"],
                    "p95 ms": pct["p95"],
                    "÷ off p50": round(pct["p50"] / base["p50"], 2),
                    "÷ off p95": round(pct["p95"] / base["p95"], 2),
                    "statements": round(counts[t][0], 2),
                    "writes": round(counts[t][1], 2),
                    "extra writes": round(counts[t][1] - counts[False][1], 2),
                }
            )
    common.print_table(
        rows, title="Rendered shelves with impression tracking on vs off (in-process, django.test.Client)"
    )
    shelves_per_page = 3
    print(
        f"\n{impressions} impressions recorded by {args.requests} tracked fragments + {args.requests} tracked pages "
        f"(expected {args.requests * (1 + shelves_per_page)} if every shelf rendered items)"
    )
    common.save_result("tracking_cost", args, {"products": len(products), "rows": rows, "impressions": impressions})
    return 0


if __name__ == "__main__":
    sys.exit(main())
