"""docker-compose.yml and the Dockerfile, checked against the settings by parsing (no Docker needed)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import dj_database_url
import pytest
import yaml

from imgrec_app.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker", "beat")
# What settings need in production: without DATABASE_URL they would start the embedded
# development PostgreSQL; without the others they fall back to demo values.
REQUIRED_IN_PRODUCTION = ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY")
# Sources whose environment variables the containers may set.
ENV_SOURCES = (
    ROOT / "shop_demo" / "settings.py",
    ROOT / "shop_demo" / "celery.py",
    ROOT / "imgrec_app" / "contrib" / "embedded_db.py",
)
_ENV_READ = re.compile(
    r"""os\.(?:environ(?:\.get|\.setdefault|\.pop)?|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)
# Compose interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}, ...
_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:?+-][^}]*)?\}")


def env_names_read_by(path: Path) -> set[str]:
    """Names of the environment variables a Python file reads with literal keys."""
    return {a or b for a, b in _ENV_READ.findall(path.read_text())}


def celery_env_names() -> set[str]:
    """Celery's own convention: the ``CELERY_*`` variables it reads from the environment."""
    import celery.app.base
    import celery.app.utils

    names: set[str] = set()
    for module in (celery.app.utils, celery.app.base):
        names |= {n for n in env_names_read_by(Path(module.__file__)) if n.startswith("CELERY_")}
    return names


def known_env_names() -> set[str]:
    names = celery_env_names()
    for path in ENV_SOURCES:
        names |= env_names_read_by(path)
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose also allows a list of ``NAME=value``)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, placeholder: str = "x") -> str:
    return _INTERPOLATION.sub(placeholder, value)


def command_args(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return list(command) if isinstance(command, list) else shlex.split(command)


def option(args: list[str], *names: str) -> str:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    raise AssertionError(f"none of {names} in {args}")


def test_the_services_exist(services: dict[str, Any]) -> None:
    assert {"db", "redis", "web", "worker", "beat"} <= set(services)


def test_app_services_are_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile", name


def test_db_is_pgvector_with_a_pg_isready_healthcheck(compose: dict[str, Any], services: dict[str, Any]) -> None:
    db = services["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    test = db["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "db keeps its data in a named volume"
    assert set(environment(db)) >= {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"}


def test_redis_has_a_healthcheck(services: dict[str, Any]) -> None:
    assert services["redis"]["image"].startswith("redis:7")
    assert "ping" in " ".join(services["redis"]["healthcheck"]["test"])


def test_the_env_scan_finds_what_settings_read() -> None:
    # Guards the regex: if it stopped matching, the next test would pass vacuously.
    names = known_env_names()
    assert {"DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_DEBUG", "IMGREC_DEVICE"} <= names
    assert "DJANGO_SETTINGS_MODULE" in names
    assert "CELERY_BROKER_URL" in names


def test_app_services_set_only_variables_the_settings_read(services: dict[str, Any]) -> None:
    known = known_env_names()
    for name in APP_SERVICES:
        unknown = set(environment(services[name])) - known
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"


def test_production_variables_are_set(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = environment(services[name])
        missing = [var for var in REQUIRED_IN_PRODUCTION if not env.get(var)]
        assert not missing, f"{name} lacks {missing}"
        assert env["DJANGO_DEBUG"] == "0", name
        # The secret comes from the operator (.env), never a literal in this file.
        assert _INTERPOLATION.fullmatch(env["DJANGO_SECRET_KEY"]), name


def test_urls_point_at_the_compose_services(services: dict[str, Any]) -> None:
    db_env = environment(services["db"])
    for name in APP_SERVICES:
        env = environment(services[name])
        db = dj_database_url.parse(interpolate(env["DATABASE_URL"]))
        assert db["ENGINE"] == "django.db.backends.postgresql"
        assert (db["HOST"], db["PORT"]) == ("db", 5432)
        assert db["NAME"] == db_env["POSTGRES_DB"] and db["USER"] == db_env["POSTGRES_USER"]
        assert db["PASSWORD"] == interpolate(db_env["POSTGRES_PASSWORD"])
        assert env["REDIS_URL"].startswith("redis://redis:6379/")


def test_depends_on_waits_for_healthy_services(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: use the long form with conditions"
        assert {"db", "redis"} <= set(depends)
        for target, spec in depends.items():
            assert spec["condition"] == "service_healthy", (name, target)
            assert "healthcheck" in services[target], f"{target} needs a healthcheck"
    # Migrations run in web: worker and beat start once it serves.
    assert "web" in services["worker"]["depends_on"] and "web" in services["beat"]["depends_on"]


def test_web_migrates_then_runs_gunicorn(services: dict[str, Any]) -> None:
    command = " ".join(command_args(services["web"]))
    assert command.index("manage.py migrate") < command.index("gunicorn shop_demo.wsgi")
    assert importlib.util.find_spec("shop_demo.wsgi") is not None


def test_worker_consumes_imgrec_queues_and_the_default_queue(services: dict[str, Any], settings: Any) -> None:
    args = command_args(services["worker"])
    assert args[:1] == ["celery"] and "worker" in args
    queues = option(args, "-Q", "--queues").split(",")
    assert sorted(queues) == sorted(
        [*DEFAULTS["QUEUES"].values(), settings.CELERY_TASK_DEFAULT_QUEUE]
    )
    # Every periodic task lands on a queue the worker consumes.
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry.get("options", {}).get("queue", settings.CELERY_TASK_DEFAULT_QUEUE) in queues


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_celery_app_module_exists(services: dict[str, Any], service: str) -> None:
    from celery import Celery

    args = command_args(services[service])
    module = option(args, "-A", "--app")
    assert importlib.util.find_spec(module) is not None
    # `celery -A pkg` finds the app as pkg.app / pkg.celery, or in the submodule pkg.celery.
    app = importlib.import_module(module)
    found = getattr(app, "app", None) or getattr(app, "celery", None)
    if not isinstance(found, Celery):
        found = getattr(importlib.import_module(f"{module}.celery"), "app", None)
    assert isinstance(found, Celery)


def test_worker_reserves_a_gpu(services: dict[str, Any]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    assert environment(worker)["IMGREC_DEVICE"] in ("cuda", "auto")


def test_media_volume_is_shared_by_web_and_worker(compose: dict[str, Any], services: dict[str, Any]) -> None:
    def media_volume(name: str) -> str:
        media_root = environment(services[name])["DJANGO_MEDIA_ROOT"]
        for volume in services[name].get("volumes", []):
            source, target = volume.split(":")[:2]
            if target == media_root:
                return source
        raise AssertionError(f"{name} mounts nothing at DJANGO_MEDIA_ROOT={media_root}")

    assert media_volume("web") == media_volume("worker")
    assert media_volume("web") in compose["volumes"]


def test_dockerfile_installs_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    # Join continuation lines so each instruction is one line.
    instructions = re.sub(r"\\\n", " ", dockerfile).splitlines()
    runs = [line for line in instructions if line.startswith("RUN ")]
    assert any(re.search(r"pip install .*-r requirements\.txt", run) for run in runs)
    assert any("gunicorn" in run and "pip install" in run for run in runs)
    copies = [line for line in instructions if line.startswith("COPY ")]
    assert any("requirements.txt" in line or line.split()[1] == "." for line in copies)


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", ".env"} <= set(ignored)
