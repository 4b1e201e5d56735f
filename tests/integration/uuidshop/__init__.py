"""A plain Django shop unlike the demo and Oscar: UUID primary keys, categories as a
many-to-many, photos on a model of their own; imgrec installed the way the README says.

Run with ``python -m pytest tests/integration/uuidshop --ds=tests.integration.uuidshop.settings``.
Importing the package loads the project's Celery app (Celery's Django layout, ``proj/__init__.py``).
"""

from tests.integration.uuidshop.celery_app import app as celery_app

__all__ = ["celery_app"]
