"""System checks for the ``IMGREC`` settings (ids ``imgrec_app.E0xx`` / ``W0xx``)."""

from __future__ import annotations

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
    except (LookupError, ValueError) as exc:
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
    except KeyError:
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
                id="imgrec_app.E003",
            )
        ]
    path = options.get("weights_path")
    if path:
        import os

        if not os.path.isfile(path):
            return [
                Error(
                    f"The weights file {path!r} named in {SETTING_NAME}['BACKBONE_OPTIONS'] "
                    "does not exist.",
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
            errors.append(
                Error(str(exc), hint="Give a dotted path to a callable.", id="imgrec_app.E005")
            )
    category = imgrec_settings.PRODUCT_CATEGORY
    if category and "." in category:
        from django.utils.module_loading import import_string

        try:
            import_string(category)
        except ImportError as exc:
            errors.append(
                Error(
                    f"{SETTING_NAME}['PRODUCT_CATEGORY'] = {category!r} cannot be imported: {exc}",
                    hint="Use a field name of the product model or a dotted path to a callable.",
                    id="imgrec_app.E005",
                )
            )
    return errors


def _check_sources() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    sources = imgrec_settings.IMAGE_SOURCES
    if not isinstance(sources, (list, tuple)):
        return [Error(f"{SETTING_NAME}['IMAGE_SOURCES'] must be a list.", id="imgrec_app.E006")]
    for entry in sources:
        if not isinstance(entry, dict) or "model" not in entry or "field" not in entry:
            errors.append(
                Error(
                    f"Bad {SETTING_NAME}['IMAGE_SOURCES'] entry {entry!r}.",
                    hint="Each entry is {'model': 'app.Model', 'field': 'image_field', "
                    "'product': 'fk_to_product'}.",
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


def _check_values() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    queues = imgrec_settings.QUEUES
    if not isinstance(queues, dict) or not {"embed", "light"} <= set(queues):
        errors.append(
            Error(
                f"{SETTING_NAME}['QUEUES'] must map 'embed' and 'light' to queue names.",
                id="imgrec_app.E007",
            )
        )
    for key in ("BATCH_SIZE", "TASK_BATCH_SIZE", "MAX_ATTEMPTS", "STUCK_AFTER",
                "MAX_UPLOAD_SIZE", "MAX_IMAGE_PIXELS", "DECODE_WORKERS"):
        value = getattr(imgrec_settings, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be a positive integer, not {value!r}.",
                    id="imgrec_app.E008",
                )
            )
    unknown = [f for f in imgrec_settings.ALLOWED_FORMATS if f.upper() not in FORMAT_EXTENSIONS]
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
            Error(f"{SETTING_NAME}['MODEL_SWITCH'] must be 'auto' or 'manual'.", id="imgrec_app.E010")
        )
    if imgrec_settings.CUDA_AMP not in (None, "fp16", "bf16"):
        errors.append(
            Error(f"{SETTING_NAME}['CUDA_AMP'] must be None, 'fp16' or 'bf16'.", id="imgrec_app.E011")
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
                "SELECT DISTINCT vector_dims(vector) FROM imgrec_app_productvector "
                "WHERE model_id = %s LIMIT 5",
                [ref.model_id],
            )
            dims = [row[0] for row in cursor.fetchall()]
    except Exception:
        return []  # not migrated yet: migrate reports that
    if any(d != ref.dim for d in dims):
        errors.append(
            Error(
                f"Stored vectors of {ref.model_id} have {dims} dimensions but the backbone "
                f"makes {ref.dim}.",
                hint="The backbone changed without a new model id: give BACKBONE_OPTIONS a new "
                "'weights_version' and re-index, or restore the previous backbone.",
                id="imgrec_app.E021",
            )
        )
    return errors
