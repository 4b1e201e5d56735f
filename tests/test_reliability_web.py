"""The web-side cases of issue 13 (§3.2–§3.8, "Also seen", §4), through the real request stack.

Each test here failed on the code before its fix (see docs/RELIABILITY.md, "Issue 13").
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from imgrec_app.models import Interaction

pytestmark = pytest.mark.django_db


def _json_client() -> Client:
    """A visitor with a session and its CSRF token (as a page of the shop would have)."""
    client = Client(enforce_csrf_checks=True)
    client.get("/")
    return client


def _post_json(client: Client, url: str, body: str) -> Any:
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)


# --- issue 13 §3.7: deeply nested JSON is a 400, not a 500 ---------------------------------------


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_json_is_a_400_not_a_500(make_product: Any, depth: int) -> None:
    product = make_product()
    client = Client()
    body = '{"product_id": ' + "[" * depth + '"%s"' % product.pk + "]" * depth + "}"
    response = client.post("/api/imgrec/events/", body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested deeper" in response.json()["detail"]
    assert not Interaction.objects.exists()
    # An ordinary body still works.
    ok = client.post("/api/imgrec/events/", {"product_id": str(product.pk)}, content_type="application/json")
    assert ok.status_code == 201
