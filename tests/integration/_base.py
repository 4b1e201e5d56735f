"""What the host-shop suites in tests/integration share: the test-only parts of their settings
and of their conftest (each shop's own settings — apps, imgrec's IMGREC dict, templates — stay
in its settings.py, written the way that shop's documentation says).

Each suite runs in a pytest session of its own (``--ds=tests.integration.<shop>.settings``): the
main suite's ``tests/conftest.py`` provides the worker fixtures, the shop's conftest swaps in its
own Celery app with :func:`celery_app_fixture` and builds its catalogue with
:func:`indexed_shop_fixture`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / "shop_demo" / "catalog" / "data"  # real catalogue photos (public domain)
# The main suite's data folder: its embedded PostgreSQL serves every suite, each with a test
# database of its own, so suites can run on one server (at the same time, too).
VAR_DIR = Path(os.environ.setdefault("IMGREC_VAR_DIR", str(REPO / "var" / "test")))


# --- settings -------------------------------------------------------------------------------------


def database(name: str) -> dict[str, Any]:
    """``DATABASES["default"]`` on the embedded PostgreSQL + pgvector, test database ``name``."""
    from imgrec_app.contrib.embedded_db import database_config

    config = database_config(VAR_DIR / "pgdata")
    config["TEST"] = {"NAME": name}
    return config


# Settings no shop would write but every test run needs (each settings.py assigns them by name):
# a per-process cache, throw-away media, fast password hashing, the test Redis database as broker.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
MEDIA_ROOT = tempfile.mkdtemp(prefix="imgrec-integration-media-")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = os.environ.get("IMGREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2


# --- conftest -------------------------------------------------------------------------------------


def collect_only_under(settings_module: str) -> list[str]:
    """A conftest's ``collect_ignore_glob``: pytest-django takes one settings module per session,
    so a shop's tests are collected only in the session that runs with its settings."""
    return [] if os.environ.get("DJANGO_SETTINGS_MODULE") == settings_module else ["test_*.py"]


def celery_app_fixture(load_app: Callable[[], Any]) -> Any:
    """A session fixture ``celery_app_real`` (replacing tests/conftest.py's demo one): the shop's
    Celery app, failing the session at once when its broker does not answer."""
    import pytest

    @pytest.fixture(scope="session")
    def celery_app_real() -> Any:
        app = load_app()
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=2, timeout=2)
        except Exception as exc:  # any reason: there is no usable broker
            pytest.fail(f"Redis is not reachable at {app.conf.broker_url}: {exc}. Run `make redis`.")
        return app

    return celery_app_real


def indexed_shop_fixture(build: Callable[[], Any]) -> Any:
    """A module fixture ``indexed_shop``: ``build()`` (the catalogue, and its backfill with the
    real worker) committed once per module, the database emptied after the module (or at once
    when ``build`` fails); tests read it inside their own rolled-back transactions."""
    import pytest

    @pytest.fixture(scope="module")
    def indexed_shop(django_db_setup: Any, django_db_blocker: Any, _session_worker: Any) -> Iterator[Any]:
        with django_db_blocker.unblock():
            flush()
            try:
                shop = build()
            except BaseException:
                flush()
                raise
        yield shop
        with django_db_blocker.unblock():
            flush()

    return indexed_shop


def flush() -> None:
    """Empty the test database, as a transactional test does after itself."""
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)
    ContentType.objects.clear_cache()
