"""``manage.py imgrec_simulate_shoppers``: simulated shoppers browse the demo through real requests,
so that the measured shelves and the demo's A/B test have something to show."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from imgrec_app.contrib import shopper_simulation


class Command(BaseCommand):
    help = (
        "Simulated shoppers (the evaluation's, each with preferred categories) open product pages, click "
        "shelf links and add to cart / buy through the shop's real views and imgrec's API: impressions, "
        "clicks and conversions are recorded by imgrec itself, under IMGREC['EXPERIMENTS']. Demo and "
        "staging data only: the visitors are fake."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--visitors", type=int, default=60, help="Simulated shoppers (default: %(default)s).")
        parser.add_argument("--pages", type=int, default=8, help="Product pages each opens (default: %(default)s).")
        parser.add_argument(
            "--days",
            type=int,
            default=7,
            help="Spread the visitors over the last N days, for the plot over time (default: %(default)s; 0: now).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default: %(default)s).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["visitors"] < 1 or options["pages"] < 1 or options["days"] < 0:
            raise CommandError("--visitors and --pages must be at least 1, --days at least 0.")
        bar = tqdm(total=options["visitors"], unit="visitor", disable=options["verbosity"] == 0)

        def progress(number: int, result: shopper_simulation.SimulationResult) -> None:
            bar.update(1)

        try:
            result = shopper_simulation.simulate(
                visitors=options["visitors"],
                pages=options["pages"],
                days=options["days"],
                seed=options["seed"],
                progress=progress,
            )
        except shopper_simulation.SimulationError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self.stdout.write(
            f"{result.visitors} simulated shoppers: {result.pages} pages, {result.shelves_seen} shelves shown, "
            f"{result.clicks} shelf clicks, {result.carts} add-to-carts, {result.purchases} purchases "
            f"in {result.seconds:.1f} s. See manage.py imgrec_experiments or the admin's Shelf performance page."
        )
