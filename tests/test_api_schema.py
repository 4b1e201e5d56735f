"""Issue 14, point 2: the OpenAPI schema works in any host and its paths are the real URLs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings
from django.urls import Resolver404, resolve

REPO = Path(__file__).resolve().parent.parent

# Run where DRF's DEFAULT_SCHEMA_CLASS is DRF's own AutoSchema from the first import on (it is
# read when the views' @extend_schema decorators run, so override_settings cannot reproduce it).
PLAIN_HOST = """
import json, django
django.setup()
from django.conf import settings
from rest_framework.settings import api_settings
from django.test import Client
r = Client().get("/api/imgrec/schema/?format=json")
print("RESULT " + json.dumps({"default": api_settings.DEFAULT_SCHEMA_CLASS.__module__,
                              "status": r.status_code, "body": r.content.decode()[:300]}))
"""


def test_schema_is_served_when_the_host_never_set_drf_schema_class() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_plain_drf",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/unused",  # the schema needs no database
    }
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_HOST], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stdout + proc.stderr
    seen = json.loads(line[-1][7:])
    assert seen["default"] == "rest_framework.schemas.openapi"  # the host's setting really is DRF's
    assert seen["status"] == 200, seen["body"]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.mark.parametrize("mount", ["/api/imgrec/", "/shop-api/v1/"])
def test_schema_paths_carry_the_mount_prefix_and_resolve(client, mount: str) -> None:
    urlconf = "tests.urls_custom_mount" if mount != "/api/imgrec/" else None
    with override_settings(**({"ROOT_URLCONF": urlconf} if urlconf else {})):
        r = client.get(f"{mount}schema/?format=json")
        assert r.status_code == 200
        doc = r.json()
        assert doc["servers"] == [{"url": "/"}]
        paths = list(doc["paths"])
        assert len(paths) >= 8
        for path in paths:
            assert path.startswith(mount), path
            try:
                match = resolve(_concrete(path))
            except Resolver404:
                pytest.fail(f"schema path {path} is not a URL of the site")
            assert match.namespace == "imgrec_api", (path, match.view_name)


def test_schema_server_includes_the_script_name(client) -> None:
    r = client.get("/api/imgrec/schema/?format=json", SCRIPT_NAME="/shop")
    assert r.json()["servers"] == [{"url": "/shop"}]
