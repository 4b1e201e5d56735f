"""Vector search at N products: pgvector HNSW through imgrec's service vs raw SQL vs exact vs FAISS.

Data: N product vectors derived from real EfficientNet-Lite0 embeddings of the demo catalogue
(``bench/vectors_data.py``: real vectors mixed with a near neighbour plus PCA-space noise,
L2-normalised), loaded into the real schema with COPY: N ``catalog.Product`` rows (a random
``stock`` 0–99 gives filters of known selectivity) and N ``imgrec_app.ProductVector`` rows under a
bench model id, then the HNSW index built by ``imgrec_app.services.vectors.ensure_hnsw_index``
(build time, ``pg_relation_size``).

Queries: random products' own vectors ("similar to this product", the product itself excluded),
limit 10.  Truth: brute force in numpy.  For each ``ef_search``: recall@10 and p50/p95/p99 latency
of ``imgrec_app.services.search.nearest`` (the ORM path the shelves use, with its per-query
transaction and ``SET LOCAL``) and of the same SELECT sent raw through psycopg (binary vector
parameter, settings made once per session), alternating query by query on one connection each.
Filtered shelves: ``restrict_to`` keeping 1 % and 10 % of products (``stock < 1``, ``stock < 10``,
independent of the vectors: the hard case for HNSW) and 99 % (``stock >= 1``, the demo's rule):
rows returned vs the limit and recall against the exact filtered top 10.  FAISS
``IndexHNSWFlat`` (same M=16, efConstruction=64, one thread) on the same vectors: QPS at equal
recall.

Examples::

    .venv/bin/python bench/vector_search.py                 # N=100,000 (about 10 minutes here)
    .venv/bin/python bench/vector_search.py -n 1000000 --maintenance-work-mem 12GB --queries 200
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import _common as common  # noqa: E402
from bench.vectors_data import exact_top_k, real_embeddings, stats, synthesize  # noqa: E402

LIMIT = 10
DIM = 1280  # the backbone's size; ``--dims`` projects the vectors to fewer (e.g. a tuned head's 256)
Filter = tuple[str, int]  # ("lt" | "gte", value) on the products' stock
SQL_OPS = {"lt": "<", "gte": ">="}


def bench_model_id(n: int, seed: int, dims: int = 1280) -> str:
    suffix = "" if dims == 1280 else f":d{dims}"
    return f"bench-synthetic:n{n}:s{seed}:st2{suffix}"  # st2: stock drawn independently of the vectors


def project(real: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """The real vectors on a fixed random orthonormal ``dims``-d basis, re-normalised.

    A stand-in for a smaller embedding (a tuned linear head's 256-d output): a random orthonormal
    projection keeps cosine neighbourhoods approximately (Johnson–Lindenstrauss) whatever the
    sample size, where a PCA basis would need more real vectors than ``dims``.
    """
    if dims >= real.shape[1]:
        return real
    basis, _ = np.linalg.qr(np.random.default_rng([seed, 2]).standard_normal((real.shape[1], dims)))
    out = real @ basis.astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


# --- loading ---------------------------------------------------------------------------------------


def load(vectors: np.ndarray, stock: np.ndarray, model_id: str) -> tuple[list[str], float]:
    """COPY the products and their vectors; returns product ids (as text, row order) and seconds."""
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from pgvector.psycopg import register_vector

    from imgrec_app.models import ProductVector
    from shop_demo.catalog.models import Category, Product

    category, _ = Category.objects.get_or_create(slug="bench-vectors", defaults={"name": "Bench vectors"})
    ct = ContentType.objects.get_for_model(Product)
    prefix = model_id.replace(":", "-")
    drop(model_id)
    connection.ensure_connection()
    conn = connection.connection
    register_vector(conn)
    t0 = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        buf = io.StringIO()
        for i, s in enumerate(stock):
            buf.write(f"{prefix}-{i}\tBench product {i}\t\t10.00\t{int(s)}\tt\t{category.pk}\t\tnow\n")
        buf.seek(0)
        with cur.copy(
            f"COPY {Product._meta.db_table} (slug, name, description, price, stock, published, "
            "category_id, photo, created_at) FROM STDIN"
        ) as copy:
            while chunk := buf.read(1 << 20):
                copy.write(chunk)
        cur.execute(
            f"SELECT id FROM {Product._meta.db_table} WHERE slug LIKE %s ORDER BY (split_part(slug, '-', -1))::int",
            [f"{prefix}-%"],
        )
        ids = [str(r[0]) for r in cur.fetchall()]
        cur.execute("CREATE TEMP TABLE bench_vectors (object_id text, vector vector) ON COMMIT DROP")
        with cur.copy("COPY bench_vectors (object_id, vector) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for oid, vec in zip(ids, vectors):
                copy.write_row((oid, vec))
        cur.execute(
            f"INSERT INTO {ProductVector._meta.db_table} (content_type_id, object_id, modality, "
            "model_id, vector, source_count, source_hash, labels, updated_at) "
            "SELECT %s, object_id, 'image', %s, vector, 1, '', '[]'::jsonb, now() FROM bench_vectors",
            [ct.pk, model_id],
        )
    with conn.cursor() as cur:
        cur.execute(f"ANALYZE {ProductVector._meta.db_table}")
        cur.execute(f"ANALYZE {Product._meta.db_table}")
    return ids, time.perf_counter() - t0


def drop(model_id: str) -> None:
    from django.db import connection

    from imgrec_app.models import ProductVector
    from imgrec_app.services.vectors import index_name
    from shop_demo.catalog.models import Product

    with connection.cursor() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {index_name(ProductVector._meta.db_table, model_id)}")
    ProductVector.objects.filter(model_id=model_id)._raw_delete("default")
    Product.objects.filter(slug__startswith=model_id.replace(":", "-") + "-")._raw_delete("default")


def build_index(model_id: str, maintenance_work_mem: str) -> dict[str, Any]:
    """Build the HNSW index the way imgrec does; its build time and size."""
    from django.db import connection

    from imgrec_app.models import ProductVector
    from imgrec_app.services import vectors

    table = ProductVector._meta.db_table
    name = vectors.index_name(table, model_id)
    vectors._ensured.discard((connection.alias, table + name, DIM))
    with connection.cursor() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {name}")
        cur.execute("SET maintenance_work_mem = %s", [maintenance_work_mem])
        cur.execute("SHOW max_parallel_maintenance_workers")
        workers = cur.fetchone()[0]
    with common.clock() as t:
        vectors.ensure_hnsw_index(model_id, DIM)
    with connection.cursor() as cur:
        cur.execute("RESET maintenance_work_mem")
        cur.execute("SELECT pg_relation_size(%s), pg_total_relation_size(%s)", [name, table])
        index_bytes, table_bytes = cur.fetchone()
    return {
        "index": name,
        "build_s": round(t["wall"], 1),
        "index_mb": round(index_bytes / 2**20, 1),
        "table_total_mb": round(table_bytes / 2**20, 1),
        "maintenance_work_mem": maintenance_work_mem,
        "parallel_maintenance_workers": workers,
    }


def prewarm(model_id: str) -> str:
    """Load the index into shared buffers / the OS cache (pg_prewarm when available)."""
    from django.db import connection

    from imgrec_app.models import ProductVector
    from imgrec_app.services.vectors import index_name

    name = index_name(ProductVector._meta.db_table, model_id)
    try:
        with connection.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            cur.execute("SELECT pg_prewarm(%s)", [name])
            return f"pg_prewarm: {cur.fetchone()[0]} blocks"
    except Exception as exc:  # pragma: no cover - extension missing
        return f"no pg_prewarm ({exc})"


# --- querying ------------------------------------------------------------------------------------------


class RawSearch:
    """The service's SELECT sent straight through psycopg (binary vector, session settings)."""

    def __init__(self, model_id: str, ef: int, max_scan_tuples: int) -> None:
        import psycopg
        from django.contrib.contenttypes.models import ContentType
        from django.db import connection
        from pgvector.psycopg import register_vector

        from imgrec_app.models import ProductVector
        from shop_demo.catalog.models import Product

        params = connection.get_connection_params()
        keys = ("dbname", "user", "password", "host", "port")
        self.conn = psycopg.connect(**{k: params[k] for k in keys if params.get(k)}, autocommit=True)
        register_vector(self.conn)
        self.ct = ContentType.objects.get_for_model(Product).pk
        self.model_id = model_id
        self.table = ProductVector._meta.db_table
        self.products = Product._meta.db_table
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT set_config('hnsw.ef_search', %s, false), "
                "set_config('hnsw.iterative_scan', 'relaxed_order', false), "
                "set_config('hnsw.max_scan_tuples', %s, false), "
                "set_config('enable_sort', 'off', false)",  # as the service does (see search.py)
                [str(ef), str(max_scan_tuples)],
            )

    def query(self, vector: np.ndarray, exclude: str, stock: Filter | None = None) -> list[tuple[str, float]]:
        # The form the service sends (imgrec_app.services.search._allowed_by).
        restrict = (
            f" AND EXISTS (SELECT 1 FROM {self.products} p WHERE p.published AND p.stock {SQL_OPS[stock[0]]} %s "
            f"AND p.id = ({self.table}.object_id)::bigint)"
            if stock is not None
            else ""
        )
        from imgrec_app.querysets import index_vector_type

        vt = index_vector_type(DIM)  # VECTOR_STORAGE: the same cast as the index
        sql = (
            f"SELECT object_id, (vector::{vt}({DIM})) <=> %s::{vt} AS distance FROM {self.table} "
            f"WHERE model_id = %s AND content_type_id = %s AND object_id <> %s{restrict} "
            "ORDER BY distance LIMIT %s"
        )
        params: list[Any] = [vector, self.model_id, self.ct, exclude]
        if stock is not None:
            params.append(stock[1])
        params.append(LIMIT)
        with self.conn.cursor() as cur:
            # prepare=False: psycopg would prepare it after 5 runs, and Postgres may then switch to a
            # generic plan (a parallel sequential scan: the vector is a parameter) – 100× slower.
            cur.execute(sql, params, prepare=False)
            rows = cur.fetchall()
        rows.sort(key=lambda r: r[1])
        return [(obj, 1.0 - float(d)) for obj, d in rows]

    def close(self) -> None:
        self.conn.close()


def service_query(
    vector: np.ndarray, model_id: str, exclude: str, stock: Filter | None = None
) -> list[tuple[str, float]]:
    from imgrec_app.services.search import nearest
    from shop_demo.catalog.models import Product

    restrict = Product.objects.filter(published=True, **{f"stock__{stock[0]}": stock[1]}) if stock else None
    return nearest(vector, model_id=model_id, dim=DIM, limit=LIMIT, restrict_to=restrict, exclude_ids=[exclude])


def recall(result_ids: list[list[str]], truth: np.ndarray, ids: list[str]) -> float:
    hits = 0
    for got, want in zip(result_ids, truth):
        hits += len(set(got) & {ids[i] for i in want})
    return hits / (len(truth) * truth.shape[1])


def measure_pgvector(
    vectors: np.ndarray,
    ids: list[str],
    model_id: str,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    ef: int,
    stock: Filter | None = None,
    max_scan_tuples: int,
) -> dict[str, Any]:
    """Service path and raw SQL, alternating query by query; recall, latency, rows returned."""
    from django.conf import settings
    from django.test import override_settings

    raw = RawSearch(model_id, max(ef, LIMIT), max_scan_tuples)
    svc_t, raw_t, svc_ids, raw_ids, svc_rows = [], [], [], [], []
    imgrec = {**settings.IMGREC, "HNSW_EF_SEARCH": ef, "HNSW_MAX_SCAN_TUPLES": max_scan_tuples}
    with override_settings(IMGREC=imgrec):
        for q in queries[: min(10, len(queries))]:  # warm-up: plans, caches
            service_query(vectors[q], model_id, ids[q], stock)
            raw.query(vectors[q], ids[q], stock)
        for n, q in enumerate(queries):
            order = (0, 1) if n % 2 == 0 else (1, 0)
            for which in order:
                t0 = time.perf_counter()
                if which == 0:
                    rows = service_query(vectors[q], model_id, ids[q], stock)
                    svc_t.append(time.perf_counter() - t0)
                    svc_ids.append([r[0] for r in rows])
                    svc_rows.append(len(rows))
                else:
                    rows = raw.query(vectors[q], ids[q], stock)
                    raw_t.append(time.perf_counter() - t0)
                    raw_ids.append([r[0] for r in rows])
    raw.close()
    svc_p, raw_p = common.percentiles(svc_t), common.percentiles(raw_t)
    return {
        "ef_search": ef,
        "filter": "none" if stock is None else f"stock {SQL_OPS[stock[0]]} {stock[1]}",
        "queries": len(queries),
        "recall@10 service": round(recall(svc_ids, truth, ids), 4),
        "recall@10 raw": round(recall(raw_ids, truth, ids), 4),
        **{f"service {k} ms": v for k, v in svc_p.items()},
        **{f"raw {k} ms": v for k, v in raw_p.items()},
        "service/raw p50": round(svc_p["p50"] / raw_p["p50"], 3),
        "service/raw p99": round(svc_p["p99"] / raw_p["p99"], 3),
        "service QPS": round(len(svc_t) / sum(svc_t), 1),
        "raw QPS": round(len(raw_t) / sum(raw_t), 1),
        "full shelves %": round(100.0 * sum(r == LIMIT for r in svc_rows) / len(svc_rows), 3),
        "min rows": min(svc_rows),
    }


def explain(vector: np.ndarray, model_id: str, exclude: str) -> str:
    """The plan of the service's query (to show the HNSW index is used)."""
    from django.db import connection

    from imgrec_app.hosts import product_content_type
    from imgrec_app.models import ProductVector

    qs = (
        ProductVector.objects.for_model(model_id, product_content_type().pk)
        .exclude(object_id__in=[exclude])
        .nearest(vector.tolist(), dim=DIM)
        .values_list("object_id", "distance")[:LIMIT]
    )
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("EXPLAIN " + sql, params)
        lines = [r[0] for r in cur.fetchall()]
    # The query vector's literal is 17 kB of digits: show its start only.
    return "\n".join(line if len(line) < 200 else line[:120] + " ...]'" for line in lines)


def measure_faiss(
    vectors: np.ndarray, queries: np.ndarray, truth_ids: np.ndarray, ef_values: list[int]
) -> dict[str, Any]:
    """FAISS HNSW (M=16, efConstruction=64 like pgvector's defaults), one thread."""
    import faiss

    faiss.omp_set_num_threads(common.cores())
    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    with common.clock() as t:
        index.add(vectors)
    build_s = t["wall"]
    faiss.omp_set_num_threads(1)
    points = []
    q = vectors[queries]
    for ef in ef_values:
        index.hnsw.efSearch = ef
        index.search(q[:10], LIMIT + 1)
        times, found = [], []
        for row in q:
            t0 = time.perf_counter()
            _, idx = index.search(row[None, :], LIMIT + 1)
            times.append(time.perf_counter() - t0)
            found.append(idx[0])
        hits = 0
        for qi, got, want in zip(queries, found, truth_ids):
            got = [g for g in got if g != qi][:LIMIT]
            hits += len(set(got) & set(want.tolist()))
        points.append(
            {
                "ef_search": ef,
                "recall@10": round(hits / truth_ids.size, 4),
                "QPS": round(len(times) / sum(times), 1),
                **{f"{k} ms": v for k, v in common.percentiles(times).items()},
            }
        )
    return {
        "version": faiss.__version__,
        "build_s": round(build_s, 1),
        "threads_build": common.cores(),
        "points": points,
    }


def qps_at_recall(points: list[dict[str, Any]], target: float) -> float:
    """FAISS QPS at a given recall, interpolated (log-QPS) between its measured points."""
    pts = sorted((p["recall@10"], p["QPS"]) for p in points)
    if target <= pts[0][0]:
        return pts[0][1]
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            if r1 == r0:
                return max(q0, q1)
            f = (target - r0) / (r1 - r0)
            return float(np.exp(np.log(q0) + f * (np.log(q1) - np.log(q0))))
    return float("nan")  # beyond FAISS's best recall


def main(argv: list[str] | None = None) -> int:
    global DIM
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("-n", "--products", type=int, default=100_000, help="product vectors to load")
    p.add_argument("--real", type=int, default=200, help="catalogue images embedded to derive the vectors from (≤ 567)")
    p.add_argument("--noise", type=float, default=0.55, help="PCA-space noise scale of the synthetic vectors")
    p.add_argument("--queries", type=int, default=300, help="queries per ef_search value (unfiltered)")
    p.add_argument("--filtered-queries", type=int, default=1000, help="queries per filtered shelf")
    p.add_argument("--ef", default="40,100,200", help="ef_search values")
    p.add_argument(
        "--filter-ef", type=int, default=None, help="ef_search for the filtered shelves (default: HNSW_EF_SEARCH)"
    )
    p.add_argument("--maintenance-work-mem", default="1GB", help="for the index build (the HNSW graph should fit)")
    p.add_argument(
        "--reuse", action="store_true", help="keep vectors and index loaded by an earlier run with the same -n/--seed"
    )
    p.add_argument("--keep", action="store_true", help="leave the loaded rows in the database afterwards")
    p.add_argument("--no-faiss", action="store_true", help="skip the FAISS comparison")
    p.add_argument(
        "--storage", choices=["vector", "halfvec"], default="vector", help="IMGREC['VECTOR_STORAGE'] of index and queries"
    )
    p.add_argument(
        "--dims", type=int, default=1280, help="vector size (fewer than the backbone's: projected, see project())"
    )
    args = p.parse_args(argv)
    DIM = args.dims

    common.setup_django()
    common.migrate()
    from django.conf import settings

    settings.IMGREC = {**settings.IMGREC, "VECTOR_STORAGE": args.storage}

    from imgrec_app.conf import imgrec_settings
    from imgrec_app.models import ProductVector

    ef_values = [int(x) for x in args.ef.split(",")]
    model_id = bench_model_id(args.products, args.seed, args.dims)
    rng = np.random.default_rng(args.seed)
    real, real_model = real_embeddings(args.real)
    real = project(real, args.dims, args.seed)
    with common.clock() as t:
        vectors = synthesize(real, args.products, noise=args.noise, seed=args.seed)
    # Stock from a stream of its own: drawn from ``rng`` (the vectors' seed and stream) it equalled
    # the synthesizer's base-vector index ÷ 2 for the first 20,000 rows (correlation 0.99996),
    # which made the "1 % / 10 %" filters easy, clustered ones.
    stock = np.random.default_rng([args.seed, 1]).integers(0, 100, args.products)
    base = np.random.default_rng(args.seed).integers(0, len(real), min(args.products, 20_000))
    stock_corr = float(np.corrcoef(stock[: len(base)], base)[0, 1])
    print(f"stock vs the vectors' base index: correlation {stock_corr:.4f} (independent: ~0)", flush=True)
    data = {
        "real": stats(real),
        "synthetic": stats(vectors),
        "derived_from": real_model,
        "dims": args.dims,
        "projection": "none" if args.dims >= 1280 else "random orthonormal, re-normalised",
        "noise": args.noise,
        "generate_s": round(t["wall"], 1),
        "stock_vs_base_index_correlation": round(stock_corr, 4),
    }
    print("vectors:", data, flush=True)

    reuse = args.reuse and ProductVector.objects.filter(model_id=model_id).count() == args.products
    if reuse:
        from shop_demo.catalog.models import Product

        prefix = model_id.replace(":", "-") + "-"
        pairs = Product.objects.filter(slug__startswith=prefix).values_list("slug", "pk", "stock")
        order = sorted(pairs, key=lambda r: int(r[0].rsplit("-", 1)[1]))
        ids = [str(r[1]) for r in order]
        stock = np.array([r[2] for r in order])
        load_s = None
        index = {"reused": True}
        from django.db import connection

        from imgrec_app.services.vectors import index_name

        with connection.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [index_name(ProductVector._meta.db_table, model_id)])
            if cur.fetchone() is None:  # the other storage's index was built: build this one
                index = build_index(model_id, args.maintenance_work_mem)
    else:
        ids, load_s = load(vectors, stock, model_id)
        print(f"loaded {len(ids)} products + vectors in {load_s:.1f}s; building the HNSW index...", flush=True)
        index = build_index(model_id, args.maintenance_work_mem)
    print("index:", index, flush=True)
    warm = prewarm(model_id)
    query_rows = rng.choice(args.products, size=max(args.queries, args.filtered_queries), replace=False)
    print("plan:\n" + explain(vectors[query_rows[0]], model_id, ids[query_rows[0]]), flush=True)

    rows = []
    q = query_rows[: args.queries]
    with common.clock() as t:
        truth = exact_top_k(vectors, vectors[q], LIMIT, exclude=q)
    exact_ms = 1000 * t["wall"] / len(q)
    for ef in ef_values:
        rows.append(
            measure_pgvector(
                vectors, ids, model_id, q, truth, ef=ef, max_scan_tuples=imgrec_settings.HNSW_MAX_SCAN_TUPLES
            )
        )
        print(rows[-1], flush=True)
    filter_ef = args.filter_ef or int(imgrec_settings.HNSW_EF_SEARCH)
    # 1 % and 10 % of products (stock is uniform in 0..99), and the demo shop's rule (in stock: 99 %).
    for spec, fq in (
        (("lt", 1), query_rows[: args.filtered_queries]),
        (("lt", 10), query_rows[: args.filtered_queries]),
        (("gte", 1), q),
    ):
        mask = stock < spec[1] if spec[0] == "lt" else stock >= spec[1]
        ftruth = exact_top_k(vectors, vectors[fq], LIMIT, exclude=fq, mask=mask)
        row = measure_pgvector(
            vectors,
            ids,
            model_id,
            fq,
            ftruth,
            ef=filter_ef,
            stock=spec,
            max_scan_tuples=imgrec_settings.HNSW_MAX_SCAN_TUPLES,
        )
        row["selectivity %"] = round(100 * float(mask.mean()), 2)
        rows.append(row)
        print(rows[-1], flush=True)

    faiss_result = None
    if not args.no_faiss:
        faiss_result = measure_faiss(vectors, q, truth, [10, 16, 24, 32, 40, 64, 100, 200, 400])
        for row in rows:
            if row["filter"] == "none":
                row["FAISS QPS @ same recall"] = round(
                    qps_at_recall(faiss_result["points"], row["recall@10 service"]), 1
                )
                row["service QPS / FAISS"] = round(row["service QPS"] / row["FAISS QPS @ same recall"], 3)

    common.print_table(
        rows,
        [
            "filter",
            "ef_search",
            "queries",
            "recall@10 service",
            "recall@10 raw",
            "service p50 ms",
            "service p95 ms",
            "service p99 ms",
            "raw p50 ms",
            "raw p99 ms",
            "service/raw p50",
            "service/raw p99",
            "service QPS",
            "raw QPS",
            "full shelves %",
            "min rows",
            "FAISS QPS @ same recall",
            "service QPS / FAISS",
        ],
        title=(
            f"pgvector HNSW at N={args.products:,}, {DIM}-d {args.storage} (limit {LIMIT}; targets: recall ≥ 0.95, service p99 ≤ 10 ms, "
            "service ≤ 1.3× raw, full shelves ≥ 99.9 %, ≥ 1/3 FAISS QPS)"
        ),
    )
    if faiss_result:
        common.print_table(
            faiss_result["points"],
            title=(
                f"FAISS {faiss_result['version']} IndexHNSWFlat M=16 efC=64, 1 thread "
                f"(build {faiss_result['build_s']} s on {faiss_result['threads_build']} threads)"
            ),
        )
    print(f"\nexact numpy search: {exact_ms:.1f} ms/query; load {load_s}s; index {index}; {warm}")
    result = {
        "n": args.products,
        "data": data,
        "load_s": load_s,
        "index": index,
        "prewarm": warm,
        "exact_ms_per_query": round(exact_ms, 2),
        "rows": rows,
        "faiss": faiss_result,
        "shared_buffers": _setting("shared_buffers"),
        "debug": settings.DEBUG,
    }
    common.save_result("vector_search", args, result, extra={"postgres": common.postgres_versions()})
    if not args.keep:
        drop(model_id)
    return 0


def _setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"SHOW {name}")
        return cur.fetchone()[0]


if __name__ == "__main__":
    sys.exit(main())
