"""Text embeddings on a queue of their own (``QUEUES["text"]``), on the real broker."""

from __future__ import annotations

from typing import Any

import pytest

from imgrec_app.services import text
from tests.test_checks import only, run


def _take(app: Any, queue: str) -> list[Any]:
    """The messages waiting on ``queue`` (taken off it)."""
    out = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    out.append(simple.get(block=False))
                except simple.Empty:
                    return out
        finally:
            simple.close()


@pytest.mark.parametrize("text_key", [None, "imgrec.test.text-probe"])
def test_text_tasks_go_to_the_text_queue_else_the_embed_queue(celery_app_real, settings, text_key):
    # Queue names no worker of this test session consumes, so the message stays to be looked at.
    queues = {"embed": "imgrec.test.embed-probe", "light": "imgrec.test.light-probe"}
    if text_key:
        queues["text"] = text_key
    settings.IMGREC = {**settings.IMGREC, "QUEUES": queues}
    for q in ("imgrec.test.embed-probe", "imgrec.test.text-probe"):
        _take(celery_app_real, q)
    assert text.publish_text(["7", "8"]) is True
    on_text = _take(celery_app_real, "imgrec.test.text-probe")
    on_embed = _take(celery_app_real, "imgrec.test.embed-probe")
    sent = on_text if text_key else on_embed
    assert (len(on_text), len(on_embed)) == ((1, 0) if text_key else (0, 1))
    assert sent[0].headers["task"] == "imgrec.embed_texts"
    assert sent[0].headers["argsrepr"] == "[['7', '8']]"


@pytest.mark.parametrize("value", ["", 3, None])
@pytest.mark.parametrize("key", ["text", "tune"])
def test_e055_optional_queue_names(key, value):
    only(run(QUEUES={"embed": "imgrec.embed", "light": "imgrec.light", key: value}), "imgrec_app.E055")


def test_a_text_queue_name_passes_the_checks():
    assert run(QUEUES={"embed": "imgrec.embed", "light": "imgrec.light", "text": "imgrec.text"}) == []
