"""``GET products/<id>/similar/`` against a hand-written peer view, in one run, in one process.

The peer (``bench/peer_view.py``) is one DRF view running one statement, ``ORDER BY vector <=>
(SELECT vector … WHERE object_id = %s) LIMIT 11``, on the same table and HNSW index, without the
shop's rules, fusion, near-duplicates or product names.  Both are requested through
``django.test.Client`` (URL routing, middleware, DRF, JSON rendering: the whole request except the
socket) on the demo catalogue (``seed_demo`` + ``imgrec_reindex``, as ``bench/serving_load.py``),
alternating request by request in a rotating order, for the same random products:

* ``imgrec cold``: the shelf computed (shelf cache off, or emptied before each request);
* ``imgrec cached``: the same product requested once before, so the shelf comes from the cache
  (only when the app has a shelf cache);
* ``peer``: the hand-written view.

Per mode: p50/p95/p99 latency, the ratio to the peer, SQL statements per request and the time spent
in them (``connection.execute_wrapper``; one multi-statement string counts as one statement: it
is one round trip).  ``--variant image`` serves image vectors only (``SIMILAR_WEIGHTS`` text and
coview 0), ``fused`` the demo's image + text + viewed-together weights, ``learned`` those and the
learned image + text vectors of a tuning run (``--tune``: one ``imgrec_tune --sync`` before the
timing, rolled back after it, so the fused and image variants then read the tuned head too).

Example::

    .venv/bin/python bench/similar_peer.py --requests 300 --variant fused --variant image
"""

from __future__ import annotations

import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common  # noqa: E402

VARIANTS = {
    "fused": {"SIMILAR_WEIGHTS": {"image": 1.0, "text": 1.0, "coview": 0.3}},
    "image": {"SIMILAR_WEIGHTS": {"image": 1.0, "text": 0.0, "coview": 0.0}},
    # With a tuned head serving (--tune): the learned image + text branch as well (services/learned.py).
    "learned": {"SIMILAR_WEIGHTS": {"image": 1.0, "text": 1.0, "coview": 0.3, "learned": 1.0}},
}


def _has_shelf_cache() -> bool:
    from imgrec_app.conf import DEFAULTS

    return "SHELF_CACHE" in DEFAULTS


@contextmanager
def imgrec_overrides(**values: Any):
    from django.conf import settings
    from django.test import override_settings

    with override_settings(IMGREC={**settings.IMGREC, **values}):
        yield


class StatementMeter:
    """Counts statements and the seconds spent executing them (an ``execute_wrapper``)."""

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0

    def __call__(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - t0
            self.count += 1


def modes() -> list[str]:
    return ["imgrec cold", "imgrec cached", "peer"] if _has_shelf_cache() else ["imgrec cold", "peer"]


def url_of(mode: str, pk: Any) -> str:
    if mode == "peer":
        return f"/bench/peer/products/{pk}/similar/"
    return f"/api/imgrec/products/{pk}/similar/?limit=8"


def one(client: Any, mode: str, pk: Any) -> float:
    """One request of ``mode``, timed; the cache is prepared (untimed) for the mode."""
    from django.core.cache import caches

    if mode == "imgrec cold" and _has_shelf_cache():
        caches["default"].clear()
    elif mode == "imgrec cached":
        client.get(url_of(mode, pk))  # fill the shelf cache for this product
    t0 = time.perf_counter()
    response = client.get(url_of(mode, pk))
    seconds = time.perf_counter() - t0
    assert response.status_code == 200, (mode, pk, response.status_code, response.content[:300])
    return seconds


def run_variant(name: str, products: list[Any], requests: int, seed: int) -> list[dict[str, Any]]:
    from django.test import Client

    client = Client()
    rng = random.Random(seed)
    ms = modes()
    samples: dict[str, list[float]] = {m: [] for m in ms}
    with imgrec_overrides(**VARIANTS[name]):
        for m in ms * 5:  # warm-up: connections, content types, the serving model, compiled regexes
            one(client, m, rng.choice(products))
        for i in range(requests):
            pk = rng.choice(products)
            order = ms[i % len(ms) :] + ms[: i % len(ms)]
            for m in order:
                samples[m].append(one(client, m, pk))
    peer_p = common.percentiles(samples["peer"])
    rows = []
    for m in ms:
        p = common.percentiles(samples[m])
        rows.append(
            {
                "variant": name,
                "request": m,
                "requests": len(samples[m]),
                "p50 ms": p["p50"],
                "p95 ms": p["p95"],
                "p99 ms": p["p99"],
                "÷ peer p50": round(p["p50"] / peer_p["p50"], 2),
                "÷ peer p95": round(p["p95"] / peer_p["p95"], 2),
            }
        )
    counts = statements_per_request(products, name)
    for row in rows:
        row.update(counts[row["request"]])
    return rows


def statements_per_request(products: list[Any], variant: str) -> dict[str, dict[str, Any]]:
    """Statements and SQL ms of single requests (mean over 20 products) per mode."""
    from django.core.cache import caches
    from django.db import connection
    from django.test import Client

    client = Client()
    out = {}
    with imgrec_overrides(**VARIANTS[variant]):
        for m in modes():
            counts, sql_s = [], []
            for pk in products[:20]:
                if m == "imgrec cold" and _has_shelf_cache():
                    caches["default"].clear()
                elif m == "imgrec cached":
                    client.get(url_of(m, pk))
                meter = StatementMeter()
                with connection.execute_wrapper(meter):
                    response = client.get(url_of(m, pk))
                assert response.status_code == 200
                counts.append(meter.count)
                sql_s.append(meter.seconds)
            out[m] = {
                "statements": f"{min(counts)}–{max(counts)}" if min(counts) != max(counts) else str(counts[0]),
                "SQL ms": round(1000 * sum(sql_s) / len(sql_s), 2),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300, help="timed requests per mode and variant")
    p.add_argument("--per-category", type=int, default=20, help="demo products per category to seed")
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="fused, image, learned (default: the first two)")
    p.add_argument("--tune", action="store_true", help="serve a tuned head (imgrec_tune --sync) while measuring")
    args = p.parse_args(argv)
    variants = args.variant or ["fused", "image"]

    common.setup_django()
    common.migrate()
    from django.conf import settings
    from django.urls import clear_url_caches

    from bench.serving_load import prepare_catalogue

    products = [pk for pk, _ in prepare_catalogue(args.per_category)]
    if args.tune:
        from django.core.management import call_command

        call_command("imgrec_tune", "--sync", verbosity=0)
    settings.ROOT_URLCONF = "bench.peer_view"
    clear_url_caches()
    print(f"{len(products)} indexed products; modes {modes()}", flush=True)
    rows = []
    try:
        for v in variants:
            rows += run_variant(v, products, args.requests, args.seed)
    finally:
        if args.tune:
            call_command("imgrec_tune", "--rollback", verbosity=0)
    common.print_table(
        rows,
        ["variant", "request", "requests", "p50 ms", "p95 ms", "p99 ms", "÷ peer p50", "÷ peer p95", "statements", "SQL ms"],
        title="GET products/<id>/similar/ vs the hand-written peer (in-process, django.test.Client)",
    )
    common.save_result(
        "similar_peer", args, {"products": len(products), "rows": rows}, extra={"postgres": common.postgres_versions()}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
