"""The peer of ``GET products/<id>/similar/``: what a shop developer would write by hand.

One DRF view, one SQL statement: ``ORDER BY vector <=> (SELECT vector … WHERE object_id = %s)
LIMIT 11`` on imgrec's own ``ProductVector`` table, with the cast and ``model_id`` filter of the
serving model's partial HNSW index (so it walks the same index).  No shop rules, no fusion, no
near-duplicate step, no names or image URLs: ids and scores only.  ``bench/similar_peer.py`` serves
it beside imgrec's URLs (``ROOT_URLCONF = "bench.peer_view"``) and times both in one run.
"""

from __future__ import annotations

from functools import lru_cache

from django.db import connection
from django.urls import include, path
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


@lru_cache(maxsize=1)
def _model() -> tuple[str, int, int]:
    """(model id, dimensions, product content type id), read once per process like a constant."""
    from imgrec_app.hosts import product_content_type
    from imgrec_app.models import ServingModel

    serving = ServingModel.objects.get(modality="image")
    return serving.model_id, serving.dimensions, product_content_type().pk


class PeerSimilarView(APIView):
    """``GET bench/peer/products/<id>/similar/``: the 10 nearest products by image vector."""

    permission_classes = [permissions.AllowAny]

    def get(self, request: Request, product_id: str) -> Response:
        from imgrec_app.models import ProductVector

        from imgrec_app.querysets import index_vector_type

        model_id, dim, ct = _model()
        vt = index_vector_type(dim)  # the serving index's type (VECTOR_STORAGE)
        table = ProductVector._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT object_id, vector::{vt}({dim}) <=> (SELECT vector::{vt}({dim}) FROM {table} "
                "      WHERE model_id = %s AND content_type_id = %s AND object_id = %s) AS distance "
                f"FROM {table} WHERE model_id = %s AND content_type_id = %s ORDER BY distance LIMIT 11",
                [model_id, ct, product_id, model_id, ct],
            )
            rows = cursor.fetchall()
        results = [{"product_id": o, "score": round(1.0 - float(d), 4)} for o, d in rows if o != product_id][:10]
        return Response({"results": results})


urlpatterns = [
    path("bench/peer/products/<str:product_id>/similar/", PeerSimilarView.as_view(), name="peer-similar"),
    path("", include("shop_demo.urls")),
]
