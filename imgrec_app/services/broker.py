"""Is there a Celery broker, does it answer, and does any worker consume a queue?

Used by ``imgrec_status``, the admin status page, the system checks and ``imgrec_reindex --wait``
so that none of them reports numbers from Celery's built-in default (``amqp://localhost``) when
the host never configured a broker, and none waits forever for a worker that is not there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NOT_CONFIGURED = "not configured"
UNREACHABLE = "unreachable"
OK = "ok"


def _app() -> Any:
    from celery import current_app

    return current_app


def broker_configured() -> bool:
    """Whether the host set a broker (``CELERY_BROKER_URL`` / ``broker_url``, or the env var).

    Celery falls back to ``amqp://guest@localhost//`` when none is set: whatever answers there
    is not the host's broker, so imgrec treats that case as "not configured".
    """
    return bool(_app().conf.broker_write_url)


def broker_state(*, timeout: float = 1.0) -> str:
    """``"ok"``, ``"unreachable"`` or ``"not configured"``."""
    if not broker_configured():
        return NOT_CONFIGURED
    try:
        with _app().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception:
        return UNREACHABLE
    return OK


def consumers(queues: Iterable[str], *, timeout: float = 1.0) -> dict[str, list[str]]:
    """Workers (by host name) that answer a broadcast and consume each queue, within ``timeout``.

    A queue nobody consumes maps to ``[]``.  Needs the workers' remote control (Celery's default).
    """
    wanted = list(queues)
    found: dict[str, list[str]] = {q: [] for q in wanted}
    if not broker_configured():
        return found
    try:
        replies = _app().control.inspect(timeout=timeout).active_queues() or {}
    except Exception:
        return found
    for worker, active in replies.items():
        for queue in active or ():
            name = queue.get("name") if isinstance(queue, dict) else None
            if name in found:
                found[name].append(worker)
    return found


def messages_in_flight() -> int | None:
    """Messages a worker has taken and not acknowledged yet (Redis brokers: kombu's ``unacked``
    hash), None where the transport does not tell.  imgrec's embed tasks acknowledge late, so a
    worker busy on one (e.g. a ``--pool solo`` worker loading the model, which cannot answer a
    broadcast meanwhile) shows up here."""
    if not broker_configured():
        return None
    try:
        with _app().connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
            channel = conn.default_channel
            client, key = getattr(channel, "client", None), getattr(channel, "unacked_key", None)
            if client is None or not key:
                return None
            return int(client.hlen(key))
    except Exception:
        return None
