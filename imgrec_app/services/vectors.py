"""Product vectors and their per-model HNSW indexes.

The ``vector`` columns are unsized so that two models (of different sizes) can coexist during a
switch.  Each model gets a *partial expression* HNSW index, the pgvector FAQ's answer for mixed
dimensions: ``USING hnsw ((vector::vector(1280)) vector_cosine_ops) WHERE model_id = '...'``.
Queries cast the column the same way and filter on the same ``model_id``, so the planner can use
that index; a query never mixes models.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable

from django.db import connection, transaction

from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector
from imgrec_app.querysets import index_vector_type
from imgrec_app.services import learned

logger = logging.getLogger(__name__)

_MODEL_ID_RE = re.compile(r"^[\w.:\-]+$")
_ensured: set[tuple[str, str, int]] = set()


def vector_type(dim: int) -> str:
    return index_vector_type(dim)


def index_name(table: str, model_id: str) -> str:
    """The model's HNSW index; with ``VECTOR_STORAGE = "halfvec"`` a separate one (``…_h``)."""
    from imgrec_app.conf import imgrec_settings

    digest = hashlib.sha1(model_id.encode()).hexdigest()[:12]
    suffix = "_h" if imgrec_settings.VECTOR_STORAGE == "halfvec" else ""
    return f"imgrec_{'pv' if table.endswith('productvector') else 'ie'}_{digest}{suffix}"


def ensure_hnsw_index(model_id: str, dim: int, *, table: str | None = None) -> str:
    """Create the HNSW cosine index for one model's product vectors if it does not exist."""
    if not _MODEL_ID_RE.match(model_id):
        raise ValueError(f"Unsafe model id {model_id!r}")
    table = table or ProductVector._meta.db_table
    name = index_name(table, model_id)
    key = (connection.alias, table + name, dim)
    if key in _ensured:
        return name
    with connection.cursor() as cursor:
        # pg_index, not pg_indexes: a failed CREATE INDEX CONCURRENTLY leaves an INVALID index
        # that pg_indexes lists but the planner never uses; it is dropped and built again.
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
        row = cursor.fetchone()
        concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
        if row is not None and not row[0]:
            logger.warning("HNSW index %s is INVALID (a failed concurrent build?): rebuilding it", name)
            cursor.execute(f"DROP INDEX {concurrently}IF EXISTS {name}")
            row = None
        if row is None:
            vt = vector_type(dim)
            # CONCURRENTLY keeps writes flowing on a live shop; it cannot run in a transaction.
            if connection.in_atomic_block:
                # Deferred FK checks of rows written earlier in this transaction would block it.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {table} "
                f"USING hnsw ((vector::{vt}({dim})) {vt}_cosine_ops) "
                f"WHERE model_id = '{model_id}'"
            )
            logger.info("Created HNSW index %s for %s (%s dims)", name, model_id, dim)
    _ensured.add(key)
    return name


def refresh_product_vectors(products: Iterable[tuple[int, str]], model_id: str) -> int:
    """Recompute the image vectors of some products: the normalised mean of their images.

    Args:
        products: ``(content_type_id, object_id)`` pairs.
        model_id: whose vectors to aggregate.

    Returns:
        The number of product vectors written.
    """
    pairs = sorted(set(products))
    if not pairs:
        return 0
    ct_ids = [ct for ct, _ in pairs]
    obj_ids = [obj for _, obj in pairs]
    pv, ie, ii = (
        ProductVector._meta.db_table,
        ImageEmbedding._meta.db_table,
        IndexedImage._meta.db_table,
    )
    with transaction.atomic(), connection.cursor() as cursor:
        # avg() and l2_normalize() run inside Postgres: one statement for the whole set.
        cursor.execute(
            f"""
            WITH targets AS (
                SELECT * FROM unnest(%s::bigint[], %s::text[]) AS t(content_type_id, object_id)
            ), agg AS (
                SELECT i.content_type_id, i.object_id,
                       l2_normalize(avg(e.vector)) AS vector, count(*) AS n
                FROM {ie} e
                JOIN {ii} i ON i.id = e.image_id
                JOIN targets t ON t.content_type_id = i.content_type_id
                              AND t.object_id = i.object_id
                WHERE e.model_id = %s
                GROUP BY i.content_type_id, i.object_id
            ), upserted AS (
                INSERT INTO {pv} (content_type_id, object_id, modality, model_id, vector,
                                  source_count, source_hash, labels, updated_at)
                SELECT content_type_id, object_id, 'image', %s, vector, n, '', '[]'::jsonb, now()
                FROM agg
                ON CONFLICT (content_type_id, object_id, model_id) DO UPDATE
                    SET vector = EXCLUDED.vector, source_count = EXCLUDED.source_count,
                        updated_at = now()
                RETURNING 1
            ), removed AS (
                DELETE FROM {pv} p USING targets t
                WHERE p.content_type_id = t.content_type_id AND p.object_id = t.object_id
                  AND p.model_id = %s
                  AND NOT EXISTS (SELECT 1 FROM agg a WHERE a.content_type_id = t.content_type_id
                                                        AND a.object_id = t.object_id)
            )
            SELECT count(*) FROM upserted
            """,
            [ct_ids, obj_ids, model_id, model_id, model_id],
        )
        written = cursor.fetchone()[0]
    _refresh_product_labels(pairs, model_id)
    # The active run's learned vectors are made from these base vectors: follow them.
    learned.refresh(pairs, changed_model_id=model_id)
    return written


def _refresh_product_labels(pairs: list[tuple[int, str]], model_id: str) -> None:
    """Average the generic labels of each product's images (top 5 kept)."""
    rows = ImageEmbedding.objects.filter(
        model_id=model_id,
        image__content_type_id__in={ct for ct, _ in pairs},
        image__object_id__in={obj for _, obj in pairs},
    ).values_list("image__content_type_id", "image__object_id", "labels")
    merged: dict[tuple[int, str], dict[str, float]] = {}
    counts: dict[tuple[int, str], int] = {}
    for ct, obj, labels in rows:
        key = (ct, obj)
        counts[key] = counts.get(key, 0) + 1
        bucket = merged.setdefault(key, {})
        for item in labels or []:
            bucket[item["label"]] = bucket.get(item["label"], 0.0) + float(item["score"])
    for key, bucket in merged.items():
        top = sorted(bucket.items(), key=lambda kv: -kv[1])[:5]
        labels = [{"label": k, "score": round(v / counts[key], 4)} for k, v in top]
        ProductVector.objects.filter(content_type_id=key[0], object_id=key[1], model_id=model_id).update(labels=labels)
