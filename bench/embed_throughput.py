"""Embedding throughput: the raw model forward vs the whole indexing pipeline, same device and batch.

*Raw*: ``encoder.model(x)`` on pre-made, already normalised ``[B, 3, 224, 224]`` tensors on the
device (channels_last, the encoder's autocast dtype), ``B = IMGREC["BATCH_SIZE"]``.
*Pipeline*: the real worker path, ``imgrec_app.services.indexing.process_images`` in chunks of
``TASK_BATCH_SIZE`` on real product-photo files (JPEG and PNG, 800–2000 px, made from the demo
catalogue by ``bench/photos.py``) stored in ``MEDIA_ROOT``: claim rows, read + hash + decode +
preprocess in the decode threads, the model, the conditional database writes, the product
vectors.  The embeddings of the bench images are deleted before each pass so that nothing is
reused by file hash.  Raw and pipeline passes alternate so that the ratio is measured under the
same machine load.

Where the time goes: the bench wraps ``indexing._prepare``, ``indexing.load_rgb``,
``encoder.preprocess``, ``encoder.encode_arrays``, ``indexing.claim``,
``indexing._encode_and_write`` and ``indexing.refresh_product_vectors`` (wrappers installed by the
bench only; production code is unchanged) and reports seconds per stage.

``--experiment`` swaps the encoder's network for a variant that is *not* in production (CPU bf16
autocast, a frozen TorchScript graph, ``torch.compile``) to measure what it would give.

Examples::

    .venv/bin/python bench/embed_throughput.py                      # CPU, 96 JPEG + 48 PNG
    .venv/bin/python bench/embed_throughput.py --sweep              # + quick-win variants
    .venv/bin/python bench/embed_throughput.py --precision bf16     # CPUs with AVX512-BF16/AMX
    IMGREC_DEVICE=cuda python bench/embed_throughput.py --device cuda --amp fp16 --images 4096 \\
        --batch-size 256 --task-batch-size 1024 --decode-workers 14 --decoder torchvision
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contextlib import contextmanager  # noqa: E402

import numpy as np  # noqa: E402

from bench import _common as common  # noqa: E402
from bench.photos import describe, make_photos  # noqa: E402

EXPERIMENTS = ("none", "cpu-bf16", "jit", "jit-bf16", "compile")


# --- timing wrappers --------------------------------------------------------------------------------


class StageTimers:
    """Wall and thread-CPU seconds per wrapped function (thread-safe)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                w, c = time.perf_counter() - w0, time.thread_time() - c0
                with self._lock:
                    self.wall[name] += w
                    self.cpu[name] += c
                    self.calls[name] += 1

        return timed


@contextmanager
def instrumented(encoder: Any, timers: StageTimers) -> Iterator[None]:
    """Install the timing wrappers on the indexing module and the encoder; restore them after."""
    from imgrec_app.services import indexing

    patched = {
        "claim": "claim",
        "prepare": "_prepare",
        "decode": "load_rgb",
        "write": "_encode_and_write",
        "refresh": "refresh_product_vectors",
        "sync": "sync_serving_model",
    }
    saved = {attr: getattr(indexing, attr) for attr in patched.values()}
    for name, attr in patched.items():
        setattr(indexing, attr, timers.wrap(name, saved[attr]))
    encoder.preprocess = timers.wrap("preprocess", type(encoder).preprocess.__get__(encoder))
    encoder.encode_arrays = timers.wrap("model", type(encoder).encode_arrays.__get__(encoder))
    try:
        yield
    finally:
        for attr, func in saved.items():
            setattr(indexing, attr, func)
        del encoder.preprocess, encoder.encode_arrays


def stage_breakdown(timers: StageTimers, total_wall: float, images: int) -> list[dict[str, Any]]:
    """Per-image milliseconds of each stage; the decode-thread stages run beside the main thread."""
    w, c = timers.wall, timers.cpu
    per = 1000.0 / max(1, images)
    read_hash = w["prepare"] - w["decode"] - w["preprocess"]
    db_write = w["write"] - w["model"]
    main_known = w["claim"] + w["write"] + w["refresh"] + w["sync"]
    rows = [
        ("decode threads", "read + sha256", read_hash, c["prepare"] - c["decode"] - c["preprocess"]),
        ("decode threads", "decode (load_rgb)", w["decode"], c["decode"]),
        ("decode threads", "preprocess (resize+crop)", w["preprocess"], c["preprocess"]),
        ("main thread", "claim rows", w["claim"], c["claim"]),
        ("main thread", "waiting for decode", max(0.0, total_wall - main_known), float("nan")),
        ("main thread", "model (encode_arrays)", w["model"], c["model"]),
        ("main thread", "DB write (per image)", db_write, c["write"] - c["model"]),
        ("main thread", "product vectors + serving", w["refresh"] + w["sync"], c["refresh"] + c["sync"]),
    ]
    out = []
    for thread, stage, wall, cpu in rows:
        out.append(
            {
                "thread": thread,
                "stage": stage,
                "ms/img (wall)": wall * per,
                "ms/img (thread CPU)": cpu * per,
                "% of pass wall": 100.0 * wall / total_wall if total_wall else float("nan"),
            }
        )
    return out


# --- the encoder and its experimental variants ---------------------------------------------------------


def make_encoder(experiment: str) -> Any:
    """The production encoder (``load_encoder``), or a copy whose network is an experiment."""
    import torch

    from imgrec_app.services.indexing import load_encoder
    from imgrec_app.services.models import configured_model

    base = load_encoder(configured_model())
    if experiment == "none":
        return base
    enc = copy.copy(base)
    enc._lock = threading.Lock()
    model = base.model
    example = torch.zeros((2, 3, base.spec.crop_size, base.spec.crop_size), device=base.device)
    example = example.contiguous(memory_format=torch.channels_last)

    class Cast(torch.nn.Module):
        """Runs the wrapped network under autocast, or on inputs cast to its dtype."""

        def __init__(self, net: Any, dtype: Any, autocast: bool) -> None:
            super().__init__()
            self.net, self.dtype, self.autocast = net, dtype, autocast

        def forward(self, x: Any) -> Any:
            if self.autocast:
                with torch.autocast(x.device.type, dtype=self.dtype):
                    return self.net(x)
            return self.net(x.to(self.dtype))

    if experiment == "cpu-bf16":
        enc.model = Cast(model, torch.bfloat16, autocast=True)
    elif experiment in ("jit", "jit-bf16"):
        net = copy.deepcopy(model)
        if experiment == "jit-bf16":
            net = net.to(torch.bfloat16)
            example = example.to(torch.bfloat16)
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, example)))
        enc.model = Cast(frozen, torch.bfloat16, autocast=False) if experiment == "jit-bf16" else frozen
    elif experiment == "compile":
        enc.model = torch.compile(model)
    else:
        raise ValueError(experiment)
    enc.amp_dtype = base.amp_dtype if experiment == "compile" else None
    return enc


@contextmanager
def use_encoder(encoder: Any) -> Iterator[None]:
    """Make ``process_images`` use this encoder (the production one unless an experiment runs)."""
    from imgrec_app.services import indexing

    saved = indexing.load_encoder
    indexing.load_encoder = lambda ref: encoder
    try:
        yield
    finally:
        indexing.load_encoder = saved


def raw_pass(encoder: Any, images: int, batch: int) -> dict[str, float]:
    """``encoder.model(x)`` on a pre-made normalised batch, ``images`` images in all."""
    import torch

    size = encoder.spec.crop_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 3, size, size), generator=g) * 2 - 1
    x = x.to(encoder.device).contiguous(memory_format=torch.channels_last)
    steps = max(1, round(images / batch))

    def forward() -> None:
        if encoder.amp_dtype is not None:
            with torch.autocast(encoder.device.type, dtype=encoder.amp_dtype):
                out = encoder.model(x)
        else:
            out = encoder.model(x)
        out[0].float().cpu()  # the features leave the device, as in the pipeline

    with torch.inference_mode():
        forward()  # warm-up (allocations, cudnn/oneDNN choices)
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        with common.clock() as t:
            for _ in range(steps):
                forward()
            if encoder.device.type == "cuda":
                torch.cuda.synchronize()
    n = steps * batch
    return {"images": n, "wall_s": t["wall"], "cpu_s": t["cpu"], "img_per_s": n / t["wall"]}


# --- the pipeline ----------------------------------------------------------------------------------------


def stage_files(paths: list[Path], fmt: str) -> list[int]:
    """Products (bulk, no signals) with these photos in MEDIA_ROOT, and their IndexedImage rows."""
    import shutil

    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType
    from django.utils import timezone

    from imgrec_app.hosts import sources_for_model
    from imgrec_app.models import IndexedImage
    from imgrec_app.services.models import configured_model
    from shop_demo.catalog.models import Category, Product

    category, _ = Category.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    folder = Path(settings.MEDIA_ROOT) / "bench" / fmt.lower()
    folder.mkdir(parents=True, exist_ok=True)
    products = []
    for i, src in enumerate(paths):
        dest = folder / src.name
        if not dest.exists():
            try:
                dest.hardlink_to(src)
            except OSError:
                shutil.copyfile(src, dest)
        products.append(
            Product(
                slug=f"bench-{fmt.lower()}-{i}",
                name=f"Bench {fmt} {i}",
                price=10,
                stock=1,
                category=category,
                photo=f"bench/{fmt.lower()}/{src.name}",
            )
        )
    Product.objects.bulk_create(products)
    source = next(iter(sources_for_model(Product)))
    ct = ContentType.objects.get_for_model(Product)
    model_id = configured_model().model_id
    now = timezone.now()
    images = IndexedImage.objects.bulk_create(
        IndexedImage(
            source=source.key,
            source_id=str(p.pk),
            content_type=ct,
            object_id=str(p.pk),
            file_name=p.photo.name,
            status=IndexedImage.Status.PENDING,
            model_id=model_id,
            queued_at=now,
        )
        for p in Product.objects.filter(slug__startswith=f"bench-{fmt.lower()}-").order_by("pk")
    )
    return [i.pk for i in images]


def clear_bench_rows() -> None:
    from imgrec_app.models import IndexedImage, ProductVector
    from shop_demo.catalog.models import Product

    ids = [str(pk) for pk in Product.objects.filter(slug__startswith="bench-").values_list("pk", flat=True)]
    IndexedImage.objects.filter(object_id__in=ids).delete()
    ProductVector.objects.filter(object_id__in=ids).delete()
    Product.objects.filter(slug__startswith="bench-")._raw_delete("default")


def reset(image_ids: list[int]) -> None:
    from django.utils import timezone

    from imgrec_app.models import ImageEmbedding, IndexedImage

    ImageEmbedding.objects.filter(image_id__in=image_ids).delete()
    IndexedImage.objects.filter(pk__in=image_ids).update(
        status=IndexedImage.Status.PENDING, attempts=0, queued_at=timezone.now()
    )


def pipeline_pass(image_ids: list[int], encoder: Any, timers: StageTimers) -> dict[str, Any]:
    """Run the worker path over ``image_ids`` in task-sized chunks, timing its stages into ``timers``."""
    from imgrec_app.conf import imgrec_settings
    from imgrec_app.models import IndexedImage
    from imgrec_app.services import indexing

    reset(image_ids)
    chunk = int(imgrec_settings.TASK_BATCH_SIZE)
    db0 = common.backend_cpu_seconds()
    with use_encoder(encoder), instrumented(encoder, timers), common.clock() as t:
        for start in range(0, len(image_ids), chunk):
            indexing.process_images(image_ids[start : start + chunk], greedy=False)
    db_cpu = common.backend_cpu_seconds() - db0
    ready = IndexedImage.objects.filter(pk__in=image_ids, status=IndexedImage.Status.READY).count()
    if ready != len(image_ids):
        failed = list(
            IndexedImage.objects.filter(pk__in=image_ids)
            .exclude(status="ready")
            .values_list("status", "failure_reason")[:5]
        )
        raise RuntimeError(f"only {ready}/{len(image_ids)} images ended ready: {failed}")
    return {"images": len(image_ids), "wall_s": t["wall"], "cpu_s": t["cpu"], "db_server_cpu_s": db_cpu}


# --- one configuration -------------------------------------------------------------------------------------


@contextmanager
def async_commit(enabled: bool) -> Iterator[None]:
    """``synchronous_commit = off`` on the pipeline's connection (an experiment: no WAL flush wait)."""
    from django.db import connection

    if not enabled:
        yield
        return
    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("RESET synchronous_commit")


def run_config(
    label: str, sets: dict[str, list[int]], *, experiment: str, repeat: int, db_async_commit: bool = False
) -> dict[str, Any]:
    """Alternate raw and pipeline passes for each file set; ratios from neighbouring passes."""
    import torch

    from imgrec_app.conf import imgrec_settings

    encoder = make_encoder(experiment)
    if encoder.device.type == "cpu" and imgrec_settings.TORCH_THREADS:
        torch.set_num_threads(int(imgrec_settings.TORCH_THREADS))
    batch = int(imgrec_settings.BATCH_SIZE)
    cores = common.cores() if encoder.device.type == "cpu" else None
    # Warm-up: the first pipeline pass pays for lazy imports, connections and allocator growth.
    first = next(iter(sets.values()))
    pipeline_pass(first[: min(len(first), batch)], encoder, StageTimers())
    chunk = int(imgrec_settings.TASK_BATCH_SIZE)
    rows = []
    for fmt, ids in sets.items():
        # Rounds of one task (TASK_BATCH_SIZE images) each: a raw pass of as many images, then the
        # pipeline pass, so that both see the same machine load (it changes by the second here).
        timers = StageTimers()
        raws, pipes = [], []
        for _ in range(repeat):
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                raws.append(raw_pass(encoder, len(part), batch))
                with async_commit(db_async_commit):
                    pipes.append(pipeline_pass(part, encoder, timers))
        raw_n, pipe_n = sum(r["images"] for r in raws), sum(p["images"] for p in pipes)
        raw_wall, pipe_wall = sum(r["wall_s"] for r in raws), sum(p["wall_s"] for p in pipes)
        raw_cpu = raw_n / sum(r["cpu_s"] for r in raws)
        pipe_cpu = pipe_n / sum(p["cpu_s"] + p["db_server_cpu_s"] for p in pipes)
        round_ratios = [p["images"] / p["wall_s"] / r["img_per_s"] for r, p in zip(raws, pipes)]
        rows.append(
            {
                "config": label,
                "format": fmt,
                "images": pipe_n,
                "rounds": len(pipes),
                "raw img/s": raw_n / raw_wall,
                "pipeline img/s": pipe_n / pipe_wall,
                "ratio": (pipe_n / pipe_wall) / (raw_n / raw_wall),
                "ratio median": float(np.median(round_ratios)),
                "CPU ratio": pipe_cpu / raw_cpu,
                "pipeline img/s/core": pipe_n / pipe_wall / cores if cores else float("nan"),
                "pipeline img/CPU-s": pipe_cpu,
                "raw img/CPU-s": raw_cpu,
                "DB server CPU ms/img": 1000 * sum(p["db_server_cpu_s"] for p in pipes) / pipe_n,
                "stages": stage_breakdown(timers, pipe_wall, pipe_n),
                "round_ratios": [round(x, 3) for x in round_ratios],
                "load_avg": round(os.getloadavg()[0], 2),
            }
        )
    return {
        "label": label,
        "experiment": experiment,
        "db_async_commit": db_async_commit,
        "device": str(encoder.device),
        "amp": str(encoder.amp_dtype),
        "batch_size": batch,
        "task_batch_size": int(imgrec_settings.TASK_BATCH_SIZE),
        "decode_workers": int(imgrec_settings.DECODE_WORKERS),
        "model_id": encoder.model_id,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }


@contextmanager
def imgrec_overrides(**values: Any) -> Iterator[None]:
    from django.conf import settings
    from django.test import override_settings

    with override_settings(IMGREC={**settings.IMGREC, **{k: v for k, v in values.items() if v is not None}}):
        yield


SWEEP = [
    # label, IMGREC overrides, encoder experiment, synchronous_commit off
    ("threads=1", {"TORCH_THREADS": 1}, "none", False),
    ("batch=64", {"BATCH_SIZE": 64}, "none", False),
    ("decode_workers=1", {"DECODE_WORKERS": 1}, "none", False),
    ("async commit", {}, "none", True),
    ("cpu-bf16 autocast", {}, "cpu-bf16", False),
    ("jit frozen bf16", {}, "jit-bf16", False),
    ("jit bf16, threads=1, async commit", {"TORCH_THREADS": 1}, "jit-bf16", True),
]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=96, help="JPEG files per pass")
    p.add_argument("--png-images", type=int, default=48, help="PNG files per pass (0: none)")
    p.add_argument("--min-px", type=int, default=800, help="smallest long side of the photos")
    p.add_argument("--max-px", type=int, default=2000, help="largest long side of the photos")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="passes over each file set (each pass: rounds of one task, raw then pipeline)",
    )
    p.add_argument("--device", default=None, help="IMGREC DEVICE (cpu, cuda, auto); default: the settings'")
    p.add_argument("--amp", default=None, choices=["fp16", "bf16", "none"], help="CUDA_AMP")
    p.add_argument(
        "--threads", type=int, default=None, help="TORCH_THREADS (default: the settings', 2 in tests.settings)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="BATCH_SIZE (images per forward pass)")
    p.add_argument("--task-batch-size", type=int, default=None, help="TASK_BATCH_SIZE (images per task)")
    p.add_argument("--decode-workers", type=int, default=None, help="DECODE_WORKERS")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="PRECISION (bf16: its own model id)")
    p.add_argument(
        "--decoder", default=None, choices=["pillow", "torchvision"], help="DECODER (torchvision: JPEGs on the device)"
    )
    p.add_argument(
        "--experiment", default="none", choices=EXPERIMENTS, help="an encoder variant that is not in production"
    )
    p.add_argument(
        "--db-async-commit", action="store_true", help="experiment: synchronous_commit=off for the pipeline's writes"
    )
    p.add_argument("--sweep", action="store_true", help="also run the quick-win variants (JPEG only)")
    args = p.parse_args(argv)

    common.setup_django()
    common.migrate()
    import torch  # noqa: F401 - loaded so that machine() reports it

    jpegs = make_photos("JPEG", args.images, min_px=args.min_px, max_px=args.max_px, seed=args.seed)
    pngs = (
        make_photos("PNG", args.png_images, min_px=args.min_px, max_px=args.max_px, seed=args.seed)
        if args.png_images
        else []
    )
    files = {"JPEG": describe(jpegs), **({"PNG": describe(pngs)} if pngs else {})}
    clear_bench_rows()
    sets = {"JPEG": stage_files(jpegs, "JPEG")}
    if pngs:
        sets["PNG"] = stage_files(pngs, "PNG")

    base = dict(
        DEVICE=args.device,
        CUDA_AMP=(None if args.amp == "none" else args.amp) if args.amp else None,
        TORCH_THREADS=args.threads,
        BATCH_SIZE=args.batch_size,
        TASK_BATCH_SIZE=args.task_batch_size,
        DECODE_WORKERS=args.decode_workers,
        PRECISION=args.precision,
        DECODER=args.decoder,
    )
    if args.amp == "none":
        base["CUDA_AMP"] = ""
    configs = []
    with imgrec_overrides(**base):
        label = "default" if args.experiment == "none" else args.experiment
        label += " + async commit" if args.db_async_commit else ""
        configs.append(
            run_config(
                label, sets, experiment=args.experiment, repeat=args.repeat, db_async_commit=args.db_async_commit
            )
        )
        if args.sweep:
            for label, overrides, experiment, async_ in SWEEP:
                with imgrec_overrides(**overrides):
                    print(f"... {label}", flush=True)
                    configs.append(
                        run_config(
                            label,
                            {"JPEG": sets["JPEG"]},
                            experiment=experiment,
                            repeat=args.repeat,
                            db_async_commit=async_,
                        )
                    )
    clear_bench_rows()

    rows = [r for c in configs for r in c["rows"]]
    print("\nFiles:", files)
    common.print_table(
        rows,
        [
            "config",
            "format",
            "images",
            "rounds",
            "raw img/s",
            "pipeline img/s",
            "ratio",
            "ratio median",
            "CPU ratio",
            "pipeline img/s/core",
            "pipeline img/CPU-s",
            "raw img/CPU-s",
            "DB server CPU ms/img",
            "load_avg",
        ],
        title=(
            "Embedding throughput (ratio = pipeline ÷ raw model forward, same device and batch; "
            "target ≥ 0.90; CPU target ≥ 20 img/s/core)"
        ),
    )
    first = configs[0]
    for row in first["rows"]:
        common.print_table(
            row["stages"], title=f"Where the time goes: {row['config']} {row['format']} ({row['images']} images)"
        )
    result = {"files": files, "configs": configs}
    common.save_result("embed_throughput", args, result, extra={"postgres": common.postgres_versions()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
