"""Issue 14, point 3: a web process with only ``[api]`` (no torch, no scikit-learn).

The web side runs in a subprocess whose imports of torch, torchvision, scikit-learn and
sentence-transformers raise ImportError (tests/torch_free_web.py); this process runs the real
Celery worker (with torch) on the real Redis, on the committed test database both share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from imgrec_app.models import CategoryClassifier, IndexedImage
from tests.conftest import make_image_bytes, wait_for

REPO = Path(__file__).resolve().parent.parent
Status = IndexedImage.Status


def run_web_process(case: dict[str, Any]) -> dict[str, Any]:
    db = {k: connection.settings_dict[k] for k in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    env = {**os.environ, "IMGREC_WEB_DB": json.dumps(db), "IMGREC_WEB_CASE": json.dumps(case)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.torch_free_web"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"web process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.worker
def test_web_process_without_torch_searches_on_a_worker_queues_uploads_and_retrains_on_a_worker(
    celery_worker: Any, make_product: Any, add_image: Any, settings: Any, tmp_path: Path
) -> None:
    overrides = {"TEXT_MODEL": None}  # image vectors only: no text model to load in the worker
    settings.IMGREC = {**settings.IMGREC, **overrides}
    red = [make_product(f"Red {i}", category="red") for i in range(3)]
    blue = [make_product(f"Blue {i}", category="blue") for i in range(3)]
    images = []
    for i, p in enumerate(red):
        images.append(add_image(p, make_image_bytes(color=(230, 30 + 20 * i, 20)), name=f"r{i}.jpg"))
    for i, p in enumerate(blue):
        images.append(add_image(p, make_image_bytes(color=(20, 30 + 20 * i, 230), shape="box"), name=f"b{i}.jpg"))
    ids = [IndexedImage.objects.get(source_id=str(img.pk)).pk for img in images]
    wait_for(lambda: IndexedImage.objects.filter(pk__in=ids, status=Status.READY).count() == len(ids), timeout=180)
    query = tmp_path / "query.png"
    query.write_bytes(make_image_bytes("PNG", color=(20, 30, 230), shape="box"))  # blue 0's picture
    User.objects.create_superuser("web-staff", "w@example.com", "pw")

    try:
        seen = run_web_process(
            {"query": str(query), "product": str(red[0].pk), "staff": "web-staff", "imgrec": overrides}
        )
    finally:  # the refused search's task waits there (until it expires): leave nothing behind
        with celery_worker.app.connection_for_write() as conn:
            conn.default_channel.queue_purge("imgrec.test.nobody-consumes-this")

    assert seen["blocked_imported"] == []
    # Search by photo: embedded on the worker, answered here.
    assert seen["search"]["status"] == 200, seen["search"]
    results = seen["search"]["body"]["results"]
    assert results and results[0]["product_id"] == str(blue[0].pk), results
    assert {r["product_id"] for r in results[:3]} == {str(p.pk) for p in blue}
    # Turned off, or nobody consuming the search queue: a clear 503, not a 500.
    assert seen["search_off"]["status"] == 503
    assert "turned off" in seen["search_off"]["body"]["detail"]
    assert seen["search_no_worker"]["status"] == 503
    assert "no worker answered within 1.5 s" in seen["search_no_worker"]["body"]["detail"]
    # The upload was queued from the torch-free process and the worker indexed it.
    assert seen["upload"]["status"] == 201, seen["upload"]
    upload_id = str(seen["upload"]["body"]["id"])
    uploaded = IndexedImage.objects.get(source="imgrec_app.productimage.image", source_id=upload_id)
    wait_for(lambda: IndexedImage.objects.get(pk=uploaded.pk).status == Status.READY, timeout=120)
    # "Retrain" answered at once and the worker trained the classifier.
    assert seen["retrain"]["status"] == 200
    assert any("queued on a worker" in m for m in seen["retrain"]["messages"]), seen["retrain"]
    wait_for(lambda: CategoryClassifier.objects.exists(), timeout=120)


@pytest.mark.worker
def test_upload_that_could_not_be_queued_is_requeued_by_the_next_sweep(
    celery_worker: Any, celery_app_real: Any, make_product: Any, add_image: Any, settings: Any
) -> None:
    """The issue's "imgrec_sweep re-queued 0 of them": an image whose task could not be sent is
    published again by the first sweep after REPUBLISH_AFTER, not only after STUCK_AFTER (600 s)."""
    from django.core.management import call_command

    from tests.faults.broker import broker_at, free_port

    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None, "REPUBLISH_AFTER": 0}
    product = make_product()
    with broker_at(celery_app_real, f"redis://127.0.0.1:{free_port()}/6"):  # nothing listens there
        image = add_image(product, make_image_bytes(), name="late.jpg")
    tracked = IndexedImage.objects.get(source_id=str(image.pk))
    assert tracked.status == Status.PENDING and tracked.publish_failed_at is not None
    import io

    out = io.StringIO()
    call_command("imgrec_sweep", stdout=out)  # the default age: what beat runs every minute
    assert "Re-queued 1 image(s)" in out.getvalue()
    wait_for(lambda: IndexedImage.objects.get(pk=tracked.pk).status == Status.READY, timeout=120)
