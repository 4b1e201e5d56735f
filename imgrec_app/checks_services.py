"""System checks of the services imgrec runs on: the Celery broker, the database (PostgreSQL,
pgvector >= 0.8, stored vectors that fit the backbone) and the search throttle's cache.

The checks of the ``IMGREC`` settings themselves are in :mod:`imgrec_app.checks`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from imgrec_app.conf import SETTING_NAME, imgrec_settings


@register(Tags.compatibility)
def check_broker(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W031: the host configured no Celery broker, or it does not answer (1 s, refused at once)."""
    from imgrec_app.services import broker

    state = broker.broker_state(timeout=1.0)
    if state == broker.NOT_CONFIGURED:
        return [
            Warning(
                "No Celery broker is configured: imgrec cannot queue images, re-index runs or searches "
                "by photo on a worker.",
                hint="Set CELERY_BROKER_URL (e.g. 'redis://127.0.0.1:6379/0') and load your Celery app "
                "in proj/__init__.py, as Celery's Django guide says.",
                id="imgrec_app.W031",
            )
        ]
    if state == broker.UNREACHABLE:
        return [
            Warning(
                "The Celery broker does not answer: uploads stay pending until it does (the sweeper queues them then).",
                hint="Start it, or fix CELERY_BROKER_URL.",
                id="imgrec_app.W031",
            )
        ]
    return []


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
                hint="Point DATABASES['default'] at PostgreSQL (pgvector 0.8 or newer).",
                id="imgrec_app.E020",
            )
        ]
    errors: list[CheckMessage] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        errors += check_pgvector_version(row[0] if row else None)
    except Exception:
        pass  # no database to ask: the rest reports it
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


# Cache backends whose entries live in one process only (a throttle counted there is per process).
_PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@register(Tags.caches)
def check_throttle_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W030: search is throttled in a per-process cache, so each web process has its own budget."""
    if imgrec_settings.SEARCH_THROTTLE_RATE is None:
        return []
    alias = imgrec_settings.THROTTLE_CACHE
    caches_setting = getattr(settings, "CACHES", {}) or {}
    if alias not in caches_setting:
        return [
            Error(
                f"{SETTING_NAME}['THROTTLE_CACHE'] = {alias!r} is not a cache alias of CACHES.",
                hint=f"Use one of: {', '.join(caches_setting) or 'default'}.",
                id="imgrec_app.E030",
            )
        ]
    backend = caches_setting[alias].get("BACKEND", "")
    if backend in _PER_PROCESS_CACHES:
        return [
            Warning(
                f"imgrec's search throttle counts in the {alias!r} cache ({backend.rsplit('.', 1)[-1]}), "
                "which every web process keeps for itself: with N processes, N times "
                "SEARCH_THROTTLE_RATE searches run the model.",
                hint="Point CACHES (or IMGREC['THROTTLE_CACHE']) at a shared cache, e.g. "
                "django.core.cache.backends.redis.RedisCache on the shop's Redis.",
                id="imgrec_app.W030",
            )
        ]
    return []


PGVECTOR_MIN = (0, 8)


def check_pgvector_version(version: str | None) -> list[CheckMessage]:
    """E022: pgvector older than 0.8 has no iterative index scans (``hnsw.iterative_scan``), so
    filtered shelves come back short.  None (extension not created yet): ``migrate`` creates it."""
    if version is None:
        return []
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        parts = (0, 0)
    if parts >= PGVECTOR_MIN:
        return []
    return [
        Error(
            f"pgvector {version} is installed; imgrec needs pgvector 0.8 or newer.",
            hint="Filtered shelves rely on hnsw.iterative_scan (pgvector 0.8): upgrade the "
            "extension (ALTER EXTENSION vector UPDATE after installing 0.8).",
            id="imgrec_app.E022",
        )
    ]
