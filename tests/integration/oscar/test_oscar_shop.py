"""imgrec installed into an existing django-oscar shop: Oscar's own products and images,
backfilled in place, shown on Oscar's product page within Oscar's stock rules, with history fed
by Oscar's ``product_viewed`` signal.  Real Postgres+pgvector, Redis, Celery worker and weights.

Run: ``python -m pytest tests/integration/oscar --ds=tests.integration.oscar.settings``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.integration.oscar.conftest import backfill

pytestmark = [pytest.mark.worker, pytest.mark.django_db]

OSCAR_SOURCE = "catalogue.productimage.original"
SHOP_TEMPLATES = Path(settings.TEMPLATES[0]["DIRS"][0])
SHELF_RE = re.compile(r'<section class="imgrec-shelf imgrec-shelf--(\w+)".*?</section>', re.DOTALL)
# Shelf links carry the shelf's signed recommendation id (``?imgrec=…``, issue 15) when tracking is on.
PRODUCT_LINK_RE = re.compile(r'<a href="/catalogue/[\w-]+_(\d+)/(?:\?imgrec=[^"]+)?">')
# Products whose nearest sellable neighbours are clearly their own kind (measured margins of
# 0.08 to 0.2 in cosine similarity between the 3rd same-kind and the best other-kind neighbour).
QUERY = {"fruit": "red-apple", "musical-instruments": "electric-guitar", "vehicles": "classic-1980s-sedan"}
# Two page views per visitor, and how many of the first "for you" items are then of that kind.
# The fruit visitor's nearest photos are the unsellable apples: rules are tested there too.
HISTORY = {
    "fruit": (["red-apple", "morello-cherry"], 2),
    "musical-instruments": (["electric-guitar", "electric-bass-guitar"], 3),
    "vehicles": (["classic-1980s-sedan", "classic-1980s-station-wagon"], 3),
}


def shelves(html: str) -> dict[str, list[int]]:
    """Product ids on each imgrec shelf of a page, in shelf order."""
    return {
        match.group(1): [int(pk) for pk in PRODUCT_LINK_RE.findall(match.group(0))]
        for match in SHELF_RE.finditer(html)
    }


def view(client: Client, product: Any) -> dict[str, list[int]]:
    """GET Oscar's product page; return its shelves."""
    response = client.get(product.get_absolute_url())
    assert response.status_code == 200
    return shelves(response.content.decode())


def test_backfill_indexes_oscar_images_where_they_are(indexed_shop: Any) -> None:
    """``imgrec_reindex --missing --wait`` found the images Oscar had before imgrec and embedded
    them in place: each IndexedImage names Oscar's own file; imgrec stored no image of its own."""
    from oscar.core.loading import get_model

    from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage, ProductVector

    oscar_images = list(get_model("catalogue", "ProductImage").objects.all())
    n = len(oscar_images)
    assert n == len(indexed_shop.catalogue.products)
    assert f"{n} ready, 0 failed, 0 remaining of {n}" in indexed_shop.backfill_output
    tracked = {row.source_id: row for row in IndexedImage.objects.filter(source=OSCAR_SOURCE)}
    assert len(tracked) == n == IndexedImage.objects.count()
    for image in oscar_images:
        row = tracked[str(image.pk)]
        assert row.file_name == image.original.name
        assert row.object_id == str(image.product_id)
        assert row.status == "ready", row.failure_detail
    assert not ProductImage.objects.exists()  # nothing re-uploaded into imgrec's own model
    assert indexed_shop.files_after == indexed_shop.files_before  # no copy of any file either
    assert ImageEmbedding.objects.count() == n
    assert ProductVector.objects.filter(modality="image").count() == n

    assert "0 image(s)" in backfill()  # a second run finds nothing to do


def test_product_page_shows_similar_products_within_oscar_rules(indexed_shop: Any) -> None:
    """Oscar's product view renders the shop's override of its template with imgrec's shelves;
    similar products are the same kind of thing; unsellable products never appear, though their
    photos are the closest ones."""
    catalogue = indexed_shop.catalogue
    unsellable = set(catalogue.unsellable)
    red_apple = catalogue.products[QUERY["fruit"]]

    response = Client().get(red_apple.get_absolute_url())
    assert response.status_code == 200
    origins = [t.origin.name for t in response.templates]
    assert str(SHOP_TEMPLATES / "oscar" / "catalogue" / "detail.html") in origins  # the override
    assert any(o.endswith("oscar/templates/oscar/catalogue/detail.html") for o in origins)  # Oscar's
    html = response.content.decode()
    assert 'class="product_page"' in html  # Oscar's own page is all there
    found = shelves(html)
    assert set(found) == {"similar", "for_you"}
    assert len(found["similar"]) == 6 and red_apple.pk not in found["similar"]

    for kind, slug in QUERY.items():
        similar = view(Client(), catalogue.products[slug])["similar"]
        assert len(similar) == 6
        assert not unsellable & set(similar), similar
        assert [catalogue.kind_of[pk] for pk in similar[:3]] == [kind] * 3, (slug, similar)


def test_rules_are_read_live_from_oscar_stock_records(indexed_shop: Any) -> None:
    """Restocking an out-of-stock product (Oscar's StockRecord) puts it on shelves at once; no
    shelf, for any product, ever holds an unsellable one."""
    from oscar.core.loading import get_model

    from imgrec_app.services import recommend

    catalogue = indexed_shop.catalogue
    unsellable = set(catalogue.unsellable)
    for product in catalogue.products.values():
        items = recommend.similar_products(product, limit=20, attach=False)
        assert not unsellable & {int(i.product_id) for i in items}, product

    red_apple = catalogue.products[QUERY["fruit"]]
    out_of_stock = next(pk for pk, why in catalogue.unsellable.items() if why == "out of stock")
    assert out_of_stock not in view(Client(), red_apple)["similar"]
    get_model("partner", "StockRecord").objects.filter(product_id=out_of_stock).update(num_in_stock=5)
    assert out_of_stock in view(Client(), red_apple)["similar"][:3]  # one of its closest photos


def test_oscar_product_views_build_history_and_for_you_follows(indexed_shop: Any) -> None:
    """Oscar's ``product_viewed`` and ``basket_addition`` signals, connected by the shop, record
    each visitor's history; "recommended for you" follows what that visitor looked at."""
    from imgrec_app.models import Interaction

    catalogue = indexed_shop.catalogue
    unsellable = set(catalogue.unsellable)
    for kind, (slugs, top) in HISTORY.items():
        visitor = Client()
        seen = [catalogue.products[slug] for slug in slugs]
        for product in seen:
            view(visitor, product)
        # Oscar's own "add to basket" form; its basket_addition signal is connected too.
        added = visitor.post(reverse("basket:add", kwargs={"pk": seen[-1].pk}), {"quantity": 1})
        assert added.status_code == 302
        rows = Interaction.objects.filter(object_id__in=[str(p.pk) for p in seen])
        assert sorted(rows.values_list("kind", flat=True)) == ["cart", "view", "view"]
        assert rows.filter(user__isnull=True).count() == 3
        assert len(set(rows.values_list("visitor_id", flat=True))) == 1  # one anonymous visitor
        page = view(visitor, seen[0])
        for_you = page["for_you"]
        assert len(for_you) == 6
        assert not {p.pk for p in seen} & set(for_you)  # already seen
        assert not unsellable & set(for_you)
        # On a product page the personal shelf never repeats the page's similar shelf.  In this
        # 18-product shop that shelf (6 items) can hold every product of the visitor's kind they
        # have not seen (the guitar's holds all 4 other instruments), so the page's for-you shelf
        # cannot lead with that kind: the strict xfail kept here (issue 11 §3) was this rule.
        assert not set(page["similar"]) & set(for_you), page
        # Anywhere else (the lazy fragment a page loads), the shelf follows what the visitor viewed.
        fragment = visitor.get(f"{reverse('imgrec:for_you_fragment')}?limit=6")
        assert fragment.status_code == 200
        anywhere = shelves(fragment.content.decode())["for_you"]
        assert len(anywhere) == 6 and not {p.pk for p in seen} & set(anywhere)
        assert [catalogue.kind_of[pk] for pk in anywhere[:top]] == [kind] * top, (kind, anywhere)
