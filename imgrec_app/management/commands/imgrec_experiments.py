"""``manage.py imgrec_experiments``: the shelf-performance / A/B summary (the admin page's), for scripts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imgrec_app.services import experiment_stats


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"Not a date (YYYY-MM-DD): {value!r}") from exc


def _pct(rate: experiment_stats.Rate) -> str:
    if rate.value is None:
        return "–"
    return f"{100 * rate.value:5.1f} % [{100 * (rate.low or 0):.1f}–{100 * (rate.high or 0):.1f}]"


class Command(BaseCommand):
    help = (
        "Shelf performance per shelf, source, experiment and variant: impressions, CTR, add-to-cart and "
        "purchase rates with 95 % Wilson intervals, and a z-test of each variant against its control."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=_date, help="First day of impressions (YYYY-MM-DD, UTC).")
        parser.add_argument("--until", type=_date, help="Last day of impressions (YYYY-MM-DD, UTC).")
        parser.add_argument("--shelf", default="", help="Only this shelf (similar, foryou, ...).")
        parser.add_argument("--experiment", default="", help="Only this experiment.")
        parser.add_argument("--csv", metavar="PATH", help="Also write the daily rows to a CSV file ('-': print it).")
        parser.add_argument("--json", action="store_true", help="Print the whole report as JSON.")
        parser.add_argument("--sources", action="store_true", help="Also list the rows of each source.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["since"] and options["until"] and options["since"] > options["until"]:
            raise CommandError("--since is after --until.")
        filters = experiment_stats.Filters(
            since=options["since"], until=options["until"], shelf=options["shelf"], experiment=options["experiment"]
        )
        report = experiment_stats.experiment_report(filters)
        if options["csv"] == "-":
            self.stdout.write(experiment_stats.to_csv(report), ending="")
            return
        if options["csv"]:
            Path(options["csv"]).write_text(experiment_stats.to_csv(report), encoding="utf-8")
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
            return
        self._summary(report, sources=options["sources"])

    def _summary(self, report: experiment_stats.ExperimentReport, *, sources: bool) -> None:
        rows = [r for r in report.rows if sources or r.source == experiment_stats.ALL_SOURCES]
        if not rows:
            self.stdout.write("No shelf impressions in this range.")
            return
        days = report.days()
        self.stdout.write(f"Impressions from {days[0]} to {days[-1]}; rates with 95 % Wilson intervals.")
        self.stdout.write(
            f"{'shelf':<16} {'source':<30} {'experiment':<22} {'variant':<14} {'impr.':>7} "
            f"{'CTR':>22} {'add-to-cart':>22} {'purchase':>22}  vs control (CTR)"
        )
        for row in rows:
            c = row.counts
            cmp = row.vs_control.get("ctr")
            verdict = ""
            if row.is_control:
                verdict = "control"
            elif cmp is not None and cmp.p_value is not None:
                verdict = f"{100 * (cmp.difference or 0):+.1f} pts, p={cmp.p_value:.3f}"
                verdict += " SIGNIFICANT" if cmp.significant else ("" if cmp.enough_data else " (too few events)")
            self.stdout.write(
                f"{row.shelf:<16} {row.source or 'all':<30} {row.experiment or '-':<22} {row.variant or '-':<14} "
                f"{c.impressions:>7} {_pct(c.ctr):>22} {_pct(c.cart_rate):>22} {_pct(c.purchase_rate):>22}  {verdict}"
            )
