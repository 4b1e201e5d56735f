"""System checks for the ``IMGREC`` settings (ids ``imgrec_app.E0xx`` / ``W0xx``)."""

from __future__ import annotations

import re
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

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
    return errors


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


def _check_backbone() -> list[CheckMessage]:
    from imgrec_app.ml.registry import get_backbone, list_backbones

    name = imgrec_settings.BACKBONE
    try:
        get_backbone(name)
    except (KeyError, TypeError):  # TypeError: an unhashable value
        return [
            Error(
                f"{SETTING_NAME}['BACKBONE'] = {name!r} is not a registered backbone.",
                hint=f"Registered: {', '.join(list_backbones())}.",
                id="imgrec_app.E003",
            )
        ]
    options = imgrec_settings.BACKBONE_OPTIONS
    if not isinstance(options, dict):
        return [
            Error(
                f"{SETTING_NAME}['BACKBONE_OPTIONS'] must be a dict.",
                hint="e.g. {'weights_path': '/models/r50.pth', 'weights_version': 'v2'}.",
                id="imgrec_app.E003",
            )
        ]
    try:
        get_backbone(name).with_options(options)
    except ValueError as exc:
        return [
            Error(
                f"{SETTING_NAME}['BACKBONE_OPTIONS'] is invalid: {exc}",
                hint="'preprocess' is one of 'crop', 'pad', 'product'; 'pooling' e.g. 'avg', 'gem', 'gem+flip'.",
                id="imgrec_app.E003",
            )
        ]
    path = options.get("weights_path")
    if path:
        import os

        if not os.path.isfile(path):
            return [
                Error(
                    f"The weights file {path!r} named in {SETTING_NAME}['BACKBONE_OPTIONS'] does not exist.",
                    hint="imgrec never downloads weights: copy the file there or fix the path.",
                    id="imgrec_app.E004",
                )
            ]
    return []


def _check_callables() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key in ("RECOMMENDABLE_PRODUCTS",):
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
            model._meta.get_field(entry["field"])
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


# (key, smallest allowed value, None allowed)
_INTEGER_SETTINGS = (
    ("BATCH_SIZE", 1, False),
    ("TASK_BATCH_SIZE", 1, False),
    ("MAX_ATTEMPTS", 1, False),
    ("STUCK_AFTER", 1, False),
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
    for key, minimum, optional in _INTEGER_SETTINGS:
        value = getattr(imgrec_settings, key)
        if optional and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            kind = "a positive integer" if minimum else "an integer >= 0"
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be {kind}{' or None' if optional else ''}, not {value!r}.",
                    hint=f"Default: {DEFAULTS[key]!r}.",
                    id="imgrec_app.E008",
                )
            )
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
                "(the shop demo reads it from IMGREC_DEVICE).",
                id="imgrec_app.E012",
            )
        )
    return errors


@register(Tags.database)
def check_database(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With ``check --database default``: PostgreSQL, and stored vectors fit the backbone."""
    from django.db import connection

    if not databases or "default" not in databases:
        return []
    if connection.vendor != "postgresql":
        return [
            Error(
                "imgrec needs PostgreSQL with the pgvector extension.",
                hint="Point DATABASES['default'] at PostgreSQL (pgvector 0.7 or newer).",
                id="imgrec_app.E020",
            )
        ]
    errors: list[CheckMessage] = []
    try:
        from imgrec_app.services.models import configured_model

        ref = configured_model()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT vector_dims(vector) FROM imgrec_app_productvector WHERE model_id = %s LIMIT 5",
                [ref.model_id],
            )
            dims = [row[0] for row in cursor.fetchall()]
    except Exception:
        return []  # not migrated yet: migrate reports that
    if any(d != ref.dim for d in dims):
        errors.append(
            Error(
                f"Stored vectors of {ref.model_id} have {dims} dimensions but the backbone makes {ref.dim}.",
                hint="The backbone changed without a new model id: give BACKBONE_OPTIONS a new "
                "'weights_version' and re-index, or restore the previous backbone.",
                id="imgrec_app.E021",
            )
        )
    return errors
