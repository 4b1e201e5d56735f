"""Settings of a minimal django-oscar 4.2 shop set up as Oscar's "Building your own shop" page
says, with imgrec added as docs/OSCAR.md says.  Nothing here comes from shop_demo."""

from __future__ import annotations

from pathlib import Path

from oscar.defaults import *  # noqa: F403 - Oscar's documented first line: its defaults

from tests.integration import _base

HERE = Path(__file__).resolve().parent

SECRET_KEY = "oscar-integration-test-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.flatpages",
    "oscar.config.Shop",
    "oscar.apps.analytics.apps.AnalyticsConfig",
    "oscar.apps.checkout.apps.CheckoutConfig",
    "oscar.apps.address.apps.AddressConfig",
    "oscar.apps.shipping.apps.ShippingConfig",
    "oscar.apps.catalogue.apps.CatalogueConfig",
    "oscar.apps.catalogue.reviews.apps.CatalogueReviewsConfig",
    "oscar.apps.communication.apps.CommunicationConfig",
    "oscar.apps.partner.apps.PartnerConfig",
    "oscar.apps.basket.apps.BasketConfig",
    "oscar.apps.payment.apps.PaymentConfig",
    "oscar.apps.offer.apps.OfferConfig",
    "oscar.apps.order.apps.OrderConfig",
    "oscar.apps.customer.apps.CustomerConfig",
    "oscar.apps.search.apps.SearchConfig",
    "oscar.apps.voucher.apps.VoucherConfig",
    "oscar.apps.wishlists.apps.WishlistsConfig",
    "oscar.apps.dashboard.apps.DashboardConfig",
    "oscar.apps.dashboard.reports.apps.ReportsDashboardConfig",
    "oscar.apps.dashboard.users.apps.UsersDashboardConfig",
    "oscar.apps.dashboard.orders.apps.OrdersDashboardConfig",
    "oscar.apps.dashboard.catalogue.apps.CatalogueDashboardConfig",
    "oscar.apps.dashboard.offers.apps.OffersDashboardConfig",
    "oscar.apps.dashboard.partners.apps.PartnersDashboardConfig",
    "oscar.apps.dashboard.pages.apps.PagesDashboardConfig",
    "oscar.apps.dashboard.ranges.apps.RangesDashboardConfig",
    "oscar.apps.dashboard.reviews.apps.ReviewsDashboardConfig",
    "oscar.apps.dashboard.vouchers.apps.VouchersDashboardConfig",
    "oscar.apps.dashboard.communications.apps.CommunicationsDashboardConfig",
    "oscar.apps.dashboard.shipping.apps.ShippingDashboardConfig",
    # 3rd-party apps that Oscar depends on
    "widget_tweaks",
    "haystack",
    "treebeard",
    "sorl.thumbnail",  # Oscar's default OSCAR_THUMBNAILER
    "django_tables2",
    # imgrec, and the shop's own code (its signal receivers and shelf rules)
    "imgrec_app",
    "tests.integration.oscar.shop",
]
SITE_ID = 1

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "oscar.apps.basket.middleware.BasketMiddleware",
    "django.contrib.flatpages.middleware.FlatpageFallbackMiddleware",
]
AUTHENTICATION_BACKENDS = [
    "oscar.apps.customer.auth_backends.EmailBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "tests.integration.oscar.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The shop's template overrides (oscar/catalogue/detail.html) come before Oscar's own.
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.template.context_processors.i18n",
                "django.contrib.messages.context_processors.messages",
                "oscar.apps.search.context_processors.search_form",
                "oscar.apps.checkout.context_processors.checkout",
                "oscar.apps.communication.notifications.context_processors.notifications",
                "oscar.core.context_processors.metadata",
            ],
        },
    },
]

HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}

# The embedded PostgreSQL + pgvector that the main test suite uses, with a test database of its
# own, so both suites can run on one server (at the same time, too).
DATABASES = {"default": _base.database("test_imgrec_oscar")}
DATABASES["default"]["ATOMIC_REQUESTS"] = True  # Oscar's recommendation
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LANGUAGE_CODE = "en-gb"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
MEDIA_URL = "/media/"

# Test-run settings every host-shop suite shares (tests/integration/_base.py).
CACHES = _base.CACHES
MEDIA_ROOT = _base.MEDIA_ROOT
PASSWORD_HASHERS = _base.PASSWORD_HASHERS
CELERY_BROKER_URL = _base.CELERY_BROKER_URL
CELERY_TASK_IGNORE_RESULT = _base.CELERY_TASK_IGNORE_RESULT
CELERY_BROKER_CONNECTION_TIMEOUT = _base.CELERY_BROKER_CONNECTION_TIMEOUT

# --- Celery (Celery's Django layout; see celery_app.py) -----------------------------------------
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- imgrec ---------------------------------------------------------------------------------------
IMGREC = {
    "PRODUCT_MODEL": "catalogue.Product",
    # Oscar's own images, indexed where they are: no re-upload.
    "IMAGE_SOURCES": [{"model": "catalogue.ProductImage", "field": "original", "product": "product"}],
    "RECOMMENDABLE_PRODUCTS": "tests.integration.oscar.shop.rules.recommendable_products",
    "PRODUCT_CATEGORY": "tests.integration.oscar.shop.rules.product_category",
    # Queues of their own, so this suite never eats the main suite's tasks on a shared Redis.
    "QUEUES": {"embed": "imgrec.oscartest.embed", "light": "imgrec.oscartest.light"},
    "TORCH_THREADS": 2,
    "DEVICE": "cpu",
    # The restock test reads the shelf right after a stock change; a cached shelf shows a
    # restocked product only after SHELF_CACHE_TIMEOUT (exclusions are immediate; docs/DESIGN.md).
    "SHELF_CACHE": False,
}
# A per-process cache is what this single-process test run wants (imgrec_app.W030 explains why a
# shop with several web processes should not).
SILENCED_SYSTEM_CHECKS = ["imgrec_app.W030"]
