"""Querysets for imgrec's models, including the k-NN vector queries."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from django.db import models
from django.db.models import Value
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, HalfVectorField, VectorField

# pgvector's HNSW limit for vector; above it indexes and queries cast to halfvec (limit 4,000).
HNSW_MAX_VECTOR_DIM = 2000


class IndexedImageQuerySet(models.QuerySet):
    """Queries over tracked images."""

    def for_product(self, content_type_id: int, object_id: str) -> IndexedImageQuerySet:
        return self.filter(content_type_id=content_type_id, object_id=str(object_id))

    def status_counts(self) -> dict[str, int]:
        rows = self.values_list("status").annotate(n=models.Count("pk")).order_by()
        return {status: n for status, n in rows}


def index_vector_type(dim: int) -> str:
    """``"vector"`` or ``"halfvec"``: the type HNSW indexes and k-NN queries cast to.

    ``halfvec`` above pgvector's 2,000-dimension limit for ``vector``, or everywhere with
    ``IMGREC["VECTOR_STORAGE"] = "halfvec"`` (half the index memory).
    """
    from imgrec_app.conf import imgrec_settings

    if dim > HNSW_MAX_VECTOR_DIM or imgrec_settings.VECTOR_STORAGE == "halfvec":
        return "halfvec"
    return "vector"


def cast_vector(dim: int) -> Cast:
    """The column cast to the model's size: the same expression as the model's HNSW index."""
    field = VectorField(dimensions=dim) if index_vector_type(dim) == "vector" else HalfVectorField(dimensions=dim)
    return Cast("vector", output_field=field)


class ProductVectorQuerySet(models.QuerySet):
    """Queries over product vectors; always scoped to one model."""

    def for_model(self, model_id: str, content_type_id: int | None = None) -> ProductVectorQuerySet:
        qs = self.filter(model_id=model_id)
        if content_type_id is not None:
            qs = qs.filter(content_type_id=content_type_id)
        return qs

    def nearest(self, vector: Sequence[float] | np.ndarray, *, dim: int) -> ProductVectorQuerySet:
        """Order by cosine distance to ``vector`` (annotated as ``distance``).

        Use with ``for_model()`` and a slice: the ``model_id`` filter and the cast match the
        partial HNSW index of that model, so Postgres walks the index instead of sorting the
        table.  When the queryset also filters on the shop's rules, run it inside
        :func:`imgrec_app.services.search.hnsw_session` so pgvector's iterative index scan keeps
        going until ``limit`` rows pass the filter (a plain HNSW scan stops after
        ``hnsw.ef_search`` candidates and may return fewer rows than asked).
        """
        return self.annotate(distance=CosineDistance(cast_vector(dim), Value(vector_literal(vector)))).order_by(
            "distance"
        )


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """pgvector's text form of a query vector, e.g. ``[0.5,-0.25]``.

    ``%.9g`` keeps every float32 exactly (9 significant digits); one ``%`` over a cached format
    string is about 8× faster than pgvector's own ``str()`` of each float, with a third less text
    to quote and parse: that formatting was the largest cost of a similar-products query in
    bench/vector_search.py.
    """
    values = np.asarray(vector, dtype=np.float32).ravel().tolist()
    return _literal_format(len(values)) % tuple(values)


@lru_cache(maxsize=8)
def _literal_format(size: int) -> str:
    return "[" + ",".join(["%.9g"] * size) + "]"
