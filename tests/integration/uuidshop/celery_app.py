"""The shop's Celery application (Celery's Django layout: ``proj/celery.py``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.uuidshop.settings")

app = Celery("uuidshop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
