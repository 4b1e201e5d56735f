"""The "seed articles" baseline: an all-pairs cosine-similarity matrix in numpy vs imgrec's index.

The articles this project started from compute "similar products" as ``S = X @ X.T`` over all
product vectors (a dense N×N float32 matrix, 4·N² bytes), then take each row's top k.  For each N
(vectors derived from real catalogue embeddings, ``bench/vectors_data.py``) this measures, in a
fresh subprocess so the peak memory is the baseline's own: the matrix product, the per-row top 10
(in row blocks, as the articles' per-product loop does), and the peak resident memory.  Sizes
whose matrix would not fit in ``--max-gb`` are not run; their cost is extrapolated (time ∝ N²,
memory = 4·N² bytes) and marked so.

imgrec's side for the same N (up to ``--index-max``): COPY the vectors into ``ProductVector``,
build the HNSW index with ``ensure_hnsw_index``, and time ``search.nearest`` (ef_search 100):
memory is the index size on disk, and a new product costs one index insert instead of a new
matrix row and column.  The N=100,000 row comes from the latest ``bench/results/vector_search.json``.

Example::

    .venv/bin/python bench/allpairs_baseline.py --sizes 1000,5000,10000,20000,50000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import _common as common  # noqa: E402
from bench.vectors_data import real_embeddings, synthesize  # noqa: E402

K = 10


def allpairs(job: tuple[np.ndarray, int, int, float]) -> dict[str, Any]:
    """Run in a subprocess: build the matrix, take top-k per row; times and peak memory."""
    real, n, seed, noise = job
    x = synthesize(real, n, noise=noise, seed=seed)
    rss0 = common.peak_rss_mb()
    with common.clock() as t_mm:
        # The articles' literal ``X @ X.T`` goes to BLAS syrk, which crashes (SIGSEGV) from
        # N ≈ 30,000 with this numpy 2.4.6 / OpenBLAS build; the same product as gemm does not.
        s = x @ np.ascontiguousarray(x.T)
    with common.clock() as t_top:
        np.fill_diagonal(s, -np.inf)
        top = np.empty((n, K), dtype=np.int64)
        for start in range(0, n, 1000):
            block = s[start : start + 1000]
            idx = np.argpartition(-block, K, axis=1)[:, :K]
            order = np.argsort(-np.take_along_axis(block, idx, axis=1), axis=1)
            top[start : start + 1000] = np.take_along_axis(idx, order, axis=1)
    return {
        "n": n,
        "matmul_s": round(t_mm["wall"], 2),
        "topk_s": round(t_top["wall"], 2),
        "total_s": round(t_mm["wall"] + t_top["wall"], 2),
        "matrix_gb": round(s.nbytes / 1e9, 3),
        "peak_rss_gb": round(common.peak_rss_mb() / 1024, 3),
        "rss_before_gb": round(rss0 / 1024, 3),
    }


def run_isolated(n: int, args: Any) -> dict[str, Any]:
    """``allpairs`` in a fresh Python process (its own peak memory); a crash or OOM kill is reported."""
    cmd = [sys.executable, __file__, "--child", str(n), "--real", str(args.real), "--noise", str(args.noise)]
    proc = subprocess.run(cmd + ["--seed", str(args.seed)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"note": f"failed: exit code {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "note": "measured"}


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def pgvector_side(real: np.ndarray, n: int, seed: int, noise: float, queries: int) -> dict[str, Any]:
    """Load N vectors, build the HNSW index the way imgrec does, time the service query."""
    from bench.vector_search import bench_model_id, build_index, drop, load, service_query

    vectors = synthesize(real, n, noise=noise, seed=seed)
    stock = np.random.default_rng(seed).integers(0, 100, n)
    model_id = bench_model_id(n, seed) + ":allpairs"
    ids, load_s = load(vectors, stock, model_id)
    index = build_index(model_id, "1GB")
    rng = np.random.default_rng(seed)
    times = []
    for q in rng.choice(n, size=min(queries, n), replace=False):
        t0 = time.perf_counter()
        service_query(vectors[q], model_id, ids[q])
        times.append(time.perf_counter() - t0)
    drop(model_id)
    return {
        "index_build_s": index["build_s"],
        "index_mb": index["index_mb"],
        "query_p50_ms": common.percentiles(times)["p50"],
    }


def latest_vector_search() -> dict[str, Any] | None:
    path = common.RESULTS_DIR / "vector_search.json"
    if not path.exists():
        return None
    for record in reversed(json.loads(path.read_text())):
        if record["result"]["n"] == 100_000 and record["result"]["index"].get("build_s"):
            return record["result"]
    return None


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,5000,10000,20000,50000", help="product counts to run")
    p.add_argument("--extrapolate", default="100000,1000000,10000000", help="product counts to extrapolate to")
    p.add_argument("--max-gb", type=float, default=None, help="largest matrix to try (default: 60 %% of MemAvailable)")
    p.add_argument("--index-max", type=int, default=20_000, help="largest N for which the pgvector index is built here")
    p.add_argument("--real", type=int, default=200, help="catalogue images the vectors derive from")
    p.add_argument("--noise", type=float, default=0.55, help="as in vector_search.py")
    p.add_argument("--queries", type=int, default=100, help="pgvector queries timed per N")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    common.setup_django()
    if args.child:  # one all-pairs run, in its own process: print its numbers as JSON
        print(json.dumps(allpairs((real_embeddings(args.real)[0], args.child, args.seed, args.noise))))
        return 0
    common.migrate()
    real, _ = real_embeddings(args.real)
    sizes = [int(s) for s in args.sizes.split(",")]
    max_gb = args.max_gb or 0.6 * available_gb()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        need = 4 * n * n / 1e9
        row: dict[str, Any] = {"n": n}
        if need > max_gb:
            row.update({"matrix_gb": round(need, 2), "note": f"not run: matrix > {max_gb:.1f} GB"})
        else:
            print(f"all-pairs N={n:,} ({need:.2f} GB matrix)...", flush=True)
            row.update(run_isolated(n, args))
        if n <= args.index_max:
            print(f"pgvector N={n:,}...", flush=True)
            row.update(pgvector_side(real, n, args.seed, args.noise, args.queries))
        rows.append(row)
        print(row, flush=True)

    measured = [r for r in rows if r["note"] == "measured"]
    # Time grows as N² (the matrix product dominates): fit on the largest measured size.
    ref = measured[-1] if measured else None
    for n in [int(s) for s in args.extrapolate.split(",")] + [r["n"] for r in rows if r["note"] != "measured"]:
        if ref is None:
            break
        scale = (n / ref["n"]) ** 2
        est = {
            "n": n,
            "total_s": round(ref["total_s"] * scale, 1),
            "matrix_gb": round(4 * n * n / 1e9, 1),
            "note": f"extrapolated (∝ N² from N={ref['n']:,})",
        }
        previous = next((r for r in rows if r["n"] == n), None)
        if previous is not None and previous["note"].startswith("failed"):
            est["note"] = previous["note"] + "; " + est["note"]
        rows = [r for r in rows if r["n"] != n] + [est]
    vs = latest_vector_search()
    if vs:
        for r in rows:
            if r["n"] == 100_000:
                r.update(
                    {
                        "index_build_s": vs["index"]["build_s"],
                        "index_mb": vs["index"]["index_mb"],
                        "query_p50_ms": next(
                            x["service p50 ms"] for x in vs["rows"] if x["ef_search"] == 100 and x["filter"] == "none"
                        ),
                    }
                )
    rows.sort(key=lambda r: r["n"])
    limit_n = int((max_gb * 1e9 / 4) ** 0.5)
    ram_n = int((common.machine()["memory_gb"] * 2**30 / 4) ** 0.5)
    common.print_table(
        rows,
        [
            "n",
            "note",
            "matmul_s",
            "topk_s",
            "total_s",
            "matrix_gb",
            "peak_rss_gb",
            "index_build_s",
            "index_mb",
            "query_p50_ms",
        ],
        title="All-pairs matrix (the seed articles) vs imgrec's HNSW index",
    )
    print(
        f"\nThe float32 matrix alone fills this machine's {common.machine()['memory_gb']} GB at N ≈ {ram_n:,} "
        f"(and the {max_gb:.1f} GB allowed here at N ≈ {limit_n:,}); time grows as N²."
    )
    result = {"rows": rows, "max_gb": round(max_gb, 1), "n_at_ram_limit": ram_n, "n_at_allowed_limit": limit_n}
    common.save_result("allpairs_baseline", args, result, extra={"postgres": common.postgres_versions()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
