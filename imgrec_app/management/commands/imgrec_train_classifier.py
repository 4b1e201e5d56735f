"""``manage.py imgrec_train_classifier``: learn the shop's categories from product vectors."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imgrec_app.services import classifier


class Command(BaseCommand):
    help = (
        "Train a logistic-regression classifier of the shop's categories (IMGREC['PRODUCT_CATEGORY']) "
        "on product vectors, report its k-fold accuracy, and predict a category for every product."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--folds", type=int, default=5, help="Cross-validation folds (default: 5).")
        parser.add_argument(
            "--C",
            type=float,
            default=None,
            help="Inverse regularisation strength (default: chosen among 2, 8, 32, 128 by an inner "
            "cross-validation on the training products).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            r = classifier.train(folds=options["folds"], C=options["C"])
        except classifier.NotEnoughData as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Classifier {r.classifier_id}: {r.samples} products, {r.categories} categories, "
                f"{r.folds}-fold accuracy {r.cv_accuracy:.3f} (majority baseline {r.baseline_accuracy:.3f}), "
                f"C {r.C:g}; "
                f"{r.predictions} predictions, {r.disagreements} disagreements."
            )
        )
