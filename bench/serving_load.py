"""Serving under load: the demo shop on loopback, product pages and the shelf APIs.

Set-up (in this process, against the ``tests.settings`` database in ``$IMGREC_VAR_DIR``, see ``bench/settings.py``): the
demo catalogue (``seed_demo --per-category N``) indexed with ``imgrec_reindex --missing --sync``
and ``--text``.  Then a server on ``127.0.0.1:PORT`` (gunicorn when installed, else
``runserver --noreload``), ``DEBUG`` off, and a bounded load generator of threads with
keep-alive connections (``http.client``), each a visitor with its own session cookie:

* *steady* phase: an open-loop arrival rate (``--rate`` requests/s in all, Poisson) for
  ``--duration`` seconds, a fifth each of product pages (all shelves rendered), the similar API,
  the recommendations API and two hand-written peers (``bench/peer_view.py``): the same product
  page without imgrec's shelves and a one-statement k-NN view; every visitor first views a few
  products, so for-you is personal.  Latency percentiles come from this phase (issue 12 targets:
  p95 ≤ 30 ms similar, ≤ 60 ms for-you, product page ≤ page without shelves + 20 ms, no errors),
  with each imgrec request's ratio to its peer measured in the same run.
* *saturation* phase: ``--users`` visitors in a closed loop with no think time for
  ``--saturation`` seconds: the most requests per second the machine serves.

SQL queries per request: one request of each kind through ``django.test.Client`` in this
process under ``CaptureQueriesContext``.  The server is stopped at the end, whatever happens.

Example::

    .venv/bin/python bench/serving_load.py --rate 8 --duration 45 --users 8
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common  # noqa: E402

KINDS = ("product page", "similar API", "for-you API", "page without shelves", "peer similar API")
# Each imgrec request and its hand-written peer (bench/peer_view.py), measured under the same load.
PEER_OF = {"product page": "page without shelves", "similar API": "peer similar API"}
SERVER_LOG = common.var_dir() / "serving-server.log"


def prepare_catalogue(per_category: int) -> list[tuple[int, str]]:
    """Seed and index the demo catalogue once; returns (pk, page path) of indexed demo products."""
    from django.core.management import call_command

    from imgrec_app.models import IndexedImage, ProductVector
    from shop_demo.catalog.models import Product

    demo = Product.objects.exclude(slug__startswith="bench")
    if not demo.exists():
        call_command("seed_demo", per_category=per_category, verbosity=0)
    if IndexedImage.objects.exclude(status="ready").exists() or not IndexedImage.objects.exists():
        call_command("imgrec_reindex", "--missing", "--sync", verbosity=0)
    if ProductVector.objects.filter(modality="text").count() < demo.count():
        call_command("imgrec_reindex", "--text", "--sync", verbosity=0)
    indexed = set(ProductVector.objects.filter(modality="image").values_list("object_id", flat=True))
    return [(p.pk, p.get_absolute_url()) for p in demo.filter(published=True, stock__gt=0) if str(p.pk) in indexed]


def queries_per_request(products: list[tuple[int, str]]) -> dict[str, int]:
    """SQL queries of one request of each kind (a visitor who viewed three products)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    for _, path in products[:3]:
        client.get(path)
    out = {}
    pk, path = products[5]
    for kind, url in zip(KINDS, (url_of(kind, pk, path) for kind in KINDS)):
        client.get(url)  # warm caches (content types, serving model)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        out[kind] = len(ctx.captured_queries)
    return out


def url_of(kind: str, pk: int, path: str) -> str:
    return {
        "product page": path,
        "similar API": f"/api/imgrec/products/{pk}/similar/?limit=8",
        "for-you API": "/api/imgrec/recommendations/?limit=8",
        "page without shelves": f"/bench/peer{path}",
        "peer similar API": f"/bench/peer/products/{pk}/similar/",
    }[kind]


# --- the server -----------------------------------------------------------------------------------------


def start_server(port: int, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "DJANGO_DEBUG": "0", "IMGREC_LOG_LEVEL": "WARNING"}
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or _importable("gunicorn"):
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "shop_demo.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--log-level",
            "warning",
        ]
        kind = f"gunicorn {workers} workers × {threads} threads (gthread)"
    else:
        cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--nothreading"]
        kind = "runserver --noreload"
    # The server's output goes to a file: a pipe nobody reads would block it once full.
    log = open(SERVER_LOG, "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {SERVER_LOG.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return proc, kind
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("the server did not answer within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --- the load generator -----------------------------------------------------------------------------------


class Visitor:
    """One browser: a keep-alive connection and a session cookie."""

    def __init__(self, port: int, products: list[tuple[int, str]], rng: random.Random) -> None:
        self.port, self.products, self.rng = port, products, rng
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, url: str) -> tuple[int, float]:
        """GET with the visitor's cookies; (status, seconds), status 0 for a connection error.

        Like a browser, a request that fails on a kept-alive connection the server has closed
        meanwhile (gunicorn closes idle ones after 2 s) is sent again once on a new connection.
        """
        t0 = time.perf_counter()
        status = 0
        for _attempt in range(2):
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
            try:
                self.conn.request("GET", url, headers=headers)
                response = self.conn.getresponse()
                response.read()
                status = response.status
                for header in response.headers.get_all("Set-Cookie") or []:
                    for key, morsel in SimpleCookie(header).items():
                        self.cookies[key] = morsel.value
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return status, time.perf_counter() - t0

    def url(self, kind: str) -> str:
        pk, path = self.rng.choice(self.products)
        return url_of(kind, pk, path)

    def browse_a_little(self) -> None:
        for _ in range(3):
            self.get(self.url("product page"))


class Recorder:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: dict[str, int] = {k: 0 for k in KINDS}
        self.statuses: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            if status == 200:
                self.samples[kind].append(seconds)
            else:
                self.errors[kind] += 1
                self.statuses[f"{kind}: {status or 'connection error'}"] = (
                    self.statuses.get(f"{kind}: {status or 'connection error'}", 0) + 1
                )

    def rows(self, phase: str, wall: float) -> list[dict[str, Any]]:
        out = []
        for kind in KINDS:
            s = self.samples[kind]
            out.append(
                {
                    "phase": phase,
                    "request": kind,
                    "count": len(s),
                    "errors": self.errors[kind],
                    "req/s": len(s) / wall,
                    **{f"{k} ms": v for k, v in common.percentiles(s).items()},
                    "max ms": round(1000 * max(s), 1) if s else float("nan"),
                    "error statuses": {k: v for k, v in self.statuses.items() if k.startswith(kind)},
                }
            )
        return out


def steady(
    port: int, products: list[tuple[int, str]], *, rate: float, duration: float, visitors: int, seed: int
) -> tuple[Recorder, float]:
    """Open-loop Poisson arrivals at ``rate``/s spread over ``visitors`` threads."""
    rec = Recorder()
    end = time.monotonic() + duration
    per_thread = rate / visitors

    def run(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        v = Visitor(port, products, rng)
        v.browse_a_little()
        next_at = time.monotonic()
        while True:
            next_at += rng.expovariate(per_thread)
            delay = next_at - time.monotonic()
            if next_at >= end:
                return
            if delay > 0:
                time.sleep(delay)
            kind = KINDS[rng.randrange(len(KINDS))]
            status, seconds = v.get(v.url(kind))
            rec.add(kind, status, seconds)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(visitors)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 120)
    return rec, time.monotonic() - t0


def saturation(
    port: int, products: list[tuple[int, str]], *, users: int, duration: float, seed: int
) -> tuple[Recorder, float]:
    """Closed loop: each user sends its next request as soon as the last one answered."""
    rec = Recorder()
    end = time.monotonic() + duration

    def run(i: int) -> None:
        rng = random.Random(seed * 7919 + i)
        v = Visitor(port, products, rng)
        v.browse_a_little()
        while time.monotonic() < end:
            kind = KINDS[rng.randrange(len(KINDS))]
            status, seconds = v.get(v.url(kind))
            rec.add(kind, status, seconds)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(users)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 120)
    return rec, time.monotonic() - t0


def add_peer_ratios(rows: list[dict[str, Any]]) -> None:
    """Each imgrec row against its peer's row of the same phase (:data:`PEER_OF`)."""
    by = {(r["phase"], r["request"]): r for r in rows}
    for row in rows:
        peer = by.get((row["phase"], PEER_OF.get(row["request"], "")))
        if peer is None or not peer["count"] or not row["count"]:
            continue
        row["÷ peer p50"] = round(row["p50 ms"] / peer["p50 ms"], 2)
        row["÷ peer p95"] = round(row["p95 ms"] / peer["p95 ms"], 2)
        row["p95 − peer p95 ms"] = round(row["p95 ms"] - peer["p95 ms"], 1)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8765, help="loopback port of the server")
    p.add_argument("--per-category", type=int, default=20, help="demo products per category to seed")
    p.add_argument("--rate", type=float, default=8.0, help="steady phase: requests per second in all")
    p.add_argument("--duration", type=float, default=45.0, help="steady phase: seconds")
    p.add_argument("--visitors", type=int, default=8, help="steady phase: concurrent visitors (threads)")
    p.add_argument("--users", type=int, default=8, help="saturation phase: concurrent users, no think time")
    p.add_argument("--saturation", type=float, default=20.0, help="saturation phase: seconds (0: skip)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    args = p.parse_args(argv)
    # A plain `kill` must still stop the server / worker we start (the finally blocks below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    common.setup_django()
    common.migrate()
    print("preparing the catalogue (seed + index on the first run)...", flush=True)
    products = prepare_catalogue(args.per_category)
    print(f"{len(products)} indexed products on shelves", flush=True)
    queries = queries_per_request(products)
    print("SQL queries per request:", queries, flush=True)

    proc, server = start_server(args.port, args.workers, args.threads)
    try:
        warm = Visitor(args.port, products, random.Random(args.seed))
        for kind in KINDS * 5:
            warm.get(warm.url(kind))
        print(f"{server} on 127.0.0.1:{args.port}; steady {args.rate}/s for {args.duration}s...", flush=True)
        rec, wall = steady(
            args.port, products, rate=args.rate, duration=args.duration, visitors=args.visitors, seed=args.seed
        )
        rows = rec.rows(f"steady {args.rate:g}/s", wall)
        if args.saturation > 0:
            print(f"saturation: {args.users} users for {args.saturation}s...", flush=True)
            srec, swall = saturation(args.port, products, users=args.users, duration=args.saturation, seed=args.seed)
            rows += srec.rows(f"saturation {args.users} users", swall)
    finally:
        stop_server(proc)
    for row in rows:
        row["SQL queries"] = queries[row["request"]]
    add_peer_ratios(rows)
    common.print_table(
        rows,
        [
            "phase",
            "request",
            "count",
            "errors",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "÷ peer p50",
            "÷ peer p95",
            "p95 − peer p95 ms",
            "SQL queries",
        ],
        title=(
            f"Serving on loopback ({server}; targets: p95 ≤ 30 ms similar, ≤ 60 ms for-you, "
            "product page p95 ≤ page without shelves + 20 ms, 0 errors)"
        ),
    )
    total = sum(r["count"] for r in rows if r["phase"].startswith("saturation"))
    if args.saturation > 0:
        print(f"saturation throughput: {total / swall:.1f} requests/s in all")
    result = {"server": server, "products": len(products), "queries_per_request": queries, "rows": rows}
    common.save_result("serving_load", args, result, extra={"postgres": common.postgres_versions()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
