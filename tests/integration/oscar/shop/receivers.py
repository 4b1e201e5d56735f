"""Feed Oscar's product page views and basket additions into imgrec's browsing history."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from oscar.apps.basket.signals import basket_addition
from oscar.apps.catalogue.signals import product_viewed

from imgrec_app.services import history


@receiver(product_viewed, dispatch_uid="oscar_shop.imgrec_record_view")
def record_product_view(sender: Any, product: Any, request: Any, **kwargs: Any) -> None:
    """Oscar's ProductDetailView sends ``product_viewed`` for every product page it serves."""
    history.record(request, product, kind="view")


@receiver(basket_addition, dispatch_uid="oscar_shop.imgrec_record_cart")
def record_basket_addition(sender: Any, product: Any, request: Any, **kwargs: Any) -> None:
    """Oscar's BasketAddView sends ``basket_addition``; a cart event weighs more than a view."""
    history.record(request, product, kind="cart")
