"""The shop's imgrec rules agree with Oscar's own notion of a sellable product, and the whole
configuration passes Django's, Oscar's and imgrec's system checks."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def _sellable_by_oscar(product: Any) -> bool:
    """Oscar's default strategy, as its templates ask it (``purchase_info_for_product``)."""
    from oscar.apps.partner.strategy import Selector

    strategy = Selector().strategy()
    info = strategy.fetch_for_parent(product) if product.is_parent else strategy.fetch_for_product(product)
    return info.availability.is_available_to_buy


def test_recommendable_products_are_what_oscar_would_sell() -> None:
    from oscar.core.loading import get_model
    from oscar.test.factories import ProductFactory, create_product, create_stockrecord

    from imgrec_app.hosts import recommendable_products

    get_model("catalogue", "ProductClass").objects.create(name="Downloads", track_stock=False)
    made = {
        "in stock": create_product(num_in_stock=5),
        "sold out": create_product(num_in_stock=0),
        "stock not counted": create_product(partner_name="Frobshop"),  # num_in_stock None
        "no stock record": create_product(),
        "partly allocated": create_product(num_in_stock=5),
        "fully allocated": create_product(num_in_stock=5),
        "not public": create_product(num_in_stock=5, is_public=False),
        "untracked class, none left": create_product(product_class="Downloads", num_in_stock=0),
        "untracked class, no record": create_product(product_class="Downloads"),
    }
    made["partly allocated"].stockrecords.update(num_allocated=2)
    made["fully allocated"].stockrecords.update(num_allocated=5)

    def parent(name: str, children: list[dict[str, Any]], **kwargs: Any) -> None:
        made[name] = create_product(structure="parent", **kwargs)
        for i, child in enumerate(children):
            stock = child.pop("num_in_stock")
            made[f"{name}: child {i}"] = variant = ProductFactory(
                structure="child", parent=made[name], product_class=None, title="",
                stockrecords=[], categories=[], **child,
            )
            create_stockrecord(variant, num_in_stock=stock)

    parent("parent, a child in stock", [{"num_in_stock": 0}, {"num_in_stock": 3}])
    parent("parent, children sold out", [{"num_in_stock": 0}])
    parent("parent, in-stock child not public", [{"num_in_stock": 3, "is_public": False}])
    parent("parent not public", [{"num_in_stock": 3}], is_public=False)

    Product = type(made["in stock"])
    expected = {
        name for name, p in made.items()
        if (fresh := Product.objects.get(pk=p.pk)).is_public and fresh.parent_id is None and _sellable_by_oscar(fresh)
    }
    names = {p.pk: name for name, p in made.items()}
    got = {names[pk] for pk in recommendable_products().values_list("pk", flat=True)}
    assert got == expected
    assert expected == {"in stock", "partly allocated", "untracked class, none left", "parent, a child in stock"}


def test_product_category_is_the_first_oscar_category_else_the_product_class() -> None:
    from oscar.apps.catalogue.categories import create_from_breadcrumbs
    from oscar.test.factories import ProductCategoryFactory, ProductFactory, create_product

    from imgrec_app.hosts import product_category

    product = create_product(product_class="Goods")
    assert product_category(product) == "goods"
    ProductCategoryFactory(product=product, category=create_from_breadcrumbs("Fruit > Apples"))
    assert product_category(product) == "fruit/apples"
    product.structure = "parent"
    product.save()
    child = ProductFactory(structure="child", parent=product, product_class=None, stockrecords=[], categories=[])
    assert product_category(child) == "fruit/apples"


def test_checks_pass_with_the_database() -> None:
    out = io.StringIO()
    call_command("check", "--database", "default", "--fail-level", "WARNING", stdout=out)
    assert "no issues" in out.getvalue()
