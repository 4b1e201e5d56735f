"""Which Oscar products imgrec may put on a shelf, and how it reads their category.

``recommendable_products`` is Oscar's default partner strategy (``Default``: ``StockRequired``)
written as one queryset, so imgrec can apply it inside its vector queries: browsable (public, not
a child variant) and available to buy — a stock record with net stock (``num_in_stock -
num_allocated``) above zero, or any stock record when the product class does not track stock; a
parent product is available when one of its public children is.  Oscar's ``UseFirstStockRecord``
looks at the first stock record only; with several partners per product this rule accepts any of
them (a shop with its own strategy writes its own rule the same way).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from oscar.core.loading import get_model


def _sellable_stockrecords() -> QuerySet:
    StockRecord = get_model("partner", "StockRecord")
    net = Coalesce(F("num_in_stock"), Value(0)) - Coalesce(F("num_allocated"), Value(0))
    untracked = Q(product__product_class__track_stock=False) | Q(
        product__parent__product_class__track_stock=False
    )
    return StockRecord.objects.alias(net_stock=net).filter(Q(net_stock__gt=0) | untracked)


def recommendable_products() -> QuerySet:
    """Public, browsable products that Oscar's default strategy would sell now."""
    Product = get_model("catalogue", "Product")
    stock = _sellable_stockrecords()
    own = Exists(stock.filter(product=OuterRef("pk")))
    a_child = Exists(stock.filter(product__parent=OuterRef("pk"), product__is_public=True))
    return Product.objects.browsable().filter(own | a_child)


def product_category(product: Any) -> str | None:
    """The product's first public category (a child uses its parent's), else its product class."""
    category = product.get_categories().order_by("path").first()
    if category is not None:
        return category.full_slug
    product_class = product.get_product_class()
    return product_class.slug if product_class is not None else None
