"""``manage.py imgrec_switch_model``: serve the configured model's vectors now (or roll back)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imgrec_app.services.models import backfill_remaining, configured_model, serving_target, switch_serving


class Command(BaseCommand):
    help = (
        "Switch serving to the configured backbone's vectors. Refuses while its backfill is "
        "incomplete unless --force (products without a new vector would drop off the shelves)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Switch even if the backfill is incomplete.")

    def handle(self, *args: Any, **options: Any) -> None:
        # The configured backbone, or its active tuned head (imgrec_tune).
        model_id, dim = serving_target(configured_model())
        remaining = backfill_remaining(model_id)
        if remaining and not options["force"]:
            raise CommandError(
                f"{remaining} image(s) still lack a {model_id} vector; run imgrec_reindex "
                "--stale (or --missing) first, or pass --force."
            )
        switch_serving(model_id, dim)
        self.stdout.write(self.style.SUCCESS(f"Serving {model_id}."))
