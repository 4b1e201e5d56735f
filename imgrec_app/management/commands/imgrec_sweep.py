"""``manage.py imgrec_sweep``: re-queue images stuck in pending/processing (the periodic task's job)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from imgrec_app.services import indexing
from imgrec_app.services.models import sync_serving_model


class Command(BaseCommand):
    help = "Re-queue images stuck pending/processing longer than --older-than seconds (default: IMGREC['STUCK_AFTER'])."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, default=None, help="Seconds (default: IMGREC['STUCK_AFTER']).")

    def handle(self, *args: Any, **options: Any) -> None:
        age = None if options["older_than"] is None else timedelta(seconds=options["older_than"])
        result = indexing.sweep_stuck(older_than=age)
        serving = sync_serving_model()
        self.stdout.write(
            f"Re-queued {result['requeued']} image(s); {result['worker_lost']} marked worker_lost; "
            f"{result['reconciled']} missing product vector(s) written. "
            f"Serving: {serving.model_id if serving else '-'}"
        )
