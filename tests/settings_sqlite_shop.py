"""The demo shop as it was before imgrec: SQLite, no imgrec apps (tests/test_sqlite_move.py)."""

import os

from tests.settings import *  # noqa: F401,F403
from tests.settings import INSTALLED_APPS

# The demo's admin module uses imgrec's admin inline: the admin without autodiscovery.
_IMGREC = ("imgrec_app", "rest_framework", "drf_spectacular")
INSTALLED_APPS = [
    "django.contrib.admin.apps.SimpleAdminConfig" if a == "django.contrib.admin" else a
    for a in INSTALLED_APPS
    if a not in _IMGREC
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["IMGREC_SQLITE_PATH"]}}
ROOT_URLCONF = "tests.settings_sqlite_shop"  # no URLs needed
urlpatterns: list = []
