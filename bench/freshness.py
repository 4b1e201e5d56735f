"""Freshness: from saving a product photo to the product showing on another product's shelf.

A real Celery worker (a ``celery -A shop_demo worker`` subprocess on the queues of
``IMGREC["QUEUES"]``, ``--concurrency 1``, settings ``bench/settings.py``: the test Redis
database and the embedded Postgres of ``$IMGREC_VAR_DIR``) consumes the queues.  After a warm-up
save (the model loads on the worker's first task), ``--backlog`` products with photo-sized JPEGs
(``bench/photos.py``) are saved one after another, each queueing its task on commit as a shop's
uploads would; then, while the backlog drains, ``--probes`` new products are saved every
``--interval`` seconds.  A probe's photo is a photo-style rendering of one demo product's
catalogue image, so it belongs on that product's "similar products" shelf: the time is measured
from just before ``save()`` until ``similar_products(that product, limit=8)`` lists the probe
(it also takes that product's name and description: a new variant, similar by text as well)
(polled in this process every 0.1 s), and also until the probe's image is ``ready``.  Finally a
few probes with an idle queue give the no-backlog figure.  Target: p95 ≤ 30 s with a backlog.

Example::

    .venv/bin/python bench/freshness.py --backlog 200 --probes 20
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common  # noqa: E402
from bench.photos import _photo, make_photos  # noqa: E402


def purge_queues() -> None:
    from imgrec_app.conf import imgrec_settings
    from shop_demo.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        for queue in [*imgrec_settings.QUEUES.values(), "celery"]:
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - a queue that does not exist yet
                pass


def start_worker() -> tuple[subprocess.Popen, list[str]]:
    from imgrec_app.conf import imgrec_settings

    queues = [*imgrec_settings.QUEUES.values(), "celery"]
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "shop_demo",
        "worker",
        "-Q",
        ",".join(queues),
        "--concurrency",
        "1",
        "--pool",
        "prefork",
        "--loglevel",
        "WARNING",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"bench-freshness-{os.getpid()}@%h",
    ]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "DJANGO_DEBUG": "0", "IMGREC_LOG_LEVEL": "WARNING"}
    log = open(common.var_dir() / "freshness-worker.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, queues


def stop_worker(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the worker and its pool child, started by us
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def save_product(slug: str, photo: Path, category: Any, like: Any = None) -> Any:
    """Save a product with a photo; ``like``: a product whose name and description it takes (a new
    variant of it, so that it belongs on that product's shelf by text as well as by image)."""
    from django.core.files import File

    from shop_demo.catalog.models import Product

    name = f"{like.name} (new)" if like is not None else slug.replace("-", " ").title()
    description = like.description if like is not None else ""
    product = Product(slug=slug, name=name, description=description, price=20, stock=5, category=category)
    with open(photo, "rb") as fh:
        product.photo.save(photo.name, File(fh), save=False)
    product.save()  # post_save tracks the image and queues it after commit (autocommit: now)
    return product


def probe_photo(target_image: Path, out: Path, seed: int) -> Path:
    """A product-photo rendering (1200 px, backdrop, noise) of a catalogue image, as JPEG."""
    import numpy as np

    if not out.exists():
        img = _photo(target_image, 1200, random.Random(seed), np.random.default_rng(seed))
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, "JPEG", quality=90)
    return out


def wait_visible(probe_pk: int, target: Any, t0: float, timeout: float) -> dict[str, float | None]:
    """Seconds from ``t0`` until the probe's image is ready and until it is on ``target``'s shelf."""
    from imgrec_app.models import IndexedImage
    from imgrec_app.services.recommend import similar_products

    ready_at = shelf_at = None
    deadline = t0 + timeout
    while time.perf_counter() < deadline and shelf_at is None:
        if ready_at is None and IndexedImage.objects.filter(object_id=str(probe_pk), status="ready").exists():
            ready_at = time.perf_counter() - t0
        if ready_at is not None:
            ids = {r.product_id for r in similar_products(target, limit=8, attach=False)}
            if str(probe_pk) in ids:
                shelf_at = time.perf_counter() - t0
                break
        time.sleep(0.1)
    return {"ready_s": ready_at, "shelf_s": shelf_at}


def cleanup(prefix: str) -> None:
    from shop_demo.catalog.models import Product

    for product in Product.objects.filter(slug__startswith=prefix):
        product.delete()  # imgrec forgets its images, vectors and history through the signals


def run_probes(
    count: int, interval: float, targets: list[Any], prefix: str, seed: int, timeout: float, category: Any
) -> list[dict[str, Any]]:
    """Save probes every ``interval`` s; a thread per probe waits for it to show up."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    threads = []
    folder = common.var_dir() / "bench-photos" / "probes"

    def watch(pk: int, target: Any, t0: float, i: int) -> None:
        from django.db import connection

        try:
            r = wait_visible(pk, target, t0, timeout)
        finally:
            connection.close()
        with lock:
            results.append({"probe": i, "target": target.pk, **r})

    for i in range(count):
        target = targets[i % len(targets)]
        photo = probe_photo(
            common.CATALOGUE_IMAGES.parent / "images" / _catalogue_image(target), folder / f"{prefix}{i}.jpg", seed + i
        )
        t0 = time.perf_counter()
        probe = save_product(f"{prefix}{i}", photo, category, like=target)
        t = threading.Thread(target=watch, args=(probe.pk, target, t0, i), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(interval)
    for t in threads:
        t.join(timeout + 10)
    return sorted(results, key=lambda r: r["probe"])


def _catalogue_image(product: Any) -> str:
    """The catalogue file a demo product was seeded from (``<category>/<file>``)."""
    import json

    entries = json.loads((common.CATALOGUE_IMAGES.parent / "catalogue.json").read_text())
    by_slug = {e["slug"]: e["image"] for e in entries}
    return str(Path(by_slug[product.slug]).relative_to("images"))


def backlog_drained(slug_prefix: str, timeout: float) -> dict[str, float | None]:
    """Wait until the backlog's images and text vectors are all made; seconds from its first save
    to the last image ready and to the last text vector (database timestamps)."""
    from django.db.models import Max, Min

    from imgrec_app.models import IndexedImage, ProductVector
    from shop_demo.catalog.models import Product

    products = Product.objects.filter(slug__startswith=slug_prefix)
    ids = [str(pk) for pk in products.values_list("pk", flat=True)]
    first = products.aggregate(t=Min("created_at"))["t"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        images_left = IndexedImage.objects.filter(object_id__in=ids).exclude(status__in=["ready", "failed"]).exists()
        texts = ProductVector.objects.filter(object_id__in=ids, modality="text").count()
        if not images_left and texts >= len(ids):
            break
        time.sleep(0.5)
    last_image = IndexedImage.objects.filter(object_id__in=ids).aggregate(t=Max("indexed_at"))["t"]
    last_text = ProductVector.objects.filter(object_id__in=ids, modality="text").aggregate(t=Max("updated_at"))["t"]
    return {
        "images_s": round((last_image - first).total_seconds(), 1) if last_image and first else None,
        "texts_s": round((last_text - first).total_seconds(), 1) if last_text and first else None,
    }


def summarise(label: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    shelf = [r["shelf_s"] for r in results if r["shelf_s"] is not None]
    ready = [r["ready_s"] for r in results if r["ready_s"] is not None]
    ps = common.percentiles(shelf)
    pr = common.percentiles(ready)
    return {
        "phase": label,
        "probes": len(results),
        "on shelf": len(shelf),
        "shelf p50 s": ps["p50"] / 1000,
        "shelf p95 s": ps["p95"] / 1000,
        "shelf max s": max(shelf) if shelf else float("nan"),
        "ready p50 s": pr["p50"] / 1000,
        "ready p95 s": pr["p95"] / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--backlog", type=int, default=200, help="photos queued before the probes")
    p.add_argument("--probes", type=int, default=20, help="new saves measured while the backlog drains")
    p.add_argument("--interval", type=float, default=1.5, help="seconds between probe saves")
    p.add_argument("--idle-probes", type=int, default=5, help="probes measured with an empty queue afterwards")
    p.add_argument("--timeout", type=float, default=300.0, help="give up on a probe after this many seconds")
    args = p.parse_args(argv)
    # A plain `kill` must still stop the server / worker we start (the finally blocks below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    common.setup_django()
    common.migrate()
    from bench.serving_load import prepare_catalogue
    from imgrec_app.models import IndexedImage
    from shop_demo.catalog.models import Category, Product

    prepare_catalogue(20)
    prefix = "fresh-"
    cleanup(prefix)
    purge_queues()
    category, _ = Category.objects.get_or_create(slug="bench-fresh", defaults={"name": "Fresh uploads"})
    demo = list(Product.objects.filter(published=True, stock__gt=0).exclude(slug__startswith="bench").order_by("pk"))
    rng = random.Random(args.seed)
    targets = rng.sample(demo, min(len(demo), args.probes + args.idle_probes))
    backlog_photos = make_photos("JPEG", args.backlog, seed=args.seed + 1) if args.backlog else []

    worker, queues = start_worker()
    rows: list[dict[str, Any]] = []
    try:
        print(f"worker on {queues}; warming up (the model loads on the first task)...", flush=True)
        warm = run_probes(1, 0.0, targets[:1], prefix + "warm-", args.seed, args.timeout, category)
        print("warm-up:", warm, flush=True)
        t_backlog = time.perf_counter()
        for i, photo in enumerate(backlog_photos):
            save_product(f"{prefix}backlog-{i}", photo, category)
        queued_s = time.perf_counter() - t_backlog
        pending = IndexedImage.objects.filter(status__in=["pending", "processing"]).count()
        print(f"queued {len(backlog_photos)} photos in {queued_s:.1f}s ({pending} waiting); probing...", flush=True)
        busy = run_probes(
            args.probes,
            args.interval,
            targets[: args.probes],
            prefix + "probe-",
            args.seed + 100,
            args.timeout,
            category,
        )
        drained = backlog_drained(prefix + "backlog-", args.timeout * 3)
        print(f"backlog drained: {drained}; idle probes...", flush=True)
        idle = run_probes(
            args.idle_probes,
            3.0,
            targets[args.probes :] or targets,
            prefix + "idle-",
            args.seed + 200,
            args.timeout,
            category,
        )
        rows = [summarise(f"with a backlog of {args.backlog}", busy), summarise("idle queue", idle)]
        failed = IndexedImage.objects.filter(
            object_id__in=[
                str(pk) for pk in Product.objects.filter(slug__startswith=prefix).values_list("pk", flat=True)
            ],
            status="failed",
        ).count()
    finally:
        stop_worker(worker)
        purge_queues()
    common.print_table(
        rows, title="Freshness: save → on another product's similar shelf (target p95 ≤ 30 s with a backlog)"
    )
    print(
        f"backlog of {args.backlog}: images all ready {drained['images_s']} s and text vectors all made "
        f"{drained['texts_s']} s after the first save, by one worker; failed images: {failed}"
    )
    result = {
        "rows": rows,
        "probes_busy": busy,
        "probes_idle": idle,
        "queue_s": queued_s,
        "backlog_drained": drained,
        "failed": failed,
        "worker_queues": queues,
    }
    common.save_result("freshness", args, result, extra={"postgres": common.postgres_versions()})
    cleanup(prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
