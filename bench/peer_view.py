"""The peers imgrec is measured against: what a shop developer would write by hand.

``GET bench/peer/products/<id>/similar/``, the peer of ``GET products/<id>/similar/``: one DRF
view, one SQL statement: ``ORDER BY vector <=> (SELECT vector … WHERE object_id = %s)
LIMIT 11`` on imgrec's own ``ProductVector`` table, with the cast and ``model_id`` filter of the
serving model's partial HNSW index (so it walks the same index).  No shop rules, no fusion, no
near-duplicate step, no names or image URLs: ids and scores only.  ``bench/similar_peer.py`` serves
it beside imgrec's URLs (``ROOT_URLCONF = "bench.peer_view"``) and times both in one run.

``GET bench/peer/p/<slug>/``, the peer of the demo's product page: the same view query and the same
template without imgrec's shelves (the ``{% imgrec_…_shelf %}`` lines taken out of
``catalog/product_detail.html`` when first used, so it follows the real page) and without recording
the view in the visitor's history: the page a shop without imgrec serves.  ``bench/serving_load.py``
requests it beside the real page under the same load.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
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


PRODUCT_TEMPLATE = Path(__file__).resolve().parent.parent / "shop_demo/catalog/templates/catalog/product_detail.html"


@lru_cache(maxsize=1)
def _page_without_shelves() -> Any:
    from django.template import engines

    lines = PRODUCT_TEMPLATE.read_text().splitlines()
    kept = [line for line in lines if not line.lstrip().startswith("{% imgrec_")]
    assert len(kept) < len(lines), "no shelf tags found in the product template"
    return engines["django"].from_string("\n".join(kept))


def peer_product_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The demo's product page without imgrec's shelves and without recording the view."""
    from shop_demo.catalog.models import Product

    product = get_object_or_404(Product.objects.filter(published=True).select_related("category"), slug=slug)
    return HttpResponse(_page_without_shelves().render({"product": product}, request))


urlpatterns = [
    path("bench/peer/products/<str:product_id>/similar/", PeerSimilarView.as_view(), name="peer-similar"),
    path("bench/peer/p/<slug:slug>/", peer_product_page, name="peer-product-page"),
    path("", include("shop_demo.urls")),
]
