"""Catalogue views of the demo shop: they use imgrec only through its public surface."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.generic import DetailView

from imgrec_app.services.recommend import search_by_photo
from imgrec_app.views import RecordViewMixin
from shop_demo.catalog.models import Category, Product


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
    if request.method == "POST":
        upload = request.FILES.get("image")
        if upload is None:
            context["error"] = "Choose a photo to upload."
        else:
            try:
                context["results"] = search_by_photo(upload, limit=12)
            except ValidationError as exc:
                context["error"] = " ".join(exc.messages)
            except LookupError as exc:
                context["error"] = str(exc)
    return render(request, "catalog/search_photo.html", context)
