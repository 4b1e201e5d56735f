"""Frequently bought together: baskets from cart/purchase events, support threshold, visit window,
the shop's rules, labelled fallbacks; API, template tags, lazy fragment."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.template import Context, Template
from django.utils import timezone

from imgrec_app.models import BoughtTogether, Interaction
from imgrec_app.services import bought_together as bt

pytestmark = pytest.mark.django_db


def _basket(products, *, kind="cart", at=None, visitor=None, spread=timedelta(minutes=5)):
    """One shopper's basket: an event per product, ``spread`` apart."""
    visitor = visitor or uuid.uuid4()
    at = at or timezone.now() - timedelta(hours=1)
    ct = ContentType.objects.get_for_model(products[0])
    for i, p in enumerate(products):
        Interaction.objects.create(
            visitor_id=visitor, content_type=ct, object_id=str(p.pk), kind=kind, created_at=at + i * spread
        )
    return visitor


@pytest.fixture
def shop(make_product):
    names = ["tent", "sleeping bag", "stove", "mug", "lamp", "apple"]
    cats = ["camping"] * 5 + ["fruit"]
    return {n: make_product(n, category=c) for n, c in zip(names, cats)}


def test_pairs_need_the_minimum_support_of_distinct_shoppers(shop, settings):
    tent, bag, stove = shop["tent"], shop["sleeping bag"], shop["stove"]
    _basket([tent, bag])
    _basket([tent, bag], kind="purchase")
    _basket([tent, stove])  # one shopper only: not enough support
    assert bt.refresh() == 2  # tent→bag and bag→tent
    items = bt.bought_together(tent, limit=4)
    assert items[0].product_id == str(bag.pk) and items[0].source == "bought_together"
    assert items[0].score == 2.0 and items[0].because_of == [str(tent.pk)]
    assert str(stove.pk) not in [i.product_id for i in items if i.source == "bought_together"]

    settings.IMGREC = {**settings.IMGREC, "BOUGHT_TOGETHER_MIN_SUPPORT": 1}
    bt.refresh()
    together = [i.product_id for i in bt.bought_together(tent, limit=4) if i.source == "bought_together"]
    assert together == [str(bag.pk), str(stove.pk)]  # ranked by shoppers


def test_the_same_shopper_twice_is_one_shopper(shop):
    tent, bag = shop["tent"], shop["sleeping bag"]
    visitor = _basket([tent, bag])
    _basket([tent, bag], visitor=visitor, at=timezone.now() - timedelta(days=3))
    assert bt.refresh() == 0


def test_views_and_events_outside_the_visit_window_are_no_basket(shop, settings):
    tent, bag, lamp = shop["tent"], shop["sleeping bag"], shop["lamp"]
    for _ in range(2):
        _basket([tent, bag], kind="view")  # viewed, not bought
        _basket([tent, lamp], spread=timedelta(hours=30))  # a day and a half apart
    assert bt.refresh() == 0
    settings.IMGREC = {**settings.IMGREC, "BOUGHT_TOGETHER_WINDOW_HOURS": 48}
    assert bt.refresh() == 2


def test_shop_rules_apply_and_fallback_is_labelled(shop):
    tent, bag, stove, mug, apple = (shop[n] for n in ["tent", "sleeping bag", "stove", "mug", "apple"])
    for _ in range(2):
        _basket([tent, bag])
        _basket([tent, stove])
    _basket([mug], kind="purchase")
    _basket([mug, apple], kind="purchase", spread=timedelta(days=3))
    _basket([apple], kind="purchase")
    bt.refresh()
    stove.stock = 0
    stove.save()
    items = bt.bought_together(tent, limit=4)
    ids = [i.product_id for i in items]
    assert str(stove.pk) not in ids  # sold out: the rules apply inside SQL
    assert ids[0] == str(bag.pk)
    # Then best sellers of the same category (mug: 2 purchases), then of the shop (apple).
    assert [(i.product_id, i.source) for i in items[1:]] == [
        (str(mug.pk), "fallback:bestsellers_category"),
        (str(apple.pk), "fallback:bestsellers"),
    ]
    assert items[1].reason == "Best seller in this category" and items[0].reason == "Frequently bought together"
    assert str(tent.pk) not in ids


def test_api_tag_and_lazy_fragment(client, shop):
    tent, bag = shop["tent"], shop["sleeping bag"]
    for _ in range(2):
        _basket([tent, bag], kind="purchase")
    bt.refresh()
    r = client.get(f"/api/imgrec/products/{tent.pk}/bought-together/?limit=2")
    assert r.status_code == 200
    first = r.json()["results"][0]
    assert (
        first["product_id"] == str(bag.pk) and first["source"] == "bought_together" and first["name"] == "sleeping bag"
    )
    assert client.get("/api/imgrec/products/999999/bought-together/").status_code == 404

    html = Template("{% load imgrec_tags %}{% imgrec_bought_together_shelf product limit=2 %}").render(
        Context({"product": tent})
    )
    assert "Frequently bought together" in html and "sleeping bag" in html
    frag = client.get(f"/imgrec/fragments/bought-together/{tent.pk}/?limit=2")
    assert frag.status_code == 200 and "sleeping bag" in frag.content.decode()
    lazy = Template("{% load imgrec_tags %}{% imgrec_lazy_shelf 'bought_together' product %}").render(
        Context({"product": tent})
    )
    assert f"/imgrec/fragments/bought-together/{tent.pk}/" in lazy


def test_refresh_replaces_old_pairs(shop):
    tent, bag = shop["tent"], shop["sleeping bag"]
    for _ in range(2):
        _basket([tent, bag], at=timezone.now() - timedelta(days=200))
    ct = ContentType.objects.get_for_model(tent)
    BoughtTogether.objects.create(content_type=ct, object_id=str(tent.pk), other_id=str(bag.pk), shoppers=9)
    assert bt.refresh() == 0  # older than BOUGHT_TOGETHER_DAYS
    assert not BoughtTogether.objects.exists()


def test_evaluation_holds_out_the_last_basket_event_and_leaves_no_trace(shop, make_product):
    from imgrec_app.services.evaluation_baskets import evaluate_bought_together

    tent, bag, mug = shop["tent"], shop["sleeping bag"], shop["mug"]
    for _ in range(10):
        _basket([tent, bag])  # bag is carted after the tent: the held-out event
    for _ in range(6):
        _basket([mug], kind="purchase")
        _basket([mug])  # the shop's best seller (12 basket events; the bag has 8 left)
    before = Interaction.objects.count()
    assert evaluate_bought_together(k=1, min_baskets=50)["note"]
    result = evaluate_bought_together(k=1, min_baskets=10)
    assert result["baskets"] == 2  # 20 % of the 10 shoppers with two basket products
    # Pairs come from the other shoppers' baskets (the held-out events are gone): every hit is earned.
    assert result["methods"]["bought_together"] == 1.0
    # With every shopper held out nothing is left to learn from: the shelf cannot cheat.
    assert evaluate_bought_together(k=1, min_baskets=10, test_share=1.0)["methods"]["bought_together"] == 0.0
    assert result["methods"]["best_sellers"] == 0.0  # the mug
    assert Interaction.objects.count() == before and not BoughtTogether.objects.exists()
