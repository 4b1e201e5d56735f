"""The demo shop's rule for what may be recommended: published and in stock."""

from __future__ import annotations

from django.db.models import QuerySet

from shop_demo.catalog.models import Product


def recommendable_products() -> QuerySet[Product]:
    return Product.objects.filter(published=True, stock__gt=0)
