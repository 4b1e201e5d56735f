"""Worker kills inside the write window, for ``bench/soak.py --kill-in-write-window`` (issue 13).

A sub-batch's results are written in one transaction (the statuses ``UPDATE``, the image vectors
``INSERT``, the products' vectors ``INSERT … ON CONFLICT``, then ``COMMIT``).  This module kills
the worker's pool child while that transaction is open, and proves from the database side that
each kill landed there, without touching imgrec's code:

- the worker connects with ``application_name`` :data:`APP` (libpq's ``PGAPPNAME``), so its
  backend is found in ``pg_stat_activity``;
- in the soak's own throw-away database, statement triggers widen the window for that
  application only: ``pg_sleep`` *before* the image-vector ``INSERT`` (the statuses are already
  updated: the transaction has an xid) and *after* the product-vector write (every row of the
  sub-batch written, only ``COMMIT`` missing);
- :class:`WindowKiller` polls ``pg_stat_activity`` for the worker's backend with an xid inside one
  of those statements, SIGKILLs the pool child, waits for the backend to go, and asks
  ``pg_xact_status`` what became of that xid.  A kill *landed* when the transaction was
  **aborted**; ``committed`` means the kill came too late (counted as missed, never as landed).
  Right after each landed kill it counts ready images whose product has no vector (the issue 13
  §1 state): it must be 0 every time.

:func:`audit` is the after-the-drain verdict: products checked (every product with a ready
image), missing from shelves (no product vector of the serving model, or an empty or failing
similar shelf through the API), stuck images (pending/processing), duplicates (rows and shelf
items).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import psycopg

APP = "imgrec-soak-worker"
II, IE, PV = "imgrec_app_indexedimage", "imgrec_app_imageembedding", "imgrec_app_productvector"
# pg_stat_activity.query (a regex) of the statement each stage waits in (the trigger sleeps there):
# the image vectors' INSERT starts the statement; the product vectors' is inside a WITH query.
STAGES = {
    "before-image-vectors": rf'^\s*INSERT\s+INTO\s+"?{IE}\M',  # statuses updated, vectors not yet
    "before-commit": rf'\mINSERT\s+INTO\s+"?{PV}\M',  # every row written, COMMIT not yet sent
}


def connect(database: dict[str, Any]) -> psycopg.Connection:
    """An autocommit connection to the soak's database (never the worker's application name)."""
    return psycopg.connect(
        host=database["HOST"],
        port=database["PORT"],
        user=database["USER"],
        dbname=database["NAME"],
        application_name="imgrec-soak-monitor",
        autocommit=True,
    )


def install_window_triggers(database: dict[str, Any], seconds: float) -> None:
    """Widen the write window of :data:`APP`'s transactions by ``seconds`` at two points."""
    with connect(database) as conn:
        conn.execute(
            f"""
            CREATE OR REPLACE FUNCTION soak_write_window() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF current_setting('application_name') = '{APP}' THEN
                PERFORM pg_sleep({float(seconds)});
              END IF;
              RETURN NULL;
            END $$;
            DROP TRIGGER IF EXISTS soak_window_before_image_vectors ON {IE};
            CREATE TRIGGER soak_window_before_image_vectors BEFORE INSERT ON {IE}
              FOR EACH STATEMENT EXECUTE FUNCTION soak_write_window();
            DROP TRIGGER IF EXISTS soak_window_before_commit ON {PV};
            CREATE TRIGGER soak_window_before_commit AFTER INSERT ON {PV}
              FOR EACH STATEMENT EXECUTE FUNCTION soak_write_window();
            """
        )


def _xid8(conn: psycopg.Connection, xid: int) -> int:
    """The 64-bit id of a 32-bit ``backend_xid`` (the current epoch, or the one before)."""
    (now,) = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    full = (now >> 32 << 32) | xid
    return full - (1 << 32) if full > now else full


def _missing_vector_images(conn: psycopg.Connection, model_id: str) -> int:
    """Ready images with a vector of ``model_id`` whose product has none (issue 13 §1's state)."""
    (n,) = conn.execute(
        f"""
        SELECT count(*) FROM {II} i JOIN {IE} e ON e.image_id = i.id AND e.model_id = %s
         WHERE i.status = 'ready' AND NOT EXISTS (
               SELECT 1 FROM {PV} v WHERE v.content_type_id = i.content_type_id
                  AND v.object_id = i.object_id AND v.model_id = %s)
        """,
        [model_id, model_id],
    ).fetchone()
    return n


class WindowKiller:
    """A thread that kills ``worker``'s pool child inside its write transaction every ``every`` s."""

    def __init__(self, worker: Any, database: dict[str, Any], model_id: str, *, every: float, note: Any) -> None:
        self.worker, self.database, self.model_id = worker, database, model_id
        self.every, self.note = every, note
        self.stop = threading.Event()
        self.kills: list[dict[str, Any]] = []
        self.idle_hunts = 0  # rounds that saw no write window within their timeout
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(60)

    def _run(self) -> None:
        rng = random.Random(13)
        with connect(self.database) as conn:
            while not self.stop.wait(self.every):
                stage = rng.choice(sorted(STAGES))
                try:
                    kill = self._hunt(conn, stage, timeout=60)
                except Exception as exc:  # the whole worker is down (a scheduled fault): next round
                    kill = {"stage": stage, "outcome": f"error: {exc}"}
                if kill is None:
                    self.idle_hunts += 1
                else:
                    self.kills.append(kill)
                    self.note(f"window kill {len(self.kills)} ({stage}): {kill['outcome']}")

    def _hunt(self, conn: psycopg.Connection, stage: str, *, timeout: float) -> dict[str, Any] | None:
        """Wait for the worker's backend to be in ``stage`` with an xid, SIGKILL the pool child."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            row = conn.execute(
                """
                SELECT pid, backend_xid::text::bigint, state, left(query, 80)
                  FROM pg_stat_activity
                 WHERE application_name = %s AND backend_xid IS NOT NULL
                   AND state = 'active' AND query ~ %s
                """,
                [APP, STAGES[stage]],
            ).fetchone()
            if row is None:
                time.sleep(0.01)
                continue
            backend, xid, state, query = row
            pids = self.worker.pool_pids() if self.worker.alive() else []
            if len(pids) != 1:  # the pool is being replaced: look again
                time.sleep(0.01)
                continue
            os.kill(pids[0], signal.SIGKILL)
            return self._outcome(conn, stage, backend, _xid8(conn, xid), query)
        return None

    def _outcome(self, conn: psycopg.Connection, stage: str, backend: int, xid8: int, query: str) -> dict[str, Any]:
        """Wait for the killed client's backend to end; what became of its transaction."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]).fetchone() is None:
                break
            time.sleep(0.05)
        else:
            return {"stage": stage, "outcome": "backend still there after 30 s", "xid": xid8}
        (status,) = conn.execute("SELECT pg_xact_status(%s::text::xid8)", [str(xid8)]).fetchone()
        return {
            "stage": stage,
            "xid": xid8,
            "query": query,
            "outcome": {"aborted": "landed (rolled back)", "committed": "missed (committed first)"}.get(
                status, f"transaction {status}"
            ),
            "landed": status == "aborted",
            "ready_without_product_vector_after": _missing_vector_images(conn, self.model_id),
        }

    def summary(self) -> dict[str, Any]:
        landed = [k for k in self.kills if k.get("landed")]
        return {
            "window_kills_tried": len(self.kills),
            "rounds_without_a_window": self.idle_hunts,
            "window_kills_landed": len(landed),
            "landed_by_stage": dict(Counter(k["stage"] for k in landed)),
            "outcomes": dict(Counter(k["outcome"] for k in self.kills)),
            "ready_without_product_vector_right_after_a_landed_kill": sum(
                k["ready_without_product_vector_after"] for k in landed
            ),
        }


def audit(database: dict[str, Any], model_id: str, base_url: str, visible: set[str]) -> dict[str, Any]:
    """After the drain: products checked, missing from shelves, stuck images, duplicates.

    Every product with a ready image must have a product vector of ``model_id``; every
    ``visible`` one (published: the API answers 404 for the others) must also get a similar
    shelf with vector items (``source`` ``similar:…``) through the public API.
    """
    with connect(database) as conn:
        products = [
            obj
            for (obj,) in conn.execute(
                f"SELECT DISTINCT object_id FROM {II} WHERE status = 'ready' ORDER BY object_id"
            ).fetchall()
        ]
        no_vector = [
            obj
            for (obj,) in conn.execute(
                f"""
                SELECT DISTINCT i.object_id FROM {II} i WHERE i.status = 'ready' AND NOT EXISTS (
                       SELECT 1 FROM {PV} v WHERE v.content_type_id = i.content_type_id
                          AND v.object_id = i.object_id AND v.model_id = %s)
                """,
                [model_id],
            ).fetchall()
        ]
        (ready_without_embedding,) = conn.execute(
            f"""SELECT count(*) FROM {II} i WHERE i.status = 'ready'
                   AND NOT EXISTS (SELECT 1 FROM {IE} e WHERE e.image_id = i.id AND e.model_id = %s)""",
            [model_id],
        ).fetchone()
        (stuck,) = conn.execute(f"SELECT count(*) FROM {II} WHERE status IN ('pending', 'processing')").fetchone()
        duplicates = {
            name: conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {cols} HAVING count(*) > 1) d"
            ).fetchone()[0]
            for name, table, cols in (
                ("image_rows", II, "source, source_id"),
                ("image_vectors", IE, "image_id, model_id"),
                ("product_vectors", PV, "content_type_id, object_id, model_id"),
            )
        }
    empty_or_failing, shelf_duplicates, on_another_shelf = [], 0, set()
    shown = [obj for obj in products if obj in visible]
    for obj in shown:
        status, items = _similar(base_url, obj)
        ids = [str(item.get("product_id")) for item in items]
        # A product without a vector could still get a fallback shelf: only vector items count.
        if status != 200 or not any(str(item.get("source", "")).startswith("similar") for item in items):
            empty_or_failing.append(f"{obj}:{status}:{len(ids)}")
        shelf_duplicates += len(ids) - len(set(ids))
        on_another_shelf.update(i for i in ids if i != obj)
    duplicates["shelf_items"] = shelf_duplicates
    missing = sorted(set(no_vector) | {e.split(":")[0] for e in empty_or_failing})
    return {
        "products_checked": len(products),
        "products_checked_through_the_api": len(shown),
        "products_without_vector": no_vector,
        "products_with_empty_or_failing_shelf": empty_or_failing,
        "products_missing_from_shelves": len(missing),
        "products_on_another_products_shelf": len(on_another_shelf & set(shown)),
        "ready_images_without_vector": ready_without_embedding,
        "stuck_pending_or_processing": stuck,
        "duplicates": duplicates,
        "ok": not missing and not stuck and not ready_without_embedding and not any(duplicates.values()),
    }


def _similar(base_url: str, product_id: str) -> tuple[int, list[dict[str, Any]]]:
    """The public similar API's answer for one product: (status, items)."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/imgrec/products/{product_id}/similar/?limit=8", timeout=30) as r:
            body = json.loads(r.read())
            return r.status, body.get("results", body) if isinstance(body, dict) else body
    except urllib.error.HTTPError as exc:
        return exc.code, []
    except OSError:
        return 0, []
