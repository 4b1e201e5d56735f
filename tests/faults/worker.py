"""A real Celery worker in a subprocess (``--pool prefork --concurrency 1``) that a test can
SIGKILL — its pool child alone (a crash inside a task) or the whole worker (the machine lost
it) — and start again.  It runs ``tests.settings_faults`` on the test's own database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

REPO = Path(__file__).resolve().parents[2]


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``DATABASE_URL`` for the database a Django connection uses (unix socket or TCP)."""
    host = quote(str(settings_dict.get("HOST") or ""), safe="")
    port = settings_dict.get("PORT") or 5432
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    return f"postgres://{user}:{password}@{host}:{port}/{settings_dict['NAME']}"


class WorkerProcess:
    """One ``celery worker`` subprocess in its own process group; its output goes to a file.

    Args:
        queues: the queues it consumes.
        imgrec: IMGREC overrides it runs with (the test process should use the same).
        media_root: the media folder of the test process.
        database: the test process's ``connection.settings_dict``.
        log_path: where its output goes (appended across restarts).
        broker_url: defaults to the test settings' broker.
        settings_module: its ``DJANGO_SETTINGS_MODULE``.
        env: more environment variables.
    """

    def __init__(
        self,
        *,
        queues: list[str],
        imgrec: dict[str, Any],
        media_root: str,
        database: dict[str, Any],
        log_path: Path,
        broker_url: str | None = None,
        settings_module: str = "tests.settings_faults",
        env: dict[str, str] | None = None,
    ) -> None:
        self.queues = queues
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DATABASE_URL": database_url(database),
            "IMGREC_FAULT_MEDIA_ROOT": str(media_root),
            "IMGREC_FAULT_IMGREC": json.dumps(imgrec),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        if broker_url:
            self.env["IMGREC_FAULT_BROKER_URL"] = broker_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.name = f"fault-{uuid.uuid4().hex[:8]}@%h"

    # --- life cycle -------------------------------------------------------------------------

    def start(self, *, timeout: float = 90) -> WorkerProcess:
        """Start it and wait until it consumes (its log says ``ready``)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "shop_demo",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "-Q",
                ",".join(self.queues),
                "-n",
                self.name,
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log(offset):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pool_pids(self) -> list[int]:
        """The prefork pool's child processes (where tasks run)."""
        try:
            return [c.pid for c in psutil.Process(self.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def kill_pool_child(self) -> int:
        """SIGKILL the process running tasks; the worker's parent survives and forks a new one."""
        pids = self.pool_pids()
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool): nothing acknowledges or cleans up."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)  # type: ignore[union-attr]

    def stop(self, *, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM); SIGKILL if it does not exit in time."""
        if not self.alive():
            return
        os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> WorkerProcess:
        return self.start() if not self.alive() else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        # The pool child is in the same group; make sure nothing outlives the test.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AssertionError):
            pass
