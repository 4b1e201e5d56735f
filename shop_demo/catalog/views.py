"""Catalogue views of the demo shop."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from shop_demo.catalog.models import Category, Product


def product_list(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    products = Product.objects.filter(published=True).select_related("category")
    category = None
    if slug:
        category = get_object_or_404(Category, slug=slug)
        products = products.filter(category=category)
    page = Paginator(products, 24).get_page(request.GET.get("page"))
    return render(
        request,
        "catalog/product_list.html",
        {"page": page, "category": category, "categories": Category.objects.all()},
    )


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    product = get_object_or_404(Product.objects.select_related("category"), slug=slug, published=True)
    return render(request, "catalog/product_detail.html", {"product": product, "categories": Category.objects.all()})
