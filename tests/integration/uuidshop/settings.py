"""Settings of a ``django-admin startproject`` shop with imgrec added by the README's "Install into
an existing shop" steps only (no REST_FRAMEWORK settings: imgrec's schema must work without).
Nothing here comes from shop_demo."""

from __future__ import annotations

from pathlib import Path

from tests.integration import _base

HERE = Path(__file__).resolve().parent

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
DATABASES = {"default": _base.database("test_imgrec_uuidshop")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
STATIC_URL = "/static/"
MEDIA_URL = "/media/"

# Test-run settings every host-shop suite shares (tests/integration/_base.py).
CACHES = _base.CACHES
MEDIA_ROOT = _base.MEDIA_ROOT
PASSWORD_HASHERS = _base.PASSWORD_HASHERS
CELERY_BROKER_URL = _base.CELERY_BROKER_URL
CELERY_TASK_IGNORE_RESULT = _base.CELERY_TASK_IGNORE_RESULT
CELERY_BROKER_CONNECTION_TIMEOUT = _base.CELERY_BROKER_CONNECTION_TIMEOUT

# README step 4: Celery's Django layout (celery_app.py; CELERY_BROKER_URL above) and the sweeper on beat.
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
