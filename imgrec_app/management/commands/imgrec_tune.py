"""``manage.py imgrec_tune``: learn the shop's catalogue (a projection head), roll back, activate."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imgrec_app.services import tuning


class Command(BaseCommand):
    help = (
        "Start a tuning run: a projection head trained on the stored image vectors with the shop's "
        "categories, texts and viewed-together pairs, measured held-out (k-fold by product), "
        "written as a new model version and switched to. --rollback serves the base vectors again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--rollback", action="store_true", help="Stop serving the tuned head (base vectors serve).")
        what.add_argument("--activate", type=int, metavar="RUN", help="Serve this (ready) run's head again.")
        what.add_argument("--list", action="store_true", help="List tuning runs.")
        parser.add_argument("--wait", action="store_true", help="Wait for the run to finish, showing progress.")
        parser.add_argument("--sync", action="store_true", help="Run in this process instead of a Celery task.")
        parser.add_argument("--timeout", type=float, default=1800, help="Seconds --wait waits (default 1800).")
        parser.add_argument("--config", default="", help="JSON head options, e.g. '{\"epochs\": 40}'.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rollback"]:
            run = tuning.rollback()
            self.stdout.write(
                self.style.SUCCESS(f"Serving the base vectors{f' (run {run.pk} deactivated)' if run else ''}.")
            )
            return
        if options["activate"]:
            try:
                run = tuning.activate(options["activate"])
            except tuning.TuningRefused as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(self.style.SUCCESS(f"Run {run.pk} is active ({run.model_id})."))
            return
        if options["list"]:
            from imgrec_app.models import TuningRun

            for run in TuningRun.objects.defer("weights")[:20]:
                self.stdout.write(_describe(run))
            return
        self._start(options)

    def _start(self, options: dict[str, Any]) -> None:
        try:
            config = json.loads(options["config"]) if options["config"] else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from exc
        try:
            if options["sync"]:
                started = tuning.start_run(config=config)
            else:
                started = tuning.start_and_queue(config=config)
        except (tuning.TuningRefused, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        run = started.run
        if not started.created:
            self.stdout.write(f"Tuning run {run.pk} is already {run.status}.")
        else:
            self.stdout.write(f"Tuning run {run.pk} started ({run.base_model_id}).")
        if options["sync"] and started.created:
            run = tuning.execute(run.pk)
            run.refresh_from_db()
        elif options["wait"]:
            try:
                run = tuning.wait(run, timeout=options["timeout"], on_change=self._show)
            except TimeoutError as exc:
                raise CommandError(str(exc)) from exc
        else:
            return
        self.stdout.write(_describe(run))
        if run.status != run.Status.READY:
            raise CommandError(run.message or f"Run {run.pk} ended {run.status}.")

    def _show(self, state: dict[str, Any]) -> None:
        self.stdout.write(f"  {100 * state['progress']:5.1f} %  {state['status_label']}  {state['stage']}")


def _describe(run: Any) -> str:
    m = run.metrics or {}
    text = f"Run {run.pk}: {run.status}{' (active)' if run.is_active else ''}  {run.model_id or run.base_model_id}"
    if m.get("tuned"):

        def f(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        text += (
            f"\n  held-out ({m['folds']} folds by product) image-only precision@{m['k']}: "
            f"untuned {f(m['untuned']['precision'])} -> tuned {f(m['tuned']['precision'])}; "
            f"as configured {f(m['untuned'].get('configured'))} -> {f(m['tuned'].get('configured'))}; "
            f"classifier {f(m['untuned']['classifier'])} -> {f(m['tuned']['classifier'])}"
        )
    if run.message:
        text += f"\n  {run.message}"
    return text
