"""``manage.py imgrec_reindex``: (re-)embed images, queued in chunks or in this process."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from imgrec_app.services import reindex

# Seconds after queueing before --wait asks whether a worker works on the run, and between two
# such questions while the run makes no progress.
WORKER_GRACE = 20.0
STALL_RECHECK = 60.0


class Command(BaseCommand):
    help = (
        "Re-index product images. Scopes: --all, --missing (no vector of the configured model; "
        "also picks up images that existed before imgrec was installed), --stale (vectors of "
        "another model only), --failed. Queues Celery tasks in chunks unless --sync."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        scope = parser.add_mutually_exclusive_group()
        for name in reindex.SCOPES:
            scope.add_argument(f"--{name}", dest="scope", action="store_const", const=name)
        parser.set_defaults(scope="missing")
        parser.add_argument(
            "--product",
            dest="products",
            action="append",
            metavar="ID",
            help="Limit to these product ids (repeat the option). Default: every product.",
        )
        parser.add_argument("--sync", action="store_true", help="Embed in this process instead of queueing tasks.")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="After queueing, follow the workers' progress until the run is finished.",
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=None,
            help="Images per task / per batch (default: IMGREC['TASK_BATCH_SIZE']).",
        )
        parser.add_argument(
            "--text",
            action="store_true",
            help="Embed product texts that have no (or an outdated) text vector instead of images.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=3600.0,
            help="With --wait: give up after this many seconds (default: 3600).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["text"]:
            return self._text(options)
        scope = options["scope"]
        quiet = options["verbosity"] == 0
        started = reindex.start_run(scope, product_ids=options["products"])
        run = started.run
        if not started.created:
            self.stdout.write(f"A re-index of {scope} (run {run.pk}) is already running; following it.")
        self.stdout.write(f"Re-index run {run.pk}: {run.total} image(s), scope {scope}, model {run.model_id}")
        if options["sync"]:
            with tqdm(total=run.total, unit="img", disable=quiet) as bar:
                summary = reindex.run_sync(run, chunk_size=options["chunk_size"], progress=bar.update)
            self._summary(run)
            if summary.failed:
                self.stdout.write(f"Failures by reason: {summary.failed}")
            return
        if started.created:
            tasks = reindex.publish_run(run.pk, chunk_size=options["chunk_size"])
            self.stdout.write(f"Queued {tasks} task(s).")
        if options["wait"]:
            self._follow(run, options["timeout"], quiet)
        self._summary(run)

    def _text(self, options: dict[str, Any]) -> None:
        from imgrec_app.services import text

        if text.text_model() is None:
            raise CommandError("IMGREC['TEXT_MODEL'] is not set: text vectors are off.")
        ids = text.missing_text_ids()
        size = options["chunk_size"] or 256
        if options["sync"]:
            with tqdm(total=len(ids), unit="product", disable=options["verbosity"] == 0) as bar:
                for start in range(0, len(ids), size):
                    text.embed_products(ids[start : start + size])
                    bar.update(len(ids[start : start + size]))
        else:
            for start in range(0, len(ids), size):
                text.publish_text(ids[start : start + size])
        self.stdout.write(
            self.style.SUCCESS(f"Text vectors: {len(ids)} product(s) {'embedded' if options['sync'] else 'queued'}.")
        )

    def _require_broker(self, run: Any) -> None:
        from imgrec_app.services import broker

        state = broker.broker_state()
        if state != broker.OK:
            raise CommandError(
                f"The Celery broker is {state}: run {run.pk} cannot be processed. Its images stay "
                "pending (the sweeper queues them once the broker answers); --sync embeds in this process."
            )

    def _require_worker(self, run: Any, depth_before: int | None) -> int | None:
        """Fail, saying so, when nothing shows a worker on the embed queue: none of the run's
        images is being processed, the queue did not get shorter since the last look, no task is
        held unacknowledged, and no worker answers a broadcast (2 s).  A ``--pool solo`` worker
        busy loading the model cannot answer, but holds its task.  Returns the queue depth now."""
        from imgrec_app.conf import imgrec_settings
        from imgrec_app.models import IndexedImage
        from imgrec_app.services import broker

        queue = imgrec_settings.QUEUES["embed"]
        depth = reindex.queue_depth().get(queue)
        if IndexedImage.objects.filter(run=run, status=IndexedImage.Status.PROCESSING).exists():
            return depth
        if depth is not None and depth_before is not None and depth < depth_before:
            return depth
        if broker.messages_in_flight():
            return depth
        if not broker.consumers([queue], timeout=2.0)[queue]:
            raise CommandError(
                f"No worker consumes the queue {queue!r}: run {run.pk} is queued and waits for one. Start "
                f"a worker (celery -A proj worker -Q {queue},{imgrec_settings.QUEUES['light']}) and follow "
                "it with imgrec_reindex --wait again, or use --sync to embed in this process."
            )
        return depth

    def _follow(self, run: Any, timeout: float, quiet: bool) -> None:
        from imgrec_app.conf import imgrec_settings

        deadline = time.monotonic() + timeout
        if run.total:
            self._require_broker(run)
        # Ask whether a worker is there once the run had time to start, and again whenever it
        # stops moving, instead of showing 0 % forever.
        check_at = time.monotonic() + WORKER_GRACE
        last_done = -1
        depth = reindex.queue_depth().get(imgrec_settings.QUEUES["embed"]) if run.total else None
        with tqdm(total=run.total, unit="img", disable=quiet) as bar:
            while True:
                p = reindex.run_progress(run)
                if p.ready + p.failed != last_done:
                    last_done = p.ready + p.failed
                    check_at = time.monotonic() + (WORKER_GRACE if last_done == 0 else STALL_RECHECK)
                elif not p.finished and time.monotonic() > check_at:
                    depth = self._require_worker(run, depth)
                    check_at = time.monotonic() + STALL_RECHECK
                bar.n = p.ready + p.failed
                bar.set_postfix(failed=p.failed, rate=f"{p.rate}/s")
                bar.refresh()
                if p.finished:
                    return
                if time.monotonic() > deadline:
                    raise CommandError(f"Run {run.pk} not finished after {timeout:.0f}s: {p.as_dict()}")
                time.sleep(1.0)

    def _summary(self, run: Any) -> None:
        p = reindex.run_progress(run)
        self.stdout.write(
            self.style.SUCCESS(
                f"Run {p.run_id}: {p.ready} ready, {p.failed} failed, {p.remaining} remaining "
                f"of {p.total} ({p.rate} img/s)"
            )
        )
