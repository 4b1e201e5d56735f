from typing import Any

import pytest
from django.test import Client, RequestFactory

from tests.integration.oscar.test_oscar_shop import HISTORY, view

pytestmark = [pytest.mark.worker, pytest.mark.django_db]


def test_debug(indexed_shop: Any) -> None:
    from imgrec_app.services import foryou, recommend
    from imgrec_app.hosts import product_category
    cat = indexed_shop.catalogue
    print("\nKINDS", {pk: k for pk, k in cat.kind_of.items()}, "UNSELLABLE", cat.unsellable)
    for p in cat.products.values():
        print("CAT", p.pk, product_category(p))
    for kind, (slugs, top) in HISTORY.items():
        visitor = Client()
        seen = [cat.products[s] for s in slugs]
        for product in seen:
            view(visitor, product)
        page = view(visitor, seen[0])
        print("KIND", kind, "seen", [p.pk for p in seen], "page", page)
        sim = recommend.similar_products(seen[0], limit=6, attach=False)
        print("  similar", [(i.product_id, cat.kind_of[int(i.product_id)], round(i.score, 3)) for i in sim])
        req = RequestFactory().get("/")
        req.session = visitor.session
        from django.contrib.auth.models import AnonymousUser
        req.user = AnonymousUser()
        items = foryou.recommended_for_you(req, limit=6, attach=False)
        print("  for-you (no product)", [(i.product_id, cat.kind_of[int(i.product_id)], i.source, round(i.score, 3)) for i in items])
        items = foryou.for_product_page(req, seen[0], limit=6, similar_limit=6, attach=False)
        print("  for-you (page)", [(i.product_id, cat.kind_of[int(i.product_id)], i.source, round(i.score, 3)) for i in items])
        pool = foryou.gather(req, limit=6, weights=foryou.foryou_weights(), product=seen[0], exclude=foryou.page_exclusions(req, seen[0], limit=6))
        for s in pool.scored:
            print("   cand", s.product_id, cat.kind_of[int(s.product_id)], s.category, {k: round(v, 3) for k, v in s.features.items()})
