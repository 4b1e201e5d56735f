"""The demo shop's rules: what may be recommended (published and in stock) and what a visitor
may see (published: the product page exists)."""

from __future__ import annotations

from django.db.models import QuerySet

from shop_demo.catalog.models import Product


def recommendable_products() -> QuerySet[Product]:
    return Product.objects.filter(published=True, stock__gt=0)


def visible_products() -> QuerySet[Product]:
    return Product.objects.filter(published=True)
