"""imgrec's settings: one ``IMGREC`` dict, read lazily so ``override_settings`` just works.

Everything in imgrec reads configuration through :data:`imgrec_settings`; nothing else looks at
``django.conf.settings`` for imgrec keys.  The shape follows DRF's ``api_settings``: a ``DEFAULTS``
table, user values merged over it on each access, dotted paths imported on demand with an error
that names the setting.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

SETTING_NAME = "IMGREC"

DEFAULTS: dict[str, Any] = {
    # --- the host shop -------------------------------------------------------------------------
    # "app_label.ModelName" of the shop's product model (required).
    "PRODUCT_MODEL": None,
    # Dotted path to a callable returning the queryset of products that may appear on shelves
    # (published, in stock, ...).  None: every product.
    "RECOMMENDABLE_PRODUCTS": None,
    # Dotted path to a callable returning the queryset of products a visitor may see (their
    # pages exist: published).  Events are accepted, and the similar endpoint and fragment
    # answer, only for these; "recently viewed" and the for-you reasons name only these.
    # None: the RECOMMENDABLE_PRODUCTS rule.
    "VISIBLE_PRODUCTS": None,
    # How to read a product's category: a field/attribute name (``"category"``, ``"category_id"``)
    # or a dotted path to ``callable(product) -> str | None``.  None: no categories.
    "PRODUCT_CATEGORY": None,
    # Dotted path to ``callable(product) -> Q`` over the product model selecting the products of
    # the same category, for categories that are not one plain field (a many-to-many, a tree):
    # "same category" shelves and fallbacks then filter inside SQL.  None: PRODUCT_CATEGORY's
    # field when it is one, else no same-category filter.
    "PRODUCT_CATEGORY_FILTER": None,
    # Extra image sources: existing host models whose image field should be indexed, e.g.
    # ``{"model": "catalogue.ProductImage", "field": "original", "product": "product"}``.
    "IMAGE_SOURCES": [],
    # --- the model -----------------------------------------------------------------------------
    # Registered backbone name (see ``imgrec_app.ml.registry.list_backbones()``).
    "BACKBONE": "efficientnet_lite0",
    # Keyword options passed to the backbone factory, e.g. ``{"weights_path": "/models/r50.pth"}``,
    # plus the recipe keys "preprocess" ("crop" | "pad" | "product") and "pooling" ("avg" | "gem",
    # optionally "+flip" and/or "+multi": multi-layer features, 1664 dims on Lite0); the recipe is
    # part of the model id.  Default ``{}``: the backbone's own recipe; for EfficientNet-Lite that
    # is product framing, GeM and multi-layer features (model id ``...:prod1-gem-multi``, 1664 dims
    # on Lite0), the best measured on both evaluation catalogues (docs/EVALUATION.md).
    # ``{"preprocess": "crop", "pooling": "avg"}`` keeps the original recipe (``...:p1``, 1280).
    "BACKBONE_OPTIONS": {},
    # "auto": serve a new backbone's vectors as soon as its backfill is complete;
    # "manual": keep serving the old ones until ``imgrec_switch_model`` is run.
    "MODEL_SWITCH": "auto",
    # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...; when IMGREC has no "DEVICE",
    # the IMGREC_DEVICE environment variable of the worker process is used.
    "DEVICE": "auto",
    "BATCH_SIZE": 32,
    # CPU threads for torch in a worker; None: torch's default (one per core).
    "TORCH_THREADS": None,
    # Mixed precision on CUDA: "fp16", "bf16" or None.
    "CUDA_AMP": "fp16",
    # Precision of the forward pass: "fp32", or "bf16" (bfloat16 autocast, about 2x faster on CPUs
    # with AVX512-BF16/AMX; refused where the device has no native bf16).  Part of the model id
    # ("...:prod1-gem-multi-bf16"): switching re-embeds the catalogue like a new backbone.
    "PRECISION": "fp32",
    # Who decodes JPEGs: "pillow" (decode threads, draft mode) or "torchvision" (batched
    # ``torchvision.io.decode_jpeg`` on the model's device: nvjpeg on CUDA; resize on the device;
    # other formats through Pillow).  For GPU workers, with BACKBONE_OPTIONS["preprocess"] = "crop"
    # (it implements that recipe only: check E054); part of the model id ("...:p1-tv").
    "DECODER": "pillow",
    # Threads that decode and preprocess the next batch while the model runs.
    "DECODE_WORKERS": 2,
    # How many generic (ImageNet) labels to keep per image.
    "TOP_LABELS": 5,
    # Text model for product names/descriptions ("all-MiniLM-L6-v2", shipped on PyPI), or None.
    "TEXT_MODEL": None,
    # Product attributes (or methods) whose text is embedded.
    "TEXT_FIELDS": ["name", "description"],
    # --- learning the shop's catalogue (``imgrec_tune``, docs/DESIGN.md) -------------------------
    # Serve the active tuned head's vectors (False: serve the base backbone's: a rollback).
    "TUNING_SERVE": True,
    # Options of the projection head (``imgrec_app.ml.head.HeadConfig``: dim, hidden, epochs, ...).
    "TUNING_HEAD": {},
    # A run refuses unless this many categories have TUNING_MIN_PER_CATEGORY+ indexed products.
    "TUNING_MIN_CATEGORIES": 2,
    "TUNING_MIN_PER_CATEGORY": 3,
    # Held-out evaluation of every run (k-fold by product); 0 skips it (then nothing is compared).
    "TUNING_FOLDS": 5,
    # Activate a run only if its held-out image-only precision beats the untuned vectors'.
    "TUNING_REQUIRE_GAIN": True,
    # --- Celery ----------------------------------------------------------------------------------
    # Queue names: "embed" does model work (route it to GPU/CPU workers), "light" does bookkeeping.
    # An optional "tune" key names a queue of its own for catalogue-tuning runs (default: "light"),
    # an optional "text" key one for text embeddings (default: "embed"; a queue of their own keeps
    # new products' text vectors from waiting behind image batches, docs/BENCHMARKS.md §4).
    "QUEUES": {"embed": "imgrec.embed", "light": "imgrec.light"},
    # Images claimed per task; a task claims up to this many waiting images in one go.
    "TASK_BATCH_SIZE": 64,
    # Transient errors (database, broker) are retried this many times with exponential backoff.
    "TASK_MAX_RETRIES": 5,
    # An image whose task was lost this many times (e.g. it kills the worker) is marked failed.
    "MAX_ATTEMPTS": 3,
    # Images pending/processing longer than this (seconds) are re-enqueued by the sweeper.
    "STUCK_AFTER": 600,
    # Pending images whose task could not be published (broker down) are published again by the
    # sweeper once the failure is this old (seconds); the sweeper's own schedule bounds it.
    "REPUBLISH_AFTER": 30,
    # --- shelves ----------------------------------------------------------------------------------
    # Weights of the hybrid similarity: image cosine, text cosine, "viewed together" strength.
    # Chosen by measurement with ``manage.py imgrec_evaluate`` (see docs/EVALUATION.md).
    "SIMILAR_WEIGHTS": {"image": 1.0, "text": 1.0, "coview": 0.3, "learned": 1.0},
    # A pair of products counts as viewed together once this many visitors viewed both.
    "COVIEW_MIN_VISITORS": 2,
    # Candidates fetched per modality, as a multiple of the shelf's limit.
    "CANDIDATE_FACTOR": 3,
    # Two products whose image vectors are closer than this are near-duplicates; one is kept.
    "NEAR_DUPLICATE_SIMILARITY": 0.985,
    # Diversity: None, "mmr" (maximal marginal relevance) or "category" (cap per category).
    "DIVERSITY": None,
    "MMR_LAMBDA": 0.8,
    "CATEGORY_CAP": 3,
    # Upper bound of ``limit`` accepted from callers.
    "MAX_LIMIT": 50,
    # HNSW index and query type: "vector" (float32) or "halfvec" (float16: half the index memory,
    # its own index per model; vectors above 2,000 dimensions are always halfvec).  The table
    # keeps float32 vectors; switching builds the other index (``imgrec_reindex`` / next write).
    "VECTOR_STORAGE": "vector",
    # Static path of the stylesheet the shelf tags link once per page (a responsive row of cards);
    # None leaves it out (style the ``imgrec-shelf*`` classes yourself).
    "SHELF_STYLESHEET": "imgrec_app/shelf.css",
    # pgvector: hnsw.ef_search floor and hnsw.max_scan_tuples for filtered (iterative) scans.
    "HNSW_EF_SEARCH": 100,
    "HNSW_MAX_SCAN_TUPLES": 50_000,
    # Shelf cache of the public similar-products shelf (API and template tags), in Django's cache
    # framework.  Cached ids are re-checked against the rules on every read (never a sold-out,
    # unpublished or deleted product); a model switch or a change of the product's own vectors
    # drops the entry; new neighbours appear once it expires (docs/DESIGN.md, "Shelf cache").
    "SHELF_CACHE": True,
    # Seconds a cached similar shelf lives (bounds how long a new product waits for cached shelves).
    "SHELF_CACHE_TIMEOUT": 30,
    # Alias in ``CACHES`` of the shelf cache.
    "SHELF_CACHE_ALIAS": "default",
    # Database alias the shelves read from (e.g. a read replica); None: the router's read database.
    "SHELF_DATABASE": None,
    # --- history -------------------------------------------------------------------------------
    # How many recent interactions build a visitor's interest profile.
    "HISTORY_LENGTH": 50,
    # Recency half-life of an interaction's weight, in days.
    "HISTORY_HALF_LIFE_DAYS": 7.0,
    # Up to this many interest clusters per visitor (several interests are not averaged away).
    "MAX_INTERESTS": 3,
    # "Recommended for you" blend: weights of its sources (the visitor's interests by vector,
    # "viewed together" with their history, popularity inside the categories they look at) and
    # ``recency`` (how much more the last products viewed count: ×(1 + recency × 0.5^position)).
    # Chosen with ``imgrec_evaluate --foryou-grid`` (docs/EVALUATION.md); a missing key takes its default.
    "FORYOU_WEIGHTS": {"interest": 1.0, "coview": 0.5, "category": 2.0, "recency": 0.5},
    # Leave products the visitor already viewed/bought out of "recommended for you".
    "EXCLUDE_SEEN": True,
    # The same event of the same visitor on the same product within this window counts once.
    "DEDUPE_SECONDS": 300,
    "HISTORY_RETENTION_DAYS": 180,
    # Regex of user agents whose views are not recorded ("" to record everything).
    "BOT_USER_AGENTS": r"bot|crawl|spider|slurp|bingpreview|facebookexternalhit",
    # Trending: interactions of the last N days, decayed with HISTORY_HALF_LIFE_DAYS.
    "TRENDING_DAYS": 30,
    # Frequently bought together: cart/purchase events of one shopper within this many hours form
    # one basket; a pair is shown once this many shoppers bought both; events of the last N days.
    "BOUGHT_TOGETHER_WINDOW_HOURS": 24,
    "BOUGHT_TOGETHER_MIN_SUPPORT": 2,
    "BOUGHT_TOGETHER_DAYS": 90,
    # "Not interested": products at least this alike (image cosine) to a dismissed one move to the
    # end of that visitor's shelves.
    "NOT_INTERESTED_SIMILARITY": 0.9,
    # Shelves rendered by the template tags offer a "Not interested" button on each item.
    "SHOPPER_CONTROLS": True,
    # --- measured shelves (docs/DESIGN.md, "Measured shelves") ----------------------------------
    # Record an impression per rendered shelf, sign its links and record clicks through them,
    # attribute carts/purchases; False: shelves render plain links and nothing is recorded.
    "TRACKING": True,
    # A cart/purchase of a product the same visitor clicked on a shelf this many seconds before
    # (or less) counts for that shelf (last click wins).
    "ATTRIBUTION_WINDOW": 24 * 3600,
    # "Seen" beacons accepted per visitor (or client address) and period, as "60/min".
    "TRACKING_BEACON_RATE": "60/min",
    # A/B tests of shelf settings: {"name": {"shelves": [...], "control": "control",
    # "variants": {"control": {"traffic": 50, "settings": {}}, "b": {"traffic": 50, "settings":
    # {"SIMILAR_WEIGHTS": {...}}}}, "active": True}}; see services/experiments.py.
    "EXPERIMENTS": {},
    # --- host hooks ----------------------------------------------------------------------------
    # Dotted path to ``callable(product, request) -> dict`` giving name/url/image_url of a
    # product for API results; None: str(product), get_absolute_url(), the primary image.
    "PRODUCT_SERIALIZER_HOOK": None,
    # Search by photo: keep uploaded photos (False: embedded in memory and discarded).
    "SEARCH_STORE_UPLOADS": False,
    "SEARCH_THROTTLE_RATE": "10/min",
    # --- catalogue health (admin page, ``imgrec_health``) ----------------------------------------
    # Images whose shorter side is below this many pixels are listed as tiny.
    "HEALTH_MIN_IMAGE_SIDE": 100,
    # Images whose background covers at least this share of the picture are listed as blank.
    "HEALTH_BLANK_SHARE": 0.97,
    # One byte-identical file on at least this many products is listed as a placeholder.
    "HEALTH_PLACEHOLDER_MIN_PRODUCTS": 3,
    # At most this many image files are opened per report (most recently indexed first).
    "HEALTH_MAX_FILES": 5000,
    # Cache alias the search throttle counts in; use a shared cache (Redis...) with several web
    # processes, or each process gets its own budget (check imgrec_app.W030).
    "THROTTLE_CACHE": "default",
    # Search photos whose decoded size (JPEG: at draft scale) is over this are refused before
    # decoding; at most SEARCH_CONCURRENCY searches decode/embed at once per process, others wait
    # up to SEARCH_QUEUE_SECONDS and then get a 503.
    "SEARCH_MAX_DECODE_PIXELS": 16_000_000,
    "SEARCH_CONCURRENCY": 2,
    "SEARCH_QUEUE_SECONDS": 10,
    # Where a search photo is embedded: "auto" (here when torch is importable, else on a worker),
    # "local", "worker" (a short task on SEARCH_QUEUE, answered within SEARCH_WORKER_TIMEOUT
    # seconds, else 503) or "off" (503).  See services/photo_search.py.
    "SEARCH_EMBED": "auto",
    # Queue of the search task; None: QUEUES["embed"] (every model worker consumes it).
    "SEARCH_QUEUE": None,
    "SEARCH_WORKER_TIMEOUT": 10.0,
    # --- uploads -------------------------------------------------------------------------------
    "ALLOWED_FORMATS": ["JPEG", "PNG", "WEBP", "GIF"],
    "MAX_UPLOAD_SIZE": 20 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": 40_000_000,
    # Where the app's own ProductImage files go (a path inside MEDIA_ROOT / the storage).
    "UPLOAD_TO": "imgrec/products/",
}

# Keys read from an environment variable when the IMGREC dict does not set them, so that one
# settings file serves GPU and CPU workers (``IMGREC_DEVICE=cuda celery -A proj worker ...``).
ENV_FALLBACKS = {"DEVICE": "IMGREC_DEVICE"}

# Keys whose values are dotted import paths.
IMPORT_STRINGS = {"RECOMMENDABLE_PRODUCTS", "VISIBLE_PRODUCTS", "PRODUCT_CATEGORY_FILTER"}


class ImgrecSettings:
    """Lazy accessor for the ``IMGREC`` settings dict; values are read on every access."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, SETTING_NAME, {})
        return value if isinstance(value, dict) else {}

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr == "defaults":
            # Not a setting; also stops copy/pickle (which probe ``__setstate__`` on an instance
            # without ``defaults``) from recursing through ``self.defaults``.
            raise AttributeError(attr)
        value = self.raw(attr)
        if attr in IMPORT_STRINGS and isinstance(value, str):
            value = import_from_string(value, attr)
        return value

    def raw(self, attr: str) -> Any:
        """The setting as written (dotted paths not imported)."""
        if attr not in self.defaults:
            raise AttributeError(f"Invalid imgrec setting: {attr!r}")
        overrides = _overrides.get()
        if overrides and attr in overrides:
            return overrides[attr]
        user = self.user_settings
        if attr not in user and attr in ENV_FALLBACKS and os.environ.get(ENV_FALLBACKS[attr]):
            return os.environ[ENV_FALLBACKS[attr]]
        return user.get(attr, self.defaults[attr])


# Settings overridden for the code running in this context only (an experiment's variant for one
# visitor's shelf): a ContextVar, so threads and async tasks never see each other's overrides.
_overrides: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("imgrec_overrides", default=None)


@contextlib.contextmanager
def override(values: Mapping[str, Any] | None) -> Iterator[None]:
    """Read ``values`` instead of the ``IMGREC`` keys they name, in this context only.

    Nested overrides merge (inner wins); leaving the block restores what was there.
    """
    if not values:
        yield
        return
    token = _overrides.set({**(_overrides.get() or {}), **values})
    try:
        yield
    finally:
        _overrides.reset(token)


def active_overrides() -> dict[str, Any]:
    """The context's overrides (empty outside :func:`override`), e.g. for a cache key."""
    return dict(_overrides.get() or {})


def import_from_string(value: str, setting_name: str) -> Callable[..., Any]:
    """Import a dotted path, naming the setting in the error."""
    try:
        return import_string(value)
    except ImportError as exc:
        raise ImportError(f"Could not import {value!r} for {SETTING_NAME}[{setting_name!r}]: {exc}") from exc


imgrec_settings = ImgrecSettings()
