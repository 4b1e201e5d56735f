"""imgrec in a plain Django shop with UUID keys, many-to-many categories and a separate image
model, installed the README's way: backfilled by a real worker, shelves on the shop's product page
with same-category filtering done in SQL by ``PRODUCT_CATEGORY_FILTER``.

Run: ``python -m pytest tests/integration/uuidshop --ds=tests.integration.uuidshop.settings``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

pytestmark = [pytest.mark.worker, pytest.mark.django_db]

SHELF_RE = re.compile(r'<section class="imgrec-shelf imgrec-shelf--(\w+)".*?</section>', re.DOTALL)
LINK_RE = re.compile(r'href="/products/([0-9a-f-]{36})/(?:\?imgrec=[^"]+)?"')  # signed shelf links (issue 15)


def shelves(html: str) -> dict[str, list[str]]:
    return {m.group(1): LINK_RE.findall(m.group(0)) for m in SHELF_RE.finditer(html)}


def test_backfill_indexed_every_existing_photo(indexed_shop: Any) -> None:
    from imgrec_app.models import IndexedImage, ProductVector

    images = IndexedImage.objects.filter(source="shop.productimage.original")
    assert images.count() == len(indexed_shop.products)
    assert set(images.values_list("status", flat=True)) == {"ready"}, indexed_shop.backfill_output
    assert ProductVector.objects.count() == len(indexed_shop.products)
    # UUID keys are stored as their canonical text and map back to the products.
    assert set(images.values_list("object_id", flat=True)) == set(indexed_shop.kind_of)


def test_product_page_shows_a_same_category_shelf(indexed_shop: Any) -> None:
    from tests.integration.uuidshop.shop.models import Product

    unpublished = set(map(str, Product.objects.filter(published=False).values_list("pk", flat=True)))
    client = Client()
    for product in Product.objects.filter(published=True).exclude(categories__slug="sale"):
        html = client.get(product.get_absolute_url()).content.decode()
        similar = shelves(html).get("similar")
        assert similar, f"no similar shelf on {product}: {html[:500]}"
        kind = indexed_shop.kind_of[str(product.pk)]
        assert {indexed_shop.kind_of[pk] for pk in similar} == {kind}, (product, similar)
        assert not set(similar) & unpublished and str(product.pk) not in similar


def test_a_product_in_two_categories_gets_neighbours_from_both(indexed_shop: Any) -> None:
    from imgrec_app.services.recommend import similar_products
    from tests.integration.uuidshop.shop.models import Product

    fruit_on_sale = Product.objects.filter(categories__slug="sale").filter(categories__slug="fruit").get()
    vehicle_on_sale = Product.objects.filter(categories__slug="sale").filter(categories__slug="vehicles").get()
    items = similar_products(fruit_on_sale, limit=8, same_category=True)
    kinds = {indexed_shop.kind_of[i.product_id] for i in items}
    assert str(vehicle_on_sale.pk) in {i.product_id for i in items}  # shares "sale"
    assert kinds == {"fruit", "vehicles"}  # never a musical instrument
    assert len({i.product_id for i in items}) == len(items)  # the join added no duplicates


def test_same_category_is_filtered_inside_the_vector_query(indexed_shop: Any) -> None:
    from imgrec_app.services.recommend import similar_products
    from tests.integration.uuidshop.shop.models import Product

    product = Product.objects.filter(published=True, categories__slug="musical-instruments").first()
    with CaptureQueriesContext(connection) as queries:
        similar_products(product, limit=4, same_category=True)
    knn = [q["sql"] for q in queries.captured_queries if "<=>" in q["sql"]]
    assert knn and all("shop_product_categories" in sql for sql in knn), knn


def test_the_install_passes_checks_and_serves_the_api_schema(indexed_shop: Any) -> None:
    call_command("check", "--database", "default")  # raises on any error
    r = Client().get("/api/imgrec/schema/?format=json")  # no REST_FRAMEWORK settings in this shop
    assert r.status_code == 200
    assert "/api/imgrec/products/{product_id}/similar/" in r.json()["paths"]


def test_a_photo_saved_through_the_shop_model_is_indexed(indexed_shop: Any, celery_worker: Any) -> None:
    from django.core.files.base import ContentFile

    from imgrec_app.models import IndexedImage
    from tests.conftest import make_image_bytes, wait_for
    from tests.integration.uuidshop.shop.models import Product, ProductImage

    product = Product.objects.filter(published=True).first()
    image = ProductImage.objects.create(product=product, original=ContentFile(make_image_bytes(), name="new.jpg"))
    wait_for(lambda: IndexedImage.objects.filter(source_id=str(image.pk), status="ready").exists(), timeout=120)
