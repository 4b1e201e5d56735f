"""``manage.py imgrec_status``: counts by status and model, failures by reason, queue depth."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from imgrec_app.services import indexing, reindex


class Command(BaseCommand):
    help = "Show imgrec's index: images by status, vectors by model, failures by reason, queue depth."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args: Any, **options: Any) -> None:
        status = reindex.index_status()
        status["products_missing_vectors"] = indexing.missing_product_vector_count()
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2, default=str))
            return
        self.stdout.write(f"Configured model: {status['configured_model']}")
        self.stdout.write(f"Serving model:    {status['serving_model'] or '-'}")
        if status["backfill_remaining"]:
            self.stdout.write(f"Backfill remaining: {status['backfill_remaining']}")
        self.stdout.write("Images by status:")
        for name in ("pending", "processing", "ready", "failed"):
            self.stdout.write(f"  {name:<11} {status['images'].get(name, 0)}")
        self.stdout.write("Vectors by model:")
        for model_id, n in sorted(status["embeddings_by_model"].items()):
            self.stdout.write(f"  {model_id:<50} {n}")
        if status["failures_by_reason"]:
            self.stdout.write("Failures by reason:")
            for reason, n in sorted(status["failures_by_reason"].items()):
                self.stdout.write(f"  {reason:<20} {n}")
        # Should be 0: a product with a ready image but no product vector is missing from shelves
        # (the sweeper writes them).
        self.stdout.write(f"Products missing a vector: {status['products_missing_vectors']}")
        if status["broker"] == "not configured":
            self.stdout.write(
                "Broker: not configured (set CELERY_BROKER_URL and load your Celery app: "
                "nothing is queued or indexed until then)"
            )
            return
        self.stdout.write(f"Broker: {status['broker']}")
        self.stdout.write("Queue depth:")
        for queue, n in status["queue_depth"].items():
            self.stdout.write(f"  {queue:<20} {'unreachable' if n is None else n}")
