"""``manage.py imgrec_health``: the catalogue health summary (the admin page's), for scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from imgrec_app.services import health


class Command(BaseCommand):
    help = (
        "Check the catalogue: category disagreements, near-duplicate listings, placeholders, tiny or "
        "blank images, products with no image or no vector, categories the shelves mix up."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the whole report as JSON.")
        parser.add_argument("--csv", metavar="PATH", help="Also write every finding to a CSV file.")
        parser.add_argument(
            "--show", type=int, default=5, metavar="N", help="Findings listed per section (default: %(default)s)."
        )
        parser.add_argument("--no-files", action="store_true", help="Skip opening image files (no tiny/blank checks).")
        parser.add_argument(
            "--fail-on-findings",
            action="store_true",
            help="Exit with status 1 when any section has findings (for CI or cron alerts).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = health.catalogue_health(check_files=not options["no_files"])
        if options["csv"]:
            Path(options["csv"]).write_text(health.to_csv(report), encoding="utf-8")
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            self._summary(report, options["show"])
        if options["fail_on_findings"] and any(report.counts().values()):
            raise SystemExit(1)

    def _summary(self, report: health.HealthReport, show: int) -> None:
        self.stdout.write(f"Products: {report.products} · serving model: {report.model_id or '-'}")
        if report.files_total:
            self.stdout.write(f"Image files checked: {report.files_checked} of {report.files_total}")
        for section in report.sections():
            items = section["items"]
            self.stdout.write(f"{section['title']}: {len(items)}")
            for item in items[:show]:
                other = f" ↔ {item.other_product}" if item.other_product_id else ""
                who = f"{item.product} [{item.product_id}]" if item.product_id else item.product
                self.stdout.write(f"  {who}{other}: {item.detail}")
            if len(items) > show:
                self.stdout.write(f"  … {len(items) - show} more")
