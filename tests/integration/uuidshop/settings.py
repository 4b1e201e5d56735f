"""Settings of a ``django-admin startproject`` shop with imgrec added by the README's "Install into
an existing shop" steps only (no REST_FRAMEWORK settings: imgrec's schema must work without).
Nothing here comes from shop_demo."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from imgrec_app.contrib.embedded_db import database_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
VAR_DIR = Path(os.environ.setdefault("IMGREC_VAR_DIR", str(REPO / "var" / "test")))

SECRET_KEY = "uuidshop-integration-test-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tests.integration.uuidshop.shop",
    # README step 2:
    "rest_framework",
    "drf_spectacular",
    "imgrec_app",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "tests.integration.uuidshop.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# README "Database": PostgreSQL with pgvector >= 0.8, here the [embedded] extra's server (the one
# the main suite uses, with a test database of its own).
DATABASES = {"default": database_config(VAR_DIR / "pgdata")}
DATABASES["default"]["TEST"] = {"NAME": "test_imgrec_uuidshop"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
USE_TZ = True
STATIC_URL = "/static/"
MEDIA_URL = "/media/"
MEDIA_ROOT = tempfile.mkdtemp(prefix="imgrec-uuidshop-media-")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# README step 4: Celery's Django layout (celery_app.py) and the sweeper on beat.
CELERY_BROKER_URL = os.environ.get("IMGREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BEAT_SCHEDULE = {
    "imgrec-sweep": {"task": "imgrec.sweep", "schedule": 60.0, "options": {"queue": "imgrec.uuidshop.light"}}
}

# README step 2.
IMGREC = {
    "PRODUCT_MODEL": "shop.Product",
    "RECOMMENDABLE_PRODUCTS": "tests.integration.uuidshop.shop.rules.recommendable",
    "PRODUCT_CATEGORY": "tests.integration.uuidshop.shop.rules.main_category",
    "PRODUCT_CATEGORY_FILTER": "tests.integration.uuidshop.shop.rules.same_category",
    "IMAGE_SOURCES": [{"model": "shop.ProductImage", "field": "original", "product": "product"}],
    # Queues of their own, so this suite never eats another suite's tasks on a shared Redis.
    "QUEUES": {"embed": "imgrec.uuidshop.embed", "light": "imgrec.uuidshop.light"},
    "DEVICE": "cpu",
    "TORCH_THREADS": 2,
}
