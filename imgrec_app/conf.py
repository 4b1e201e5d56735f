"""imgrec's settings: one ``IMGREC`` dict, read lazily so ``override_settings`` just works.

Everything in imgrec reads configuration through :data:`imgrec_settings`; nothing else looks at
``django.conf.settings`` for imgrec keys.  The shape follows DRF's ``api_settings``: a ``DEFAULTS``
table, user values merged over it on each access, dotted paths imported on demand with an error
that names the setting.
"""

from __future__ import annotations

from collections.abc import Callable
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
    # How to read a product's category: a field/attribute name (``"category"``, ``"category_id"``)
    # or a dotted path to ``callable(product) -> str | None``.  None: no categories.
    "PRODUCT_CATEGORY": None,
    # Extra image sources: existing host models whose image field should be indexed, e.g.
    # ``{"model": "catalogue.ProductImage", "field": "original", "product": "product"}``.
    "IMAGE_SOURCES": [],
    # --- the model -----------------------------------------------------------------------------
    # Registered backbone name (see ``imgrec_app.ml.registry.list_backbones()``).
    "BACKBONE": "efficientnet_lite0",
    # Keyword options passed to the backbone factory, e.g. ``{"weights_path": "/models/r50.pth"}``.
    "BACKBONE_OPTIONS": {},
    # "auto": serve a new backbone's vectors as soon as its backfill is complete;
    # "manual": keep serving the old ones until ``imgrec_switch_model`` is run.
    "MODEL_SWITCH": "auto",
    # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    "DEVICE": "auto",
    "BATCH_SIZE": 32,
    # CPU threads for torch in a worker; None: torch's default (one per core).
    "TORCH_THREADS": None,
    # Mixed precision on CUDA: "fp16", "bf16" or None.
    "CUDA_AMP": "fp16",
    # Threads that decode and preprocess the next batch while the model runs.
    "DECODE_WORKERS": 2,
    # How many generic (ImageNet) labels to keep per image.
    "TOP_LABELS": 5,
    # Text model for product names/descriptions ("all-MiniLM-L6-v2", shipped on PyPI), or None.
    "TEXT_MODEL": None,
    # Product attributes (or methods) whose text is embedded.
    "TEXT_FIELDS": ["name", "description"],
    # --- Celery ----------------------------------------------------------------------------------
    # Queue names: "embed" does model work (route it to GPU/CPU workers), "light" does bookkeeping.
    "QUEUES": {"embed": "imgrec.embed", "light": "imgrec.light"},
    # Images claimed per task; a task claims up to this many waiting images in one go.
    "TASK_BATCH_SIZE": 64,
    # Transient errors (database, broker) are retried this many times with exponential backoff.
    "TASK_MAX_RETRIES": 5,
    # An image whose task was lost this many times (e.g. it kills the worker) is marked failed.
    "MAX_ATTEMPTS": 3,
    # Images pending/processing longer than this (seconds) are re-enqueued by the sweeper.
    "STUCK_AFTER": 600,
    # --- shelves ----------------------------------------------------------------------------------
    # Weights of the hybrid similarity: image cosine, text cosine, "viewed together" strength.
    # Chosen by measurement with ``manage.py imgrec_evaluate`` (see docs/EVALUATION.md).
    "SIMILAR_WEIGHTS": {"image": 1.0, "text": 1.0, "coview": 0.3},
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
    # Static path of the stylesheet the shelf tags link once per page (a responsive row of cards);
    # None leaves it out (style the ``imgrec-shelf*`` classes yourself).
    "SHELF_STYLESHEET": "imgrec_app/shelf.css",
    # pgvector: hnsw.ef_search floor and hnsw.max_scan_tuples for filtered (iterative) scans.
    "HNSW_EF_SEARCH": 100,
    "HNSW_MAX_SCAN_TUPLES": 50_000,
    # --- history -------------------------------------------------------------------------------
    # How many recent interactions build a visitor's interest profile.
    "HISTORY_LENGTH": 50,
    # Recency half-life of an interaction's weight, in days.
    "HISTORY_HALF_LIFE_DAYS": 7.0,
    # Up to this many interest clusters per visitor (several interests are not averaged away).
    "MAX_INTERESTS": 3,
    # Leave products the visitor already viewed/bought out of "recommended for you".
    "EXCLUDE_SEEN": True,
    # The same event of the same visitor on the same product within this window counts once.
    "DEDUPE_SECONDS": 300,
    "HISTORY_RETENTION_DAYS": 180,
    # Regex of user agents whose views are not recorded ("" to record everything).
    "BOT_USER_AGENTS": r"bot|crawl|spider|slurp|bingpreview|facebookexternalhit",
    # Trending: interactions of the last N days, decayed with HISTORY_HALF_LIFE_DAYS.
    "TRENDING_DAYS": 30,
    # --- host hooks ----------------------------------------------------------------------------
    # Dotted path to ``callable(product, request) -> dict`` giving name/url/image_url of a
    # product for API results; None: str(product), get_absolute_url(), the primary image.
    "PRODUCT_SERIALIZER_HOOK": None,
    # Search by photo: keep uploaded photos (False: embedded in memory and discarded).
    "SEARCH_STORE_UPLOADS": False,
    "SEARCH_THROTTLE_RATE": "10/min",
    # --- uploads -------------------------------------------------------------------------------
    "ALLOWED_FORMATS": ["JPEG", "PNG", "WEBP", "GIF"],
    "MAX_UPLOAD_SIZE": 20 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": 40_000_000,
    # Where the app's own ProductImage files go (a path inside MEDIA_ROOT / the storage).
    "UPLOAD_TO": "imgrec/products/",
}

# Keys whose values are dotted import paths.
IMPORT_STRINGS = {"RECOMMENDABLE_PRODUCTS"}


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
        return self.user_settings.get(attr, self.defaults[attr])


def import_from_string(value: str, setting_name: str) -> Callable[..., Any]:
    """Import a dotted path, naming the setting in the error."""
    try:
        return import_string(value)
    except ImportError as exc:
        raise ImportError(f"Could not import {value!r} for {SETTING_NAME}[{setting_name!r}]: {exc}") from exc


imgrec_settings = ImgrecSettings()
