"""k-NN over product vectors in pgvector, within the shop's rules, inside the SQL query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import QuerySet

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import pk_strings, product_content_type
from imgrec_app.models import ProductVector


@contextmanager
def hnsw_session(limit: int) -> Iterator[None]:
    """Run vector queries with pgvector settings fit for filtered shelves.

    A plain HNSW scan looks at ``hnsw.ef_search`` candidates and *then* applies the WHERE clause,
    so a filter keeping 1 % of products would return almost nothing.  pgvector 0.8's iterative
    scan (``relaxed_order``) keeps walking the graph until ``limit`` rows pass the filter (bounded
    by ``hnsw.max_scan_tuples``); ``ef_search`` is raised to at least the limit, since the scan
    can never return more rows than that per pass.  ``SET LOCAL`` scopes both to this transaction.
    """
    ef = max(int(imgrec_settings.HNSW_EF_SEARCH), int(limit))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), "
                "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                "set_config('hnsw.max_scan_tuples', %s, true)",
                [str(ef), str(int(imgrec_settings.HNSW_MAX_SCAN_TUPLES))],
            )
        yield


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
    qs = ProductVector.objects.for_model(model_id, product_content_type().pk)
    exclude = [str(e) for e in exclude_ids]
    if exclude:
        qs = qs.exclude(object_id__in=exclude)
    if restrict_to is not None:
        qs = qs.filter(object_id__in=pk_strings(restrict_to))
    qs = qs.nearest(np.asarray(vector, dtype=np.float32).tolist(), dim=dim).values_list(
        "object_id", "distance"
    )[:limit]
    if session:
        with hnsw_session(limit):
            rows = list(qs)
    else:
        rows = list(qs)
    # relaxed_order may return rows slightly out of order: sort the (small) result.
    rows.sort(key=lambda r: r[1])
    return [(obj, 1.0 - float(dist)) for obj, dist in rows]


def vectors_of(object_ids: Iterable[str], *, model_id: str) -> dict[str, np.ndarray]:
    """Product vectors of one model, by product id."""
    rows = ProductVector.objects.for_model(model_id, product_content_type().pk).filter(
        object_id__in=[str(o) for o in object_ids]
    ).values_list("object_id", "vector")
    return {obj: np.asarray(vec, dtype=np.float32) for obj, vec in rows}


def to_vector(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)
