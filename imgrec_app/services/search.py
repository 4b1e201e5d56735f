"""k-NN over product vectors in pgvector, within the shop's rules, inside the SQL query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db import connection, connections, transaction
from django.db.models import BinaryField, Exists, Func, OuterRef, QuerySet
from django.db.models.functions import Cast

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import product_content_type
from imgrec_app.models import ProductVector


def _session_settings(limit: int) -> tuple[str, list[str]]:
    """The statement that sets pgvector's search settings for the current transaction.

    ``enable_sort = off``: pgvector costs an HNSW scan by ``ef_search``, while Postgres costs a
    1280-float distance like any cheap operator, so from about 100,000 products and
    ``ef_search`` 200 (100 is close) the planner prefers a parallel sequential scan + sort: exact,
    but ~100× slower (bench/vector_search.py).  The k-NN query needs no sort when it walks the
    index.  Both paths reset it right after the vector queries (:data:`_RESTORE`; in the same
    statement on the one-round-trip path), so later queries of an enclosing transaction plan
    normally.
    """
    ef = max(int(imgrec_settings.HNSW_EF_SEARCH), int(limit))
    return (
        "SELECT set_config('hnsw.ef_search', %s, true), "
        "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
        "set_config('hnsw.max_scan_tuples', %s, true), "
        "set_config('enable_sort', 'off', true)",
        [str(ef), str(int(imgrec_settings.HNSW_MAX_SCAN_TUPLES))],
    )


# Back to the session's value for later queries of an enclosing (ATOMIC_REQUESTS) transaction.
_RESTORE = "RESET enable_sort"


@contextmanager
def hnsw_session(limit: int) -> Iterator[None]:
    """Run vector queries with pgvector settings fit for filtered shelves.

    A plain HNSW scan looks at ``hnsw.ef_search`` candidates and *then* applies the WHERE clause,
    so a filter keeping 1 % of products would return almost nothing.  pgvector 0.8's iterative
    scan (``relaxed_order``) keeps walking the graph until ``limit`` rows pass the filter (bounded
    by ``hnsw.max_scan_tuples``); ``ef_search`` is raised to at least the limit, since the scan
    can never return more rows than that per pass.  ``SET LOCAL`` scopes both to this transaction.
    """
    sql, params = _session_settings(limit)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        try:
            yield
        finally:
            # enable_sort=off must not outlive the k-NN queries inside an enclosing transaction
            # (ATOMIC_REQUESTS): the rest of the request plans its queries normally.
            if not connection.needs_rollback:
                with connection.cursor() as cursor:
                    cursor.execute(_RESTORE)


def _one_round_trip(qs: QuerySet, limit: int) -> list[tuple[str, float]] | None:
    """Run the settings and the query as one multi-statement string, or None where unsupported.

    Postgres runs the statements of one simple-protocol query string as one implicit
    transaction, so ``set_config(..., true)`` applies to the k-NN query and ends with it (safe
    behind a transaction-pooling proxy) without the BEGIN, SET and COMMIT round trips of
    :func:`hnsw_session`: those cost more than the index scan itself (bench/vector_search.py).
    Needs psycopg 3's client-side binding (Django's default); server-side binding cannot send
    two statements at once and psycopg 2 has no ``nextset()``, so both use :func:`hnsw_session`.
    """
    db = connections[qs.db]
    if db.vendor != "postgresql" or db.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        return None
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return None
    try:
        sql, params = qs.query.get_compiler(using=qs.db).as_sql()
    except EmptyResultSet:
        return []
    settings_sql, settings_params = _session_settings(limit)
    with db.cursor() as cursor:
        cursor.execute(f"{settings_sql}; {sql}; {_RESTORE}", [*settings_params, *params])
        cursor.nextset()
        return [(obj, dist) for obj, dist in cursor.fetchall()]


# Joins planned in the order written (``join_collapse_limit`` 1), for statements whose joins are
# a chain of LEFT JOINs from a few dozen candidates: the similar shelf's statement spent 3-10 ms
# of planning searching join orders (more than its execution, bench/similar_peer.py), 1.5 ms so.
_AS_WRITTEN = ("SELECT set_config('join_collapse_limit', '1', true)", "RESET join_collapse_limit")


def run_knn_statement(
    sql: str, params: Sequence[Any], *, limit: int, using: str = "default", as_written: bool = False
) -> list[tuple]:
    """Run one k-NN statement with pgvector's settings (:func:`_session_settings`); its rows.

    One round trip where psycopg 3's client-side binding allows it (settings, statement and
    :data:`_RESTORE` as one multi-statement string, see :func:`_one_round_trip`); otherwise in a
    transaction of its own: BEGIN, settings, statement, reset, COMMIT.  ``as_written``: joins
    planned in the order written (:data:`_AS_WRITTEN`).
    """
    db = connections[using]
    settings_sql, settings_params = _session_settings(limit)
    before, after = (
        (f"{settings_sql}; {_AS_WRITTEN[0]}", f"{_RESTORE}; {_AS_WRITTEN[1]}")
        if as_written
        else (settings_sql, _RESTORE)
    )
    if _multi_statement_ok(db):
        with db.cursor() as cursor:
            cursor.execute(f"{before}; {sql}; {after}", [*settings_params, *params])
            cursor.nextset()
            if as_written:
                cursor.nextset()
            return cursor.fetchall()
    with transaction.atomic(using=using), db.cursor() as cursor:
        cursor.execute(settings_sql, settings_params)
        if as_written:
            cursor.execute(_AS_WRITTEN[0])
        cursor.execute(sql, list(params))
        rows = cursor.fetchall()
        cursor.execute(_RESTORE)
        if as_written:
            cursor.execute(_AS_WRITTEN[1])
        return rows


def _multi_statement_ok(db: Any) -> bool:
    if db.vendor != "postgresql" or db.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def _allowed_by(restrict_to: QuerySet) -> Exists:
    """``EXISTS (SELECT 1 FROM products WHERE <rules> AND pk = object_id::<pk type>)``.

    Not ``object_id IN (SELECT pk::text ...)``: Postgres plans that as a semi join over every
    allowed product, and at 100,000 products either sorted them all by distance (exact, 1.3 s)
    or, with sorting off, re-scanned the list for each index candidate (~200 ms).  The cast is on
    ``object_id`` so the product's primary-key index answers each candidate the HNSW scan yields
    (2–10 ms, bench/vector_search.py).
    """
    pk = restrict_to.model._meta.pk
    field = pk.target_field if pk.is_relation else pk
    return Exists(restrict_to.order_by().filter(pk=Cast(OuterRef("object_id"), output_field=field)))


def nearest_query(
    vector: Sequence[float] | np.ndarray,
    *,
    model_id: str,
    dim: int,
    limit: int,
    restrict_to: QuerySet | None = None,
    exclude_ids: Iterable[str] = (),
) -> Any:
    """The query :func:`nearest` runs, not run: ``(object_id, cosine distance)`` rows, nearest
    first (up to ``relaxed_order``), the shop's rules inside (arguments as :func:`nearest`)."""
    qs = ProductVector.objects.for_model(model_id, product_content_type().pk)
    exclude = [str(e) for e in exclude_ids]
    if exclude:
        qs = qs.exclude(object_id__in=exclude)
    if restrict_to is not None:
        qs = qs.filter(_allowed_by(restrict_to))
    return qs.nearest(vector, dim=dim).values_list("object_id", "distance")[:limit]


def nearest(
    vector: Sequence[float] | np.ndarray,
    *,
    model_id: str,
    dim: int,
    limit: int,
    restrict_to: QuerySet | None = None,
    exclude_ids: Iterable[str] = (),
    session: bool = True,
) -> list[tuple[str, float]]:
    """The ``limit`` nearest products to ``vector`` by cosine distance, nearest first.

    Args:
        vector: the query vector (unit length).
        model_id: only vectors of this model are searched (never mixed).
        dim: the model's dimension (the cast that matches its HNSW index).
        limit: how many products to return.
        restrict_to: a queryset of the product model (the shop's rules, a category, ...);
            applied inside the SQL query as a subquery.
        exclude_ids: product ids (as text) to leave out.
        session: set up :func:`hnsw_session` here; pass False when the caller runs several
            queries inside one session it opened itself.

    Returns:
        ``(object_id, similarity)`` pairs, similarity = 1 - cosine distance.
    """
    qs = nearest_query(
        vector, model_id=model_id, dim=dim, limit=limit, restrict_to=restrict_to, exclude_ids=exclude_ids
    )
    rows = _one_round_trip(qs, limit) if session else None
    if rows is None and session:
        with hnsw_session(limit):
            rows = list(qs)
    elif rows is None:
        rows = list(qs)
    # relaxed_order may return rows slightly out of order: sort the (small) result.
    rows.sort(key=lambda r: r[1])
    return [(obj, 1.0 - float(dist)) for obj, dist in rows]


def vectors_of(object_ids: Iterable[str], *, model_id: str) -> dict[str, np.ndarray]:
    """Product vectors of one model, by product id.

    Read in pgvector's binary form (``vector_send``: a 4-byte header, then big-endian float4s):
    parsing the text form float by float cost ~20 ms of a similar-products request that reads
    ~90 candidate vectors (bench/serving_load.py); ``np.frombuffer`` takes microseconds.
    """
    rows = (
        ProductVector.objects.for_model(model_id, product_content_type().pk)
        .filter(object_id__in=[str(o) for o in object_ids])
        .annotate(_imgrec_binary=Func("vector", function="vector_send", output_field=BinaryField()))
        .values_list("object_id", "_imgrec_binary")
    )
    return {obj: _from_binary(data) for obj, data in rows}


def _from_binary(data: bytes | memoryview) -> np.ndarray:
    return vector_from_binary(data)


def vector_from_binary(data: bytes | memoryview, *, halfvec: bool = False) -> np.ndarray:
    """A vector from pgvector's binary form (``vector_send`` / ``halfvec_send``) as float32."""
    raw = bytes(data)
    dim = int.from_bytes(raw[:2], "big")
    vec = np.frombuffer(raw, dtype=">f2" if halfvec else ">f4", count=dim, offset=4)
    return vec.astype(np.float32)


def to_vector(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)
