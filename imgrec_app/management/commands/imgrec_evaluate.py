"""``manage.py imgrec_evaluate``: how good are the shelves on this shop's catalogue? (HTML report)"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from imgrec_app.conf import imgrec_settings
from imgrec_app.services import evaluation


class Command(BaseCommand):
    help = (
        "Evaluate imgrec on the shop's own catalogue against baselines (random, most popular, "
        "same-category popular): similar-products precision@k by category (your SIMILAR_WEIGHTS and "
        "image-only), the category classifier's k-fold accuracy vs linear probes, and "
        "recommended-for-you hit rate / NDCG@k on held-out browsing (real history when there is "
        "enough, otherwise simulated shoppers, rolled back). Prints a summary and writes an HTML "
        "report with plots. Nothing in the shop's data is changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = evaluation.EvaluationOptions()
        parser.add_argument(
            "--output",
            default="imgrec-evaluation.html",
            help='HTML report path; "" writes none (default: %(default)s).',
        )
        parser.add_argument(
            "--k",
            type=int,
            default=defaults.k,
            help="Shelf size measured: precision@k, hit rate@k, NDCG@k (default: %(default)s).",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=defaults.sample,
            help="Products queried for similar products / real visitors evaluated; 0 for all (default: %(default)s).",
        )
        parser.add_argument("--seed", type=int, default=defaults.seed, help="Random seed (default: %(default)s).")
        parser.add_argument(
            "--simulated-shoppers",
            type=int,
            default=defaults.simulated_shoppers,
            help="Shoppers simulated when there is not enough real history; 0 turns simulation off "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--events-per-shopper",
            type=int,
            default=defaults.events_per_shopper,
            help="Products each simulated shopper browses; the last 20 %% are held out (default: %(default)s).",
        )
        parser.add_argument(
            "--shopper-model",
            choices=evaluation.SHOPPER_MODELS,
            default=defaults.shopper_model,
            help="Simulated shoppers: 'category' (a category, then popularity) or 'taste' (also a "
            "colour read from the photos' pixels and a latent style only behaviour shows; "
            "docs/EVALUATION.md) (default: %(default)s).",
        )
        parser.add_argument(
            "--background-shoppers",
            type=int,
            default=defaults.background_shoppers,
            help="More simulated shoppers whose whole browsing is written first and never evaluated "
            "(the shop's other traffic) (default: %(default)s).",
        )
        parser.add_argument(
            "--folds",
            type=int,
            default=defaults.folds,
            help="Cross-validation folds of the classifier (default: %(default)s).",
        )
        parser.add_argument(
            "--grid",
            action="store_true",
            help="Also measure precision@k over a grid of SIMILAR_WEIGHTS "
            "(image 1; text 0, 0.25, 0.5, 1; coview 0, 0.3).",
        )
        parser.add_argument(
            "--bought-together",
            action="store_true",
            help="Also measure the frequently-bought-together shelf on held-out real basket events.",
        )
        parser.add_argument(
            "--foryou-grid",
            action="store_true",
            help="Also measure recommended-for-you hit rate@k over a grid of FORYOU_WEIGHTS "
            "(interest 0/0.5/1, coview 0/0.5/1, category 0/1/2/4, recency 0/0.5), chosen on one half "
            "of the shoppers and read on the other.",
        )
        parser.add_argument(
            "--no-tuning",
            action="store_true",
            help="Skip the held-out (k-fold by product) tuned vs untuned rows of imgrec_tune's head.",
        )
        parser.add_argument("--json", action="store_true", help="Print the results as JSON instead of the table.")

    def handle(self, *args: Any, **options: Any) -> None:
        k = options["k"]
        if not 1 <= k <= int(imgrec_settings.MAX_LIMIT):
            raise CommandError(f"--k must be between 1 and IMGREC['MAX_LIMIT'] ({imgrec_settings.MAX_LIMIT}).")
        if options["folds"] < 2 or options["events_per_shopper"] < 2:
            raise CommandError("--folds and --events-per-shopper must be at least 2.")
        opts = evaluation.EvaluationOptions(
            k=k,
            sample=options["sample"] or None,
            seed=options["seed"],
            simulated_shoppers=max(0, options["simulated_shoppers"]),
            events_per_shopper=options["events_per_shopper"],
            folds=options["folds"],
            grid=options["grid"],
            foryou_grid=options["foryou_grid"],
            tuning=not options["no_tuning"],
            shopper_model=options["shopper_model"],
            background_shoppers=max(0, options["background_shoppers"]),
        )
        quiet = options["verbosity"] == 0 or options["json"]

        def progress(items: Iterable[Any], desc: str, total: int) -> Iterable[Any]:
            return tqdm(items, desc=desc, total=total, unit="it", disable=quiet, leave=False)

        try:
            result = evaluation.evaluate(opts, progress=progress)
            html = evaluation.render_report(result) if options["output"] else None
        except evaluation.EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        if options["bought_together"]:
            from imgrec_app.services.evaluation_baskets import evaluate_bought_together

            result["bought_together"] = evaluate_bought_together(k=k)
        if html is not None:
            path = Path(options["output"])
            path.write_text(html, encoding="utf-8")
            result["report"] = str(path.resolve())
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, default=str))
            return
        self.stdout.write(evaluation.format_table(evaluation.summary_rows(result)))
        if result["for_you"].get("simulated"):
            self.stdout.write(
                self.style.WARNING(
                    "\nRecommended for you was measured on SIMULATED shoppers: only "
                    f"{result['for_you']['real_visitors']} visitors have enough real history "
                    f"(need {evaluation.MIN_REAL_VISITORS})."
                )
            )
        if "grid" in result:
            best = result["grid"]["best"]
            self.stdout.write(
                f"\nBest SIMILAR_WEIGHTS on this catalogue: image 1, text {best['text']:g}, coview {best['coview']:g} "
                f"(precision@{k} {100 * best['precision']:.1f} %)" + (f"; {best['note']}" if best["note"] else "")
            )
        if "bought_together" in result:
            self._bought_together(result["bought_together"])
        fy_grid = result["for_you"].get("grid")
        if fy_grid:
            best = fy_grid["best"]
            weights = ", ".join(f"{key} {best[key]:g}" for key in evaluation.FORYOU_GRID)
            self.stdout.write(
                f"\nBest FORYOU_WEIGHTS on these shoppers: {weights} "
                f"(hit rate@{k} {100 * best['hit_rate']:.1f} %, NDCG@{k} {best['ndcg']:.3f})"
            )
        timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in result["timings"].items())
        self.stdout.write(f"\nTook {timings}.")
        if html is not None:
            self.stdout.write(self.style.SUCCESS(f"Report written to {result['report']}"))

    def _bought_together(self, bt: dict[str, Any]) -> None:
        if "methods" not in bt:
            self.stdout.write(f"\nFrequently bought together: not measured ({bt['baskets']} baskets; {bt['note']}).")
            return
        self.stdout.write(f"\nFrequently bought together, hit rate@{bt['k']} on {bt['baskets']} held-out baskets:")
        for name, rate in bt["methods"].items():
            self.stdout.write(f"  {name:<24} {'-' if rate is None else f'{100 * rate:.1f} %'}")
