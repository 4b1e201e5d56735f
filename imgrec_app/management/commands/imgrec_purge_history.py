"""``manage.py imgrec_purge_history``: delete browsing history older than the retention period."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from imgrec_app.services import history


class Command(BaseCommand):
    help = "Delete browsing-history rows older than --days (default: IMGREC['HISTORY_RETENTION_DAYS'])."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=None, help="Retention in days (default: IMGREC['HISTORY_RETENTION_DAYS'])."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = history.purge(older_than_days=options["days"])
        self.stdout.write(f"Deleted {deleted} history row(s).")
