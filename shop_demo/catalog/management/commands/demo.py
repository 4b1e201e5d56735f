"""``manage.py demo``: migrate, seed, start a Celery worker and the web server, index, serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imgrec_app.conf import imgrec_settings


class Command(BaseCommand):
    help = "Run the demo shop: embedded Postgres, migrations, demo data, a Celery worker and the web server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="Address of the web server (default: 127.0.0.1:8000).")
        parser.add_argument("--no-index-wait", action="store_true", help="Do not wait for indexing before printing the URLs.")
        parser.add_argument("--exit-after-index", action="store_true", help="Stop everything once indexing is done (for scripts).")
        parser.add_argument("--empty", action="store_true", help="Leave an empty shop empty (tests).")
        parser.add_argument(
            "--shoppers",
            type=int,
            default=40,
            metavar="N",
            help="Simulated shoppers who feed the demo's A/B test once the shop is indexed, when no shelf "
            "impression is recorded yet (default: %(default)s; 0: none).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._check_redis()
        self.stdout.write("Migrating the database...")
        call_command("migrate", interactive=False, verbosity=0)
        from shop_demo.catalog.models import Product

        if not options["empty"] and not Product.objects.exists():
            self.stdout.write("Empty shop: loading the demo catalogue...")
            call_command("seed_demo")
        password = self._demo_users()
        # SIGTERM (docker stop, systemd) stops the demo like Ctrl-C does.  SIGINT is set too: a
        # process started in the background by a non-interactive shell (`make demo &`, a CI
        # script) inherits SIGINT *ignored*, and Python keeps an inherited SIG_IGN, so the demo
        # and its children (which inherit the disposition across exec) would never stop on it.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        children = self._start_children(options["addr"])
        try:
            if not options["no_index_wait"]:
                self.stdout.write("Indexing product images (the worker embeds them; progress below)...")
                call_command("imgrec_reindex", "--missing", "--wait", timeout=3600)
                self.stdout.write("Embedding product texts...")
                call_command("imgrec_reindex", "--text", "--sync")
                self._train_classifier()
                self._simulate_shoppers(options["shoppers"])
            url = f"http://{options['addr']}/"
            self.stdout.write(self.style.SUCCESS(f"\nThe demo shop runs at {url}"))
            self.stdout.write(f"  Admin:        {url}admin/  (user admin, password {password}; demo only)")
            self.stdout.write(f"  Shoppers:     alice (clothing) and bob (fruit, desserts), password demo: {url}accounts/login/")
            self.stdout.write(f"  Search:       {url}search/photo/")
            self.stdout.write(f"  Index status: {url}admin/imgrec_app/indexedimage/status/")
            self.stdout.write(f"  A/B test:     {url}admin/imgrec_app/indexedimage/experiments/")
            self.stdout.write(f"  API schema:   {url}api/imgrec/schema/")
            self.stdout.write("Press Ctrl-C to stop.")
            if options["exit_after_index"]:
                return
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            raise CommandError("A demo process stopped unexpectedly; see its output above.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            # A second Ctrl-C must not cut the shutdown short (and leave processes behind).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._stop(children)
        self.stdout.write("Stopped.")

    def _train_classifier(self) -> None:
        try:
            call_command("imgrec_train_classifier")
        except Exception as exc:  # not enough categorised products is fine for a demo
            self.stdout.write(f"Category classifier not trained: {exc}")
        try:
            from imgrec_app.services.recommend import refresh_coviews

            refresh_coviews()
        except Exception as exc:
            self.stdout.write(f"Viewed-together pairs not built: {exc}")

    def _simulate_shoppers(self, visitors: int) -> None:
        """Simulated shoppers browse the shop once, so the admin's experiments page has a comparison."""
        from imgrec_app.models import ShelfImpression

        if visitors <= 0 or ShelfImpression.objects.exists():
            return
        self.stdout.write(f"Simulated shoppers feed the A/B test ({visitors} visitors; --shoppers 0 skips this)...")
        started = time.monotonic()
        try:
            call_command("imgrec_simulate_shoppers", visitors=visitors, stdout=self.stdout)
        except Exception as exc:  # a demo without a comparison still serves
            self.stdout.write(f"Simulated shoppers not run: {exc}")
        else:
            self.stdout.write(f"  ({time.monotonic() - started:.0f} s)")

    def _check_redis(self) -> None:
        from shop_demo.celery import app

        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            raise CommandError(
                f"Redis is not reachable at {settings.CELERY_BROKER_URL} ({exc}).\n"
                "Start one with:  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''\n"
                "or point REDIS_URL at a running Redis."
            ) from exc

    def _demo_users(self) -> str:
        """An admin, and two shoppers whose browsing makes "recommended for you" visible."""
        from datetime import timedelta

        from django.contrib.contenttypes.models import ContentType
        from django.utils import timezone

        from imgrec_app.models import Interaction
        from shop_demo.catalog.models import Product

        User = get_user_model()
        password = "admin"
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", password)
        ct = ContentType.objects.get_for_model(Product)
        shoppers = {"alice": ["clothing-accessories"], "bob": ["fruit", "ice-cream-sweets"]}
        for name, categories in shoppers.items():
            user, created = User.objects.get_or_create(username=name, defaults={"email": f"{name}@example.com"})
            if not created:
                continue
            user.set_password("demo")
            user.save()
            now = timezone.now()
            products = Product.objects.filter(category__slug__in=categories, published=True).order_by("name")[:8]
            Interaction.objects.bulk_create(
                Interaction(user=user, content_type=ct, object_id=str(p.pk), kind="view", created_at=now - timedelta(hours=i))
                for i, p in enumerate(products)
            )
        return password

    def _start_children(self, addr: str) -> list[subprocess.Popen]:
        queues = ",".join([*imgrec_settings.QUEUES.values(), "celery"])
        schedule = os.path.join(str(settings.VAR_DIR), "celerybeat-schedule")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Each child in a session of its own: the terminal's Ctrl-C (SIGINT to the whole
        # foreground process group) reaches only this command, which then stops the children in
        # order.  Before, the children died of the same signal first and the command reported
        # "a demo process stopped unexpectedly".
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "shop_demo", "worker", "-B", "-s", schedule,
             "-Q", queues, "--concurrency", "1", "-l", "warning"],
            env=env,
            start_new_session=True,
        )
        web = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", addr, "--noreload"],
            env=env,
            cwd=str(settings.BASE_DIR),
            start_new_session=True,
        )
        return [worker, web]

    def _stop(self, children: list[subprocess.Popen]) -> None:
        # SIGINT, not SIGTERM: both runserver and the Celery worker exit through Python's normal
        # shutdown on it, so their atexit hooks (the embedded PostgreSQL's handle) run.
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            # Each child leads a session (and process group) of its own: whatever it forked and
            # left behind (a Celery pool or beat process, when the signal came while the worker
            # was still starting) is still in that group.
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # nothing left in the group
        # The embedded server stops with its last user (this process, at exit); a child that
        # had to be killed is forgotten first (imgrec_app.contrib.embedded_db).
