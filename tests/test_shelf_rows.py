"""The shop's rules compiled once per distinct query, and shelf products built from raw rows
(services/shelf_rows.py): never a stale rule, the same products the ORM loads."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from imgrec_app.services import recommend, shelf_rows, similar
from shop_demo.catalog.models import Product
from tests.test_recommend import catalogue  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

# A rule whose value changes between requests (a shop raising its stock threshold, say).
THRESHOLD = {"stock": 0}


def threshold_rule():
    return Product.objects.filter(published=True, stock__gt=THRESHOLD["stock"])


def selected_rule():
    return Product.objects.filter(published=True, stock__gt=0).select_related("category")


def _ids(items):
    return [i.product_id for i in items]


def test_a_rule_is_compiled_once_and_again_when_its_values_change():
    shelf_rows.forget_rules()
    a = shelf_rows.rule(Product.objects.filter(published=True, stock__gt=0), "default")
    assert shelf_rows.rule(Product.objects.filter(published=True, stock__gt=0), "default") is a
    b = shelf_rows.rule(Product.objects.filter(published=True, stock__gt=5), "default")
    assert b is not a and b.params != a.params
    c = shelf_rows.rule(Product.objects.filter(published=False, stock__gt=0), "default")
    assert c is not a and c.sql != a.sql

    # A subquery does not compare by value: compiled for each queryset, never shared.
    def sub(stock):
        return Product.objects.filter(pk__in=Product.objects.filter(stock__gt=stock).values("pk"))

    assert shelf_rows.rule(sub(0), "default") is not shelf_rows.rule(sub(0), "default")
    assert shelf_rows.rule(sub(3), "default").params != shelf_rows.rule(sub(0), "default").params


def test_a_changed_rule_value_reaches_the_next_shelf(catalogue, settings):  # noqa: F811
    products, _ = catalogue
    settings.IMGREC = {
        **settings.IMGREC,
        "RECOMMENDABLE_PRODUCTS": "tests.test_shelf_rows.threshold_rule",
        "SHELF_CACHE": False,
    }
    Product.objects.filter(pk__in=[p.pk for p in products[1::2]]).update(stock=1)  # the odd ones: 1 left
    THRESHOLD["stock"] = 0
    try:
        before = _ids(similar.similar_products(products[0], limit=8))
        assert any(int(i) in {p.pk for p in products[1::2]} for i in before)
        THRESHOLD["stock"] = 1  # the same rule, now excluding products with one left
        after = _ids(similar.similar_products(products[0], limit=8))
    finally:
        THRESHOLD["stock"] = 0
    assert len(after) == 8
    assert not {int(i) for i in after} & {p.pk for p in products[1::2]}


def test_products_built_from_rows_equal_the_orm_ones(catalogue):  # noqa: F811
    products, _ = catalogue
    items = similar.similar_products(products[0], limit=8)  # cold: products from the statement's rows
    orm = {str(p.pk): p for p in Product.objects.filter(pk__in=[int(i.product_id) for i in items])}
    for item in items:
        built, loaded = item.product, orm[item.product_id]
        assert type(built) is Product and built._state.db == "default" and not built._state.adding
        for f in Product._meta.concrete_fields:
            assert getattr(built, f.attname) == getattr(loaded, f.attname), f.name
        assert str(built) == str(loaded) and built.get_absolute_url() == loaded.get_absolute_url()


def test_a_rule_the_rows_cannot_honour_goes_through_the_orm(catalogue, settings):  # noqa: F811
    """``select_related`` in the host's rule: the products come from the ORM (related rows loaded)."""
    products, _ = catalogue
    settings.IMGREC = {**settings.IMGREC, "RECOMMENDABLE_PRODUCTS": "tests.test_shelf_rows.selected_rule"}
    assert not shelf_rows.rows_ok(selected_rule()) and shelf_rows.rows_ok(threshold_rule())
    recommend.similar_products(products[1], limit=8)  # the process reads the serving model once
    with CaptureQueriesContext(connection) as q:
        items = recommend.similar_products(products[0], limit=8)
    assert len(q) == 2  # the shelf statement, then the products through the ORM
    with CaptureQueriesContext(connection) as q:
        assert {i.product.category.slug for i in items} == {"shoes"}
    assert len(q) == 0  # the rule's select_related was honoured


def test_the_shelf_statement_leaves_the_planner_settings_of_an_enclosing_transaction(catalogue):  # noqa: F811
    """The statement plans its joins as written and sorts off, then puts both back (ATOMIC_REQUESTS)."""
    from django.db import transaction

    from imgrec_app.services import search

    products, _ = catalogue
    captured = []
    original = search.run_knn_statement

    def spy(sql, params, **kw):
        captured.append(kw)
        return original(sql, params, **kw)

    with transaction.atomic(), connection.cursor() as cursor:
        search.run_knn_statement = spy
        try:
            items = recommend.similar_products(products[0], limit=8)
        finally:
            search.run_knn_statement = original
        cursor.execute("SELECT current_setting('join_collapse_limit'), current_setting('enable_sort')")
        assert cursor.fetchone() == ("8", "on")
    assert len(items) == 8 and captured and all(kw.get("as_written") for kw in captured)
