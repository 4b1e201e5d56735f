"""The shop's rules for imgrec (README step 2)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from tests.integration.uuidshop.shop.models import Product


def recommendable() -> QuerySet:
    return Product.objects.filter(published=True)


def main_category(product: Any) -> str | None:
    """The category shown for a product (its first by slug), for labels and diversity."""
    first = product.categories.order_by("slug").first()
    return first.slug if first else None


def same_category(product: Any) -> Q:
    """Products sharing any category with ``product`` (applied in SQL by imgrec)."""
    return Q(categories__in=product.categories.all())
