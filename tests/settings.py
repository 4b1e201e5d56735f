"""Test settings: the demo shop's, with an isolated Redis database, queues and media folder."""

import os
from pathlib import Path

os.environ.setdefault("IMGREC_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))

from shop_demo.settings import *  # noqa: E402,F401,F403
from shop_demo.settings import IMGREC, REDIS_URL  # noqa: E402

CELERY_BROKER_URL = os.environ.get("IMGREC_TEST_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/15")
# One media folder per var dir (not per process), so separate commands see the same files.
MEDIA_ROOT = Path(os.environ["IMGREC_VAR_DIR"]) / "media"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# No A/B test unless a test sets one: the demo's would give half the test visitors other shelves.
IMGREC = {
    **IMGREC,
    "QUEUES": {"embed": "imgrec.test.embed", "light": "imgrec.test.light"},
    "TORCH_THREADS": 2,
    "EXPERIMENTS": {},
}
# The tests keep a per-process cache (tests clear it, and clearing a Redis cache would flush the
# broker's database); tests/test_reliability_web.py runs the throttle on the demo's Redis cache.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SILENCED_SYSTEM_CHECKS = ["imgrec_app.W030"]

# A second alias on the same database, as a read replica would be (shelf reads through
# IMGREC["SHELF_DATABASE"], tests/test_shelf_cache.py).  TEST MIRROR: no second test database.
DATABASES = {**DATABASES, "replica": {**DATABASES["default"], "TEST": {"MIRROR": "default"}}}  # noqa: F405
