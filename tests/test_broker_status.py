"""Issue 14, point 6: status that does not mislead when Celery is not set up or no worker runs."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from imgrec_app.checks_services import check_broker
from tests.faults.broker import broker_at, free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_broker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)


def test_status_says_broker_not_configured_instead_of_celerys_default(celery_app_real: Any, no_broker_env: Any) -> None:
    with broker_at(celery_app_real, None):  # what a host that never configured Celery has
        out = io.StringIO()
        call_command("imgrec_status", stdout=out)
        status = io.StringIO()
        call_command("imgrec_status", "--json", stdout=status)
    text = out.getvalue()
    assert "Broker: not configured" in text
    assert "Queue depth" not in text  # nothing read from amqp://localhost
    assert '"broker": "not configured"' in status.getvalue()


def test_status_reports_the_broker_and_queue_depth_when_configured(celery_app_real: Any) -> None:
    out = io.StringIO()
    call_command("imgrec_status", stdout=out)
    assert "Broker: ok" in out.getvalue() and "Queue depth:" in out.getvalue()


def test_check_warns_when_the_broker_is_unconfigured_or_unreachable(celery_app_real: Any, no_broker_env: Any) -> None:
    assert check_broker() == []
    with broker_at(celery_app_real, None):
        [warning] = check_broker()
        assert warning.id == "imgrec_app.W031" and "No Celery broker is configured" in warning.msg
    with broker_at(celery_app_real, f"redis://127.0.0.1:{free_port()}/6"):
        [warning] = check_broker()
        assert warning.id == "imgrec_app.W031" and "does not answer" in warning.msg


def test_reindex_wait_says_no_worker_consumes_the_queue(
    celery_app_real: Any, make_product: Any, add_image: Any, settings: Any
) -> None:
    queues = {"embed": "imgrec.test.noworker.embed", "light": "imgrec.test.noworker.light"}
    settings.IMGREC = {**settings.IMGREC, "QUEUES": queues, "TEXT_MODEL": None}
    add_image(make_product())
    try:
        with pytest.raises(CommandError, match="No worker consumes the queue 'imgrec.test.noworker.embed'"):
            call_command("imgrec_reindex", "--missing", "--wait", "--timeout", "60", stdout=io.StringIO(), verbosity=0)
    finally:
        with celery_app_real.connection_for_write() as conn:
            for name in queues.values():
                conn.default_channel.queue_purge(name)


@pytest.mark.worker
def test_reindex_wait_sees_a_real_worker(celery_worker: Any, celery_app_real: Any) -> None:
    from imgrec_app.conf import imgrec_settings
    from imgrec_app.services import broker

    queue = imgrec_settings.QUEUES["embed"]
    assert broker.consumers([queue], timeout=2.0)[queue], "the test worker answers the broadcast"
