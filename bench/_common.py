"""Shared pieces of the benchmarks: Django set-up, machine facts, percentiles, tables, results.

Every benchmark prints a table and appends one JSON record to ``bench/results/<name>.json`` (a
JSON list, newest last) with the machine, the versions, the arguments and the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CATALOGUE_IMAGES = ROOT / "shop_demo" / "catalog" / "data" / "images"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django(settings_module: str = "bench.settings") -> None:
    """Configure Django: ``bench/settings.py`` (the test settings, so the embedded Postgres in
    ``$IMGREC_VAR_DIR`` and the test Redis database, with one media folder for all processes)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    # Production runs with DEBUG off: no per-query logging in connection.queries.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def var_dir() -> Path:
    """The benchmark's scratch folder (``$IMGREC_VAR_DIR``, else ``var/bench``)."""
    path = Path(os.environ.get("IMGREC_VAR_DIR", ROOT / "var" / "bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--no-save", action="store_true", help="do not append the result to bench/results/")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


# --- the machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """CPU, cores, memory, load and the GPU if any (no torch import unless it is loaded)."""
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": cores(),
        "memory_gb": mem_gb,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def postgres_versions() -> dict[str, str]:
    """Server and pgvector versions of the default database."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        server = cur.fetchone()[0]
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cur.fetchone()
    return {"postgres": server, "pgvector": row[0] if row else "not installed"}


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except Exception:  # pragma: no cover
        return ""


# --- measuring ----------------------------------------------------------------------------------


def percentiles(samples_s: Sequence[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Percentiles of durations in seconds, returned in milliseconds (``p50``, ``p95``, ...)."""
    if not samples_s:
        return {f"p{int(p)}": float("nan") for p in ps}
    arr = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {f"p{int(p)}": round(float(np.percentile(arr, p)), 3) for p in ps}


@contextmanager
def clock() -> Iterator[dict[str, float]]:
    """Wall and process CPU seconds (all threads) of a block: ``{"wall": ..., "cpu": ...}``."""
    out: dict[str, float] = {}
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["wall"] = time.perf_counter() - w0
        out["cpu"] = time.process_time() - c0


def backend_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a Postgres backend (default: this connection's).

    The database server runs on the same cores here, so its CPU is part of the pipeline's cost.
    """
    if pid is None:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- reporting ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, title: str = "") -> None:
    """A plain-text table (also valid Markdown)."""
    if not rows:
        return
    cols = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def save_result(
    name: str, args: argparse.Namespace, result: dict[str, Any], *, extra: dict[str, Any] | None = None
) -> Path | None:
    """Append one record to ``bench/results/<name>.json``; returns the path (None with --no-save)."""
    if getattr(args, "no_save", False):
        return None
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {
        "bench": name,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "machine": machine(),
        **(extra or {}),
        "result": result,
    }
    records = json.loads(path.read_text()) if path.exists() else []
    records.append(record)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    print(f"\nresult appended to {path.relative_to(ROOT)}")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def catalogue_images(limit: int | None = None) -> list[Path]:
    """The demo catalogue's product images (sorted, optionally the first ``limit`` spread evenly)."""
    paths = sorted(p for p in CATALOGUE_IMAGES.glob("*/*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if limit and limit < len(paths):
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    return paths
