"""Frequently bought together: products shoppers put in one basket, from cart and purchase events.

imgrec has no orders table (the shop has), so a *basket* is one shopper's cart and purchase events
within ``BOUGHT_TOGETHER_WINDOW_HOURS`` of each other: two products count as bought together by a
shopper when both were added to the cart or bought within that window.  A pair enters the shelf
once ``BOUGHT_TOGETHER_MIN_SUPPORT`` different shoppers did so (fewer is noise, and one shopper's
basket must not show up on a public shelf).  The table is rebuilt by one SQL statement.

The shelf applies the shop's rules inside SQL, ranks by shoppers, and fills up with a labelled
fallback: best sellers of the product's category, then of the shop.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import (
    category_field_lookup,
    product_category,
    product_content_type,
    product_key,
    recommendable_products,
)
from imgrec_app.models import BoughtTogether, Interaction
from imgrec_app.services.recommend import Recommendation, attach_products, clamp_limit

BASKET_KINDS = (Interaction.Kind.CART, Interaction.Kind.PURCHASE)

REASON = _("Frequently bought together")
REASON_CATEGORY = _("Best seller in this category")
REASON_SHOP = _("Best seller")


def refresh(*, days: int | None = None) -> int:
    """Rebuild the bought-together pairs from recent cart and purchase events; returns the pairs.

    Args:
        days: how far back to read events (default ``BOUGHT_TOGETHER_DAYS``).
    """
    since = timezone.now() - timedelta(days=days or imgrec_settings.BOUGHT_TOGETHER_DAYS)
    window = timedelta(hours=float(imgrec_settings.BOUGHT_TOGETHER_WINDOW_HOURS))
    table, inter = BoughtTogether._meta.db_table, Interaction._meta.db_table
    # psycopg adapts timedelta to interval; django-stubs' parameter type leaves it out.
    params: list[Any] = [
        since,
        [str(k) for k in BASKET_KINDS],
        window,
        window,
        int(imgrec_settings.BOUGHT_TOGETHER_MIN_SUPPORT),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
        cursor.execute(
            f"""
            WITH events AS (
                SELECT content_type_id, object_id, created_at,
                       COALESCE(user_id::text, visitor_id::text) AS owner
                FROM {inter}
                WHERE created_at >= %s AND kind = ANY(%s)
            )
            INSERT INTO {table} (content_type_id, object_id, other_id, shoppers, updated_at)
            SELECT a.content_type_id, a.object_id, b.object_id, count(DISTINCT a.owner), now()
            FROM events a JOIN events b
              ON a.owner = b.owner AND a.content_type_id = b.content_type_id
             AND a.object_id <> b.object_id
             AND b.created_at BETWEEN a.created_at - %s AND a.created_at + %s
            GROUP BY a.content_type_id, a.object_id, b.object_id
            HAVING count(DISTINCT a.owner) >= %s
            """,
            params,
        )
        return cursor.rowcount


def bought_together(product: Any, *, limit: int = 8, attach: bool = True) -> list[Recommendation]:
    """The "frequently bought together" shelf of one product.

    Args:
        product: a product instance of the host's product model.
        limit: shelf length (clamped to ``MAX_LIMIT``).
        attach: load the product instances onto the items (``item.product``).

    Returns:
        Items with ``source`` ``"bought_together"`` (score = shoppers), then labelled fallbacks
        ``"fallback:bestsellers_category"`` and ``"fallback:bestsellers"``.
    """
    limit = clamp_limit(limit)
    key = product_key(product)
    rules = recommendable_products()
    pairs = (
        BoughtTogether.objects.filter(content_type=product_content_type(), object_id=key)
        .filter(_allowed(rules, "other_id"))
        .order_by("-shoppers", "other_id")
        .values_list("other_id", "shoppers")[:limit]
    )
    items = [Recommendation(other, float(n), str(REASON), "bought_together", [key]) for other, n in pairs]
    if len(items) < limit:
        items += _best_sellers(product, limit=limit - len(items), exclude={key} | {i.product_id for i in items})
    return attach_products(items) if attach else items


def _allowed(rules: QuerySet, column: str) -> Exists:
    """The shop's rules on a text product-id column (cast to the pk type, like k-NN queries)."""
    pk = rules.model._meta.pk
    field = pk.target_field if pk.is_relation else pk
    return Exists(rules.order_by().filter(pk=Cast(OuterRef(column), output_field=field)))


def best_sellers(*, scope: QuerySet | None = None, limit: int, exclude: set[str]) -> list[tuple[str, float]]:
    """``(product id, basket events)`` of the most carted/bought products in ``scope`` (the rules)."""
    since = timezone.now() - timedelta(days=imgrec_settings.BOUGHT_TOGETHER_DAYS)
    scope = recommendable_products() if scope is None else scope
    rows = (
        Interaction.objects.filter(content_type=product_content_type(), kind__in=BASKET_KINDS, created_at__gte=since)
        .exclude(object_id__in=exclude)
        .filter(_allowed(scope, "object_id"))
        .values("object_id")
        .annotate(n=Count("pk"))
        .order_by("-n", "object_id")
        .values_list("object_id", "n")[:limit]
    )
    return [(obj, float(n)) for obj, n in rows]


def category_scope(product: Any) -> QuerySet | None:
    """The shop's rules within the product's category, or None when categories are not a field."""
    lookup, category = category_field_lookup(), product_category(product)
    if not lookup or category is None:
        return None
    return recommendable_products().filter(**{lookup: category})


def _best_sellers(product: Any, *, limit: int, exclude: set[str]) -> list[Recommendation]:
    """The labelled fallback: best sellers of the product's category, then of the shop."""
    items: list[Recommendation] = []
    scopes: list[tuple[QuerySet | None, Any, str]] = []
    same = category_scope(product)
    if same is not None:
        scopes.append((same, REASON_CATEGORY, "fallback:bestsellers_category"))
    scopes.append((None, REASON_SHOP, "fallback:bestsellers"))
    for scope, reason, source in scopes:
        if len(items) >= limit:
            break
        taken = exclude | {i.product_id for i in items}
        rows = best_sellers(scope=scope, limit=limit - len(items), exclude=taken)
        items += [Recommendation(obj, n, str(reason), source) for obj, n in rows]
    return items
