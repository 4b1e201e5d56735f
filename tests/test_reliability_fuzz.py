"""Fuzzing the served OpenAPI schema with schemathesis (issue 7, case 35).

Schemathesis reads ``/api/imgrec/schema/`` from the demo's WSGI application and generates
requests for every operation — valid ones and ones that break the schema — for an anonymous
visitor and for a superuser (CSRF checks off for that pass, so fuzzed writes reach the views).
Checks: no 5xx, the documented responses match their schema, the content type is the
documented one.  Bounded: ``MAX_EXAMPLES`` per operation and visitor.

Case 36 (property tests over image modes and sizes) lives in tests/test_ml_preprocess.py and
tests/test_ml_encoder.py (hypothesis).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.test_recommend import catalogue  # noqa: F401  (fixture)

# requirements.txt pins schemathesis; a checkout without it skips this module, it does not break.
schemathesis = pytest.importorskip("schemathesis", reason="pip install -r requirements.txt")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance  # noqa: E402

MAX_EXAMPLES = 15
API = "/api/imgrec"
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _served_schema() -> Any:
    """The schema as the demo's WSGI application serves it (read once, at collection)."""
    from django.core.wsgi import get_wsgi_application

    return schemathesis.openapi.from_wsgi(f"{API}/schema/?format=json", get_wsgi_application())


schema = _served_schema()


@pytest.fixture
def served(catalogue: Any, celery_app_real: Any, settings: Any) -> Iterator[list[Any]]:  # noqa: F811
    """A catalogue to fuzz against (yields its products); requests end without closing the
    test's connection."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from tests.conftest import _purge

    settings.IMGREC = {**settings.IMGREC, "SEARCH_THROTTLE_RATE": "100000/min"}  # fuzz the view, not the throttle
    cache.clear()
    # As Django's test client does: a request's start and end must not close the connection
    # that holds the test's transaction.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield catalogue[0]
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)
        _purge(celery_app_real)  # a fuzzed re-index queued a task: leave nothing for other tests


@pytest.fixture
def staff_session(db: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    """A superuser's credentials as HTTP Basic (the schema declares it, so schemathesis sends an
    Authorization header anyway), for ``case.call_and_validate(**...)``.  CSRF checks are off
    for this pass so that fuzzed writes reach the views (CSRF itself: test_reliability_privacy)."""
    import base64

    from rest_framework.authentication import SessionAuthentication

    User.objects.create_superuser("fuzz-staff", "f@example.com", "fuzz-pw")
    monkeypatch.setattr(SessionAuthentication, "enforce_csrf", lambda self, request: None)
    basic = base64.b64encode(b"fuzz-staff:fuzz-pw").decode()
    return {"headers": {"Authorization": f"Basic {basic}"}}


FUZZ = hypothesis_settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_api_for_an_anonymous_visitor_never_errors_and_matches_its_schema(case: Any, served: list[Any]) -> None:
    case.call_and_validate(base_url="http://testserver", checks=CHECKS)


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_api_for_staff_never_errors_and_matches_its_schema(
    case: Any, staff_session: dict[str, Any], served: list[Any]
) -> None:
    if case.path_parameters and "product_id" in case.path_parameters:
        # The anonymous pass tries random ids; this one fuzzes the rest of the request for a
        # product that exists.
        case.path_parameters["product_id"] = str(served[0].pk)
    case.call_and_validate(base_url="http://testserver", checks=CHECKS, **staff_session)
