"""A minimal django-oscar shop with imgrec installed, as its README tells a shop to.

Run with ``python -m pytest tests/integration/oscar --ds=tests.integration.oscar.settings``.
Importing the package loads the project's Celery app, as Celery's Django layout does in
``proj/__init__.py``.
"""

from tests.integration.oscar.celery_app import app as celery_app

__all__ = ["celery_app"]
