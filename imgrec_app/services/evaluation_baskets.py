"""Evaluation of "frequently bought together" on the shop's real baskets (held out, rolled back).

Shoppers whose cart/purchase events hold at least two products are split at random: for a test
share of them (20 %) the *last* basket event is held out — deleted inside a transaction that is
rolled back — the pairs are rebuilt from everything else, and the shelf of the product the shopper
put in the basket just before is scored on whether it contains the held-out product.  The
baselines see the same remaining events.  Only real events count: a simulated basket would measure the simulation.
"""

from __future__ import annotations

import random
from typing import Any

from django.db.models import Count

from imgrec_app.hosts import get_product_model, product_content_type
from imgrec_app.models import Interaction
from imgrec_app.services import bought_together as bt
from imgrec_app.services.evaluation import rolled_back

MIN_BASKETS = 20


def evaluate_bought_together(
    *, k: int = 4, min_baskets: int = MIN_BASKETS, test_share: float = 0.2, seed: int = 0
) -> dict[str, Any]:
    """Hit rate@k of the bought-together shelf vs best sellers, on held-out basket events.

    Returns:
        ``{"baskets": n, "methods": {name: hit rate}}``, or ``{"baskets": n, "note": ...}``
        when fewer than ``min_baskets`` shoppers have two basket products.
    """
    ct = product_content_type()
    owners = list(
        Interaction.objects.filter(content_type=ct, kind__in=bt.BASKET_KINDS)
        .values("user_id", "visitor_id")
        .annotate(n=Count("object_id", distinct=True))
        .filter(n__gte=2)
        .order_by("user_id", "visitor_id")
        .values_list("user_id", "visitor_id")
    )
    if len(owners) < min_baskets:
        return {
            "baskets": len(owners),
            "note": f"needs {min_baskets} shoppers with two products in a basket (cart or purchase events)",
        }
    hits = {"bought_together": 0, "best_sellers_category": 0, "best_sellers": 0}
    cases = 0
    model = get_product_model()
    with rolled_back():
        held = []
        tested = random.Random(seed).sample(owners, max(1, round(len(owners) * test_share)))
        for user_id, visitor_id in tested:
            events = list(
                Interaction.objects.filter(
                    content_type=ct, kind__in=bt.BASKET_KINDS, user_id=user_id, visitor_id=visitor_id
                ).order_by("-created_at", "-pk")[:20]
            )
            last = events[0]
            before = next((e for e in events[1:] if e.object_id != last.object_id), None)
            if before is None:
                continue
            held.append((before.object_id, last.object_id))
            Interaction.objects.filter(pk=last.pk).delete()
        bt.refresh()
        products = model._default_manager.in_bulk([model._meta.pk.to_python(q) for q, _ in held])
        for query, target in held:
            product = products.get(model._meta.pk.to_python(query))
            if product is None:
                continue
            cases += 1
            shelf = [i.product_id for i in bt.bought_together(product, limit=k, attach=False)]
            same = bt.category_scope(product)
            category = [obj for obj, _ in bt.best_sellers(scope=same, limit=k, exclude={query})] if same else []
            shop = [obj for obj, _ in bt.best_sellers(limit=k, exclude={query})]
            hits["bought_together"] += target in shelf
            hits["best_sellers_category"] += target in category
            hits["best_sellers"] += target in shop
    return {
        "baskets": cases,
        "k": k,
        "methods": {name: (n / cases if cases else None) for name, n in hits.items()},
    }
