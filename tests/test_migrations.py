"""imgrec's migrations: none missing, pgvector first, and no dependency on any host app."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.migrations.loader import MigrationLoader
from pgvector.django import VectorExtension

APP = "imgrec_app"


@pytest.fixture(scope="module")
def loader() -> MigrationLoader:
    return MigrationLoader(None, ignore_no_migrations=True)


@pytest.mark.django_db  # makemigrations checks the applied history for consistency
def test_no_migrations_are_missing() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=io.StringIO())
    except SystemExit as exc:  # --check exits 1 when models changed without a migration
        pytest.fail(f"Missing migrations (exit {exc.code}):\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()


def test_first_operation_creates_the_vector_extension(loader: MigrationLoader) -> None:
    roots = loader.graph.root_nodes(APP)
    assert len(roots) == 1, roots
    migration = loader.get_migration(*roots[0])
    assert migration.initial
    assert isinstance(migration.operations[0], VectorExtension)


def test_imgrec_migrations_do_not_depend_on_host_apps(loader: MigrationLoader) -> None:
    # swappable_dependency(settings.AUTH_USER_MODEL) resolves to the user model's app ("auth"
    # here); any other app would be a host app baked into our migrations.
    allowed = {APP, "contenttypes", settings.AUTH_USER_MODEL.split(".")[0].lower()}
    own = [key for key in loader.disk_migrations if key[0] == APP]
    assert own, "imgrec_app has no migrations"
    for key in own:
        migration = loader.disk_migrations[key]
        for app_label, _name in migration.dependencies:
            assert app_label.lower() in allowed, f"{key} depends on {app_label!r}"
        for operation in migration.operations:
            for target in _relation_targets(operation):
                assert target.split(".")[0].lower() in allowed, f"{key} points a field at {target!r}"


def _relation_targets(operation: object) -> list[str]:
    """The ``to`` of every relation field an operation creates or alters, as ``app.Model``."""
    fields = list(getattr(operation, "fields", None) or [])
    field = getattr(operation, "field", None)
    if field is not None:
        fields.append(("", field))
    targets = []
    for _name, field in fields:
        remote = getattr(field, "remote_field", None)
        if remote is None:
            continue
        model = remote.model
        targets.append(model if isinstance(model, str) else model._meta.label)
    return targets
