"""Catalogue views of the demo shop: they use imgrec only through its public surface."""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.generic import DetailView

from imgrec_app.services import throttle
from imgrec_app.views import RecordViewMixin
from shop_demo.catalog.models import Category, Product

logger = logging.getLogger(__name__)


def product_list(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    products = Product.objects.filter(published=True).select_related("category")
    category = None
    if slug:
        category = get_object_or_404(Category, slug=slug)
        products = products.filter(category=category)
    query = request.GET.get("q", "").strip()
    if query:
        products = products.filter(name__icontains=query)
    page = Paginator(products, 24).get_page(request.GET.get("page"))
    return render(request, "catalog/product_list.html", {"page": page, "category": category, "query": query})


class ProductDetailView(RecordViewMixin, DetailView):
    """A product page; imgrec records the view and the template shows both shelves."""

    queryset = Product.objects.filter(published=True).select_related("category")
    template_name = "catalog/product_detail.html"
    context_object_name = "product"


def search_photo(request: HttpRequest) -> HttpResponse:
    """Search by photo: upload an image, see products that look like it."""
    context: dict[str, Any] = {}
    status, retry_after = 200, None
    if request.method == "POST":
        upload = request.FILES.get("image")
        if upload is None:
            context["error"] = "Choose a photo to upload."
        else:
            try:
                # imgrec's throttled, memory-bounded search: the same budget as the API's.
                context["results"] = throttle.search_by_photo(request, upload, limit=12)
                context["query_photo"] = _thumbnail_data_url(upload)
            except (throttle.Throttled, throttle.Busy) as exc:
                context["error"] = str(exc)
                status = 429 if isinstance(exc, throttle.Throttled) else 503
                retry_after = exc.retry_after
            except ValidationError as exc:
                context["error"] = " ".join(exc.messages)
            except LookupError as exc:
                context["error"] = str(exc)
    response = render(request, "catalog/search_photo.html", context, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _thumbnail_data_url(upload: Any, size: int = 192) -> str:
    """A small PNG of the visitor's photo inlined in the results page (nothing is stored).

    Only called after ``search_by_photo`` validated the upload; returns "" if it cannot be shown.
    """
    from PIL import Image

    try:
        upload.seek(0)
        with Image.open(upload) as img:
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.convert("RGBA").save(buf, "PNG")
    except Exception:
        logger.warning("could not make a preview of a searched photo", exc_info=True)
        return ""
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def your_history(request: HttpRequest) -> HttpResponse:
    """The visitor's own page: imgrec's shopper controls (pause, clear, not interested) and recent views."""
    return render(request, "catalog/history.html")
