"""The soak's write-window killer (bench/soak_window.py) against the real test database.

A subprocess opens a connection as the soak's worker (``application_name``), updates an image's
status and writes vectors in one transaction, as ``write_results`` does; the window triggers
hold it open; the killer must find it from ``pg_stat_activity``, SIGKILL the process and count
the kill as landed only because PostgreSQL rolled the transaction back.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.db import connection

from bench import soak_window

pytestmark = pytest.mark.django_db(transaction=True)

# The worker's sub-batch write, in the order write_results makes it; COMMIT at the end.  Each
# statement starts on a new, indented line, as imgrec's triple-quoted SQL does (pg_stat_activity
# shows the text as sent); the product vectors' INSERT is inside a WITH query, as in vectors.py.
WRITER = (
    """
import sys, psycopg
host, port, user, name, image_id, ct = sys.argv[1:]
with psycopg.connect(host=host, port=port, user=user, dbname=name, application_name=%r) as conn:
    conn.execute("UPDATE imgrec_app_indexedimage SET status = 'ready' WHERE id = %%s", [int(image_id)])
    conn.execute(
        "\\n            INSERT INTO imgrec_app_imageembedding (image_id, model_id, vector, file_hash, labels, created_at)"
        " VALUES (%%s, 'soak:m', '[1,0,0]', 'h', '[]', now())", [int(image_id)])
    conn.execute(
        "\\n            WITH agg AS (SELECT 1)"
        " INSERT INTO imgrec_app_productvector (content_type_id, object_id, modality, model_id, vector,"
        " source_count, source_hash, labels, updated_at)"
        " VALUES (%%s, '1', 'image', 'soak:m', '[1,0,0]', 1, '', '[]', now())", [int(ct)])
    conn.commit()
print("committed")
"""
    % soak_window.APP
)


class _Writer:
    """Stands in for the prefork worker: its one "pool child" is the writer subprocess."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def alive(self) -> bool:
        return True

    def pool_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc.poll() is None else []


@pytest.fixture
def window() -> Any:
    db = connection.settings_dict
    database = {"HOST": db["HOST"], "PORT": db["PORT"], "USER": db["USER"], "NAME": db["NAME"]}
    soak_window.install_window_triggers(database, 3.0)
    yield database
    with soak_window.connect(database) as conn:
        conn.execute(f"DROP TRIGGER soak_window_before_image_vectors ON {soak_window.IE}")
        conn.execute(f"DROP TRIGGER soak_window_before_commit ON {soak_window.PV}")
        conn.execute("DROP FUNCTION soak_write_window()")


def _image() -> Any:
    from django.contrib.contenttypes.models import ContentType

    from imgrec_app.models import IndexedImage
    from shop_demo.catalog.models import Product

    ct = ContentType.objects.get_for_model(Product)
    return IndexedImage.objects.create(
        source="soak.test", source_id="1", content_type=ct, object_id="1", file_name="x.png", status="processing"
    )


@pytest.mark.parametrize("stage", sorted(soak_window.STAGES))
def test_a_kill_in_the_write_window_lands_and_rolls_the_whole_write_back(window: Any, stage: str) -> None:
    from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector

    image = _image()
    args = [window["HOST"], str(window["PORT"]), window["USER"], window["NAME"], str(image.pk)]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, *args, str(image.content_type_id)], stdout=subprocess.PIPE, text=True
    )
    killer = soak_window.WindowKiller(_Writer(proc), window, "soak:m", every=0, note=print)
    try:
        with soak_window.connect(window) as conn:
            kill = killer._hunt(conn, stage, timeout=60)
    finally:
        out = proc.communicate(timeout=60)[0]
    assert kill is not None, "the killer never saw the write window"
    assert kill["landed"] and kill["outcome"] == "landed (rolled back)", kill
    assert proc.returncode == -9 and "committed" not in out
    # Nothing of the transaction is there: the image is still processing, no vector of either kind.
    assert IndexedImage.objects.get(pk=image.pk).status == "processing"
    assert not ImageEmbedding.objects.exists() and not ProductVector.objects.filter(model_id="soak:m").exists()
    assert kill["ready_without_product_vector_after"] == 0


def test_a_kill_after_the_commit_is_never_counted_as_landed(window: Any) -> None:
    killer = soak_window.WindowKiller(None, window, "soak:m", every=0, note=print)
    with soak_window.connect(window) as conn:
        with conn.transaction():
            (xid8,) = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        # pid 0 is no backend: the "killed" client is gone at once, its transaction committed.
        kill = killer._outcome(conn, "before-commit", 0, xid8, "INSERT …")
    assert not kill["landed"] and kill["outcome"] == "missed (committed first)"
