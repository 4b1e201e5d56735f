"""System checks for the ``IMGREC`` settings (ids ``imgrec_app.E0xx`` / ``W0xx``)."""

from __future__ import annotations

import re
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import models

from imgrec_app.checks_model import check_backbone as _check_backbone
from imgrec_app.checks_model import check_precision_decoder as _check_precision_decoder
from imgrec_app.conf import DEFAULTS, SETTING_NAME, imgrec_settings
from imgrec_app.ml.preprocess import FORMAT_EXTENSIONS


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    user = getattr(settings, SETTING_NAME, {})
    if not isinstance(user, dict):
        return [
            Error(
                f"{SETTING_NAME} must be a dict.",
                hint=f"Set {SETTING_NAME} = {{'PRODUCT_MODEL': 'shop.Product'}} in settings.",
                id="imgrec_app.E001",
            )
        ]
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(
            Warning(
                f"Unknown {SETTING_NAME} key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="imgrec_app.W001",
            )
        )
    errors += _check_product_model()
    errors += _check_backbone()
    errors += _check_callables()
    errors += _check_sources()
    errors += _check_values()
    errors += _check_search()
    errors += _check_serving()
    errors += _check_foryou_weights()
    errors += _check_tuning()
    errors += _check_precision_decoder()
    return errors


def _check_foryou_weights() -> list[CheckMessage]:
    """``FORYOU_WEIGHTS``: a dict of known keys with numbers >= 0, at least one source on."""
    value = imgrec_settings.FORYOU_WEIGHTS
    known = set(DEFAULTS["FORYOU_WEIGHTS"])
    hint = f"Default: {DEFAULTS['FORYOU_WEIGHTS']!r}; see docs/EVALUATION.md (--foryou-grid)."
    if not isinstance(value, dict):
        return [Error(f"{SETTING_NAME}['FORYOU_WEIGHTS'] must be a dict.", hint=hint, id="imgrec_app.E045")]
    bad = [k for k, v in value.items() if k not in known or _out_of_range(v, 0, integer=False)]
    if bad:
        return [
            Error(
                f"{SETTING_NAME}['FORYOU_WEIGHTS'] has unknown keys or weights that are not numbers >= 0: {bad}.",
                hint=hint,
                id="imgrec_app.E045",
            )
        ]
    merged = {**DEFAULTS["FORYOU_WEIGHTS"], **value}
    if not any(merged[k] for k in ("interest", "coview", "category")):
        return [
            Error(
                f"{SETTING_NAME}['FORYOU_WEIGHTS'] turns every source off: the shelf would only show fallbacks.",
                hint=hint,
                id="imgrec_app.E045",
            )
        ]
    return []


def _check_product_model() -> list[CheckMessage]:
    label = imgrec_settings.PRODUCT_MODEL
    if not label:
        return [
            Error(
                f"{SETTING_NAME}['PRODUCT_MODEL'] is not set.",
                hint="Name your shop's product model, e.g. 'catalog.Product'.",
                id="imgrec_app.E002",
            )
        ]
    try:
        apps.get_model(label)
    except (LookupError, ValueError, AttributeError) as exc:  # AttributeError: not a string
        return [
            Error(
                f"{SETTING_NAME}['PRODUCT_MODEL'] = {label!r} is not an installed model ({exc}).",
                hint="Use 'app_label.ModelName' of an installed app.",
                id="imgrec_app.E002",
            )
        ]
    return []


def _check_callables() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key in ("RECOMMENDABLE_PRODUCTS", "VISIBLE_PRODUCTS", "PRODUCT_CATEGORY_FILTER"):
        value = imgrec_settings.raw(key)
        if value is None:
            continue
        try:
            getattr(imgrec_settings, key)
        except ImportError as exc:
            errors.append(Error(str(exc), hint="Give a dotted path to a callable.", id="imgrec_app.E005"))
    errors += _check_category()
    return errors


def _check_category() -> list[CheckMessage]:
    category = imgrec_settings.PRODUCT_CATEGORY
    if category is None or category == "":
        return []
    hint = "Use a field name of the product model or a dotted path to a callable."
    if not isinstance(category, str):
        return [
            Error(
                f"{SETTING_NAME}['PRODUCT_CATEGORY'] must be a string, not {category!r}.",
                hint=hint,
                id="imgrec_app.E005",
            )
        ]
    if "." in category:
        from django.utils.module_loading import import_string

        try:
            import_string(category)
        except ImportError as exc:
            return [
                Error(
                    f"{SETTING_NAME}['PRODUCT_CATEGORY'] = {category!r} cannot be imported: {exc}",
                    hint=hint,
                    id="imgrec_app.E005",
                )
            ]
        return []
    # A plain name is read with getattr(product, name, None): a typo would silently mean "no
    # categories", so it must name a field or a class attribute (property) of the product model.
    try:
        model = apps.get_model(imgrec_settings.PRODUCT_MODEL)
    except (LookupError, ValueError, AttributeError, TypeError):
        return []  # E002 reports it
    try:
        model._meta.get_field(category)
    except Exception:
        if not hasattr(model, category):
            return [
                Error(
                    f"{SETTING_NAME}['PRODUCT_CATEGORY'] = {category!r} is neither a field nor "
                    f"an attribute of {model._meta.label}.",
                    hint=hint,
                    id="imgrec_app.E005",
                )
            ]
    return []


def _check_sources() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    sources = imgrec_settings.IMAGE_SOURCES
    if not isinstance(sources, (list, tuple)):
        return [
            Error(
                f"{SETTING_NAME}['IMAGE_SOURCES'] must be a list.",
                hint="A list of {'model': 'app.Model', 'field': 'image_field', 'product': ...}.",
                id="imgrec_app.E006",
            )
        ]
    for entry in sources:
        if not isinstance(entry, dict) or "model" not in entry or "field" not in entry:
            errors.append(
                Error(
                    f"Bad {SETTING_NAME}['IMAGE_SOURCES'] entry {entry!r}.",
                    hint="Each entry is {'model': 'app.Model', 'field': 'image_field', 'product': 'fk_to_product'}.",
                    id="imgrec_app.E006",
                )
            )
            continue
        try:
            model = apps.get_model(entry["model"])
            if not isinstance(model._meta.get_field(entry["field"]), models.FileField):
                raise TypeError(f"{entry['field']!r} is not a FileField or ImageField")
            product = entry.get("product", "product")
            if product not in ("", "self"):
                model._meta.get_field(product)
        except Exception as exc:
            errors.append(
                Error(
                    f"{SETTING_NAME}['IMAGE_SOURCES'] entry {entry!r} is not valid: {exc}",
                    hint="Name an installed model, its file field and its product field.",
                    id="imgrec_app.E006",
                )
            )
    return errors


def _out_of_range(value: Any, minimum: float, maximum: float | None = None, *, integer: bool = True) -> bool:
    """True unless ``value`` is an int (any real number with ``integer=False``; never a bool)
    in ``[minimum, maximum]``: the one range test behind E008, E040, E041, E045 and E046."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return True
    return not minimum <= value or (maximum is not None and not value <= maximum)  # NaN is out of range


def _range_error(key: str, value: Any, kind: str, check_id: str, *, hint: str | None = None) -> Error:
    """``IMGREC['KEY'] must be <kind>, not <value>.`` with the default as the hint unless given."""
    return Error(
        f"{SETTING_NAME}[{key!r}] must be {kind}, not {value!r}.",
        hint=hint if hint is not None else f"Default: {DEFAULTS[key]!r}.",
        id=check_id,
    )


# (key, smallest allowed value, None allowed)
_INTEGER_SETTINGS = (
    ("BATCH_SIZE", 1, False),
    ("TASK_BATCH_SIZE", 1, False),
    ("MAX_ATTEMPTS", 1, False),
    ("STUCK_AFTER", 1, False),
    ("REPUBLISH_AFTER", 0, False),
    ("MAX_UPLOAD_SIZE", 1, False),
    ("MAX_IMAGE_PIXELS", 1, False),
    ("DECODE_WORKERS", 1, False),
    ("TOP_LABELS", 0, False),
    ("TASK_MAX_RETRIES", 0, False),
    ("TORCH_THREADS", 1, True),
    ("COVIEW_MIN_VISITORS", 1, False),
    ("CANDIDATE_FACTOR", 1, False),
    ("CATEGORY_CAP", 1, False),
    ("MAX_LIMIT", 1, False),
    ("HNSW_EF_SEARCH", 1, False),
    ("HNSW_MAX_SCAN_TUPLES", 1, False),
    ("HISTORY_LENGTH", 1, False),
    ("MAX_INTERESTS", 1, False),
    ("DEDUPE_SECONDS", 0, False),
    ("HISTORY_RETENTION_DAYS", 1, False),
    ("TRENDING_DAYS", 1, False),
    ("SEARCH_MAX_DECODE_PIXELS", 1, False),
    ("SEARCH_CONCURRENCY", 1, False),
    ("SEARCH_QUEUE_SECONDS", 0, False),
)
# torch.device strings imgrec supports, checked without importing torch.
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_values() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    queues = imgrec_settings.QUEUES
    if not isinstance(queues, dict) or not {"embed", "light"} <= set(queues):
        errors.append(
            Error(
                f"{SETTING_NAME}['QUEUES'] must map 'embed' and 'light' to queue names.",
                hint="e.g. {'embed': 'imgrec.embed', 'light': 'imgrec.light'}.",
                id="imgrec_app.E007",
            )
        )
    elif any(k in queues and not (isinstance(queues[k], str) and queues[k].strip()) for k in ("text", "tune")):
        errors.append(
            Error(
                f"{SETTING_NAME}['QUEUES']['text'] and ['tune'], when given, must be queue names.",
                hint="Leave the key out to use QUEUES['embed'] (text) or QUEUES['light'] (tune).",
                id="imgrec_app.E055",
            )
        )
    for key, minimum, optional in _INTEGER_SETTINGS:
        value = getattr(imgrec_settings, key)
        if (value is not None or not optional) and _out_of_range(value, minimum):
            kind = "a positive integer" if minimum else "an integer >= 0"
            errors.append(_range_error(key, value, kind + (" or None" if optional else ""), "imgrec_app.E008"))
    formats = imgrec_settings.ALLOWED_FORMATS
    if isinstance(formats, str) or not isinstance(formats, (list, tuple)):
        errors.append(
            Error(
                f"{SETTING_NAME}['ALLOWED_FORMATS'] must be a list, not {formats!r}.",
                hint=f"e.g. {DEFAULTS['ALLOWED_FORMATS']!r}.",
                id="imgrec_app.E009",
            )
        )
        formats = []
    unknown = [f for f in formats if not isinstance(f, str) or f.upper() not in FORMAT_EXTENSIONS]
    if unknown:
        errors.append(
            Error(
                f"{SETTING_NAME}['ALLOWED_FORMATS'] has unknown formats: {unknown}.",
                hint=f"Choose among {', '.join(FORMAT_EXTENSIONS)}.",
                id="imgrec_app.E009",
            )
        )
    if imgrec_settings.MODEL_SWITCH not in ("auto", "manual"):
        errors.append(
            Error(
                f"{SETTING_NAME}['MODEL_SWITCH'] must be 'auto' or 'manual'.",
                hint="'auto' serves a new backbone once its backfill completes; 'manual' waits "
                "for `manage.py imgrec_switch_model`.",
                id="imgrec_app.E010",
            )
        )
    if imgrec_settings.CUDA_AMP not in (None, "fp16", "bf16"):
        errors.append(
            Error(
                f"{SETTING_NAME}['CUDA_AMP'] must be None, 'fp16' or 'bf16'.",
                hint="None runs the model in fp32 on CUDA.",
                id="imgrec_app.E011",
            )
        )
    device = imgrec_settings.DEVICE
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        errors.append(
            Error(
                f"{SETTING_NAME}['DEVICE'] = {device!r} is not a device imgrec can use.",
                hint="Use 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N' or 'mps' "
                "(set it in IMGREC or, per worker, in the IMGREC_DEVICE environment variable).",
                id="imgrec_app.E012",
            )
        )
    return errors


def _check_search() -> list[CheckMessage]:
    from imgrec_app.services.photo_search import MODES

    errors: list[CheckMessage] = []
    if imgrec_settings.SEARCH_EMBED not in MODES:
        errors.append(
            Error(
                f"{SETTING_NAME}['SEARCH_EMBED'] = {imgrec_settings.SEARCH_EMBED!r} is not one of {', '.join(MODES)}.",
                hint="'auto' embeds search photos here when torch is installed, else on a worker.",
                id="imgrec_app.E040",
            )
        )
    timeout = imgrec_settings.SEARCH_WORKER_TIMEOUT
    if _out_of_range(timeout, 0, 120, integer=False) or timeout == 0:
        errors.append(
            _range_error("SEARCH_WORKER_TIMEOUT", timeout, "a number of seconds in (0, 120]", "imgrec_app.E040")
        )
    queue = imgrec_settings.SEARCH_QUEUE
    if queue is not None and (not isinstance(queue, str) or not queue):
        errors.append(
            Error(
                f"{SETTING_NAME}['SEARCH_QUEUE'] must be a queue name or None, not {queue!r}.",
                hint="None sends search photos to QUEUES['embed'].",
                id="imgrec_app.E040",
            )
        )
    return errors


def _check_tuning() -> list[CheckMessage]:
    """Catalogue-tuning settings (imgrec_tune): E046 thresholds and folds, E047 head options."""
    errors: list[CheckMessage] = []
    for key, minimum in (("TUNING_MIN_CATEGORIES", 2), ("TUNING_MIN_PER_CATEGORY", 2), ("TUNING_FOLDS", 0)):
        value = getattr(imgrec_settings, key)
        if _out_of_range(value, minimum) or value == 1:
            kind = f"an integer >= {minimum}{' (0 or 2+)' if key == 'TUNING_FOLDS' else ''}"
            errors.append(_range_error(key, value, kind, "imgrec_app.E046"))
    try:
        from imgrec_app.ml.head import HeadConfig

        HeadConfig.from_dict(dict(imgrec_settings.TUNING_HEAD or {}))
    except (TypeError, ValueError) as exc:
        errors.append(
            Error(
                f"{SETTING_NAME}['TUNING_HEAD'] is not valid: {exc}.",
                hint="Keys of imgrec_app.ml.head.HeadConfig: dim, hidden, epochs, lr, margin, text_weight, ...",
                id="imgrec_app.E047",
            )
        )
    return errors


def _check_serving() -> list[CheckMessage]:
    """Shelf cache, shelf database and vector storage settings (E041–E044)."""
    errors: list[CheckMessage] = []
    timeout = imgrec_settings.SHELF_CACHE_TIMEOUT
    if _out_of_range(timeout, 1):
        hint = "It bounds how long a new product waits for cached shelves; turn the cache off with SHELF_CACHE = False."
        errors.append(
            _range_error("SHELF_CACHE_TIMEOUT", timeout, "a positive number of seconds", "imgrec_app.E041", hint=hint)
        )
    alias = imgrec_settings.SHELF_CACHE_ALIAS
    if imgrec_settings.SHELF_CACHE and alias not in getattr(settings, "CACHES", {"default": {}}):
        errors.append(
            Error(
                f"{SETTING_NAME}['SHELF_CACHE_ALIAS'] = {alias!r} is not in CACHES.",
                hint="Name a configured cache, or set SHELF_CACHE = False.",
                id="imgrec_app.E042",
            )
        )
    db = imgrec_settings.SHELF_DATABASE
    if db is not None and db not in settings.DATABASES:
        errors.append(
            Error(
                f"{SETTING_NAME}['SHELF_DATABASE'] = {db!r} is not in DATABASES.",
                hint="Name the read replica's alias, or None for the router's read database.",
                id="imgrec_app.E043",
            )
        )
    if imgrec_settings.VECTOR_STORAGE not in ("vector", "halfvec"):
        errors.append(
            Error(
                f"{SETTING_NAME}['VECTOR_STORAGE'] must be 'vector' or 'halfvec'.",
                hint="'halfvec' builds HNSW indexes of half-precision vectors (half the memory).",
                id="imgrec_app.E044",
            )
        )
    return errors
