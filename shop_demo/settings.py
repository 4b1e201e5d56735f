"""Settings of the demo shop.  Database: ``DATABASE_URL`` or an embedded PostgreSQL + pgvector."""

from __future__ import annotations

import json
import os
from typing import Any
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from imgrec_app.contrib.embedded_db import database_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("IMGREC_VAR_DIR", BASE_DIR / "var"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "imgrec_app",
    "shop_demo.catalog",
]

# Database sessions that treat a malformed cookie as no session (shop_demo/sessions.py).
SESSION_ENGINE = "shop_demo.sessions"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Strict CSP (no inline scripts or styles): imgrec's templates are written for it.
    "shop_demo.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "shop_demo.urls"
WSGI_APPLICATION = "shop_demo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "shop_demo" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "shop_demo.catalog.context_processors.categories",
            ],
        },
    },
]

# runserver opens a thread (and a connection) per request: keep connections only when not DEBUG.
DATABASES = {
    "default": database_config(
        VAR_DIR / "pgdata", conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "0" if DEBUG else "60"))
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A shared cache, so imgrec's search throttle counts every web process against one budget
# (issue 13 §3.6).  DJANGO_CACHE_URL=locmem:// gives a per-process cache (single-process use).
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHE_URL = os.environ.get("DJANGO_CACHE_URL", REDIS_URL)
if CACHE_URL.startswith("locmem:"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "shop_demo",
        }
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", VAR_DIR / "media"))
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# --- Celery (broker: Redis) ---------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A web request must never hang on a dead broker: connect briefly, then imgrec's sweeper
# queues the image again later.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 3,
    "visibility_timeout": 3600,
}
CELERY_BEAT_SCHEDULE = {
    "imgrec-sweep": {"task": "imgrec.sweep", "schedule": 60.0, "options": {"queue": "imgrec.light"}},
    "imgrec-coviews": {"task": "imgrec.refresh_coviews", "schedule": 900.0, "options": {"queue": "imgrec.light"}},
    "imgrec-bought-together": {
        "task": "imgrec.refresh_bought_together",
        "schedule": 900.0,
        "options": {"queue": "imgrec.light"},
    },
}

# --- imgrec ---------------------------------------------------------------------------------------
IMGREC: dict[str, Any] = {
    "PRODUCT_MODEL": "catalog.Product",
    "RECOMMENDABLE_PRODUCTS": "shop_demo.catalog.rules.recommendable_products",
    "VISIBLE_PRODUCTS": "shop_demo.catalog.rules.visible_products",
    "PRODUCT_CATEGORY": "category",
    "IMAGE_SOURCES": [{"model": "catalog.Product", "field": "photo", "product": "self"}],
    "TEXT_MODEL": "all-MiniLM-L6-v2",
    "DEVICE": os.environ.get("IMGREC_DEVICE", "auto"),
    # An A/B test the demo's simulated shoppers feed (manage.py imgrec_simulate_shoppers; the
    # admin's "Shelf performance / experiments" page): the similar shelf with the product texts
    # (the default SIMILAR_WEIGHTS) against the photos alone.
    "EXPERIMENTS": {
        "similar-text-weight": {
            "shelves": ["similar"],
            "control": "control",
            "variants": {
                "control": {"traffic": 50, "settings": {}},
                "image-only": {"traffic": 50, "settings": {"SIMILAR_WEIGHTS": {"image": 1.0, "text": 0.0, "coview": 0.3}}},
            },
        },
    },
}

# The demo's backbone recipe from the environment (JSON), e.g. to measure another model id:
# IMGREC_BACKBONE_OPTIONS='{"preprocess": "crop", "pooling": "avg"}' (the original p1 vectors; imgrec's system check
# E003 refuses unknown values).
if os.environ.get("IMGREC_BACKBONE_OPTIONS"):
    try:
        IMGREC["BACKBONE_OPTIONS"] = json.loads(os.environ["IMGREC_BACKBONE_OPTIONS"])
    except ValueError as exc:
        raise ImproperlyConfigured(f"IMGREC_BACKBONE_OPTIONS is not valid JSON: {exc}") from exc

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Sessions only: the demo has no API clients with passwords.  DRF's default also tries HTTP
    # Basic, which looks the user name up in PostgreSQL as sent, and a NUL byte in it was a 500
    # (found by the schemathesis fuzz test).
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
}
SPECTACULAR_SETTINGS = {"TITLE": "imgrec API", "VERSION": "0.1.0"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"imgrec_app": {"handlers": ["console"], "level": os.environ.get("IMGREC_LOG_LEVEL", "INFO")}},
}
