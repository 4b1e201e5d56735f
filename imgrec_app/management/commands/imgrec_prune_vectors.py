"""``manage.py imgrec_prune_vectors``: delete vectors of models no longer configured or serving."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from imgrec_app.services import reindex


class Command(BaseCommand):
    help = "Delete image and product vectors of every model except the configured and serving ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--keep", action="append", default=[], metavar="MODEL_ID", help="Also keep this model id.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = reindex.prune_vectors(keep=options["keep"])
        self.stdout.write(f"Deleted {result['image_vectors']} image and {result['product_vectors']} product vector(s).")
