"""Shopper controls on the real pgvector: "not interested" leaves every shelf of that visitor (and
pushes look-alikes down), undo, pause/resume personalisation, merge at login, plain form posts,
API, CSRF."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.template import Context, Template
from django.test import Client

from imgrec_app.models import Interaction, ProductVector, ServingModel, ShopperControl
from imgrec_app.services import bought_together, controls, history
from imgrec_app.services.vectors import ensure_hnsw_index

pytestmark = pytest.mark.django_db

MODEL_ID = "test-controls:v1"
DIM = 16
API = "/api/imgrec"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def shop(make_product, settings):
    """30 products in 3 visual clusters; "shoe 1" and its twin "shoe 1 bis" look alike."""
    settings.IMGREC = {**settings.IMGREC, "SIMILAR_WEIGHTS": {"image": 1.0, "text": 0.0, "coview": 0.0}}
    rng = np.random.default_rng(3)
    centers = _unit(rng.normal(size=(3, DIM)))
    products, vectors = {}, []
    for i in range(30):
        cat = ["shoes", "fruit", "toys"][i % 3]
        name = f"{cat[:-1] if cat.endswith('s') else cat} {i}"
        products[name] = make_product(name, category=cat)
        vectors.append(_unit(centers[i % 3] + 0.2 * rng.normal(size=DIM)))
    twin = make_product("shoe 0 bis", category="shoes")
    products["shoe 0 bis"] = twin
    # cos ≈ 0.95: past NOT_INTERESTED_SIMILARITY (0.9), short of the shelves' duplicate collapse (0.985).
    side = rng.normal(size=DIM)
    side = _unit(side - (side @ vectors[0]) * vectors[0])
    vectors.append(_unit(vectors[0] + 0.33 * side))
    ct = ContentType.objects.get_for_model(twin)
    ProductVector.objects.bulk_create(
        [
            ProductVector(content_type=ct, object_id=str(p.pk), model_id=MODEL_ID, vector=v.tolist())
            for p, v in zip(products.values(), vectors)
        ]
    )
    ServingModel.objects.create(modality="image", model_id=MODEL_ID, dimensions=DIM)
    ensure_hnsw_index(MODEL_ID, DIM)
    return products


def _ids(results):
    return [r["product_id"] for r in results]


def _similar(client, product, limit=10):
    return _ids(client.get(f"{API}/products/{product.pk}/similar/?limit={limit}").json()["results"])


def _for_you(client, limit=10):
    return client.get(f"{API}/recommendations/?limit={limit}").json()["results"]


def _view(client, product):
    assert client.post(
        f"{API}/events/", {"product_id": str(product.pk)}, content_type="application/json"
    ).status_code in (
        201,
        204,
    )


def test_not_interested_leaves_every_shelf_of_that_visitor_only(client, shop):
    shoe, twin = shop["shoe 0"], shop["shoe 0 bis"]
    anchor = shop["shoe 3"]
    for p in [shop["shoe 3"], shop["shoe 6"], shop["shoe 9"]]:
        _view(client, p)
    assert str(shoe.pk) in _similar(client, anchor, limit=12)
    r = client.post(f"{API}/controls/not-interested/", {"product_id": str(shoe.pk)}, content_type="application/json")
    assert r.status_code == 200 and r.json()["not_interested"] == [str(shoe.pk)]

    similar = client.get(f"{API}/products/{anchor.pk}/similar/?limit=12")
    assert str(shoe.pk) not in _ids(similar.json()["results"]) and len(similar.json()["results"]) == 12
    assert "private" in similar["Cache-Control"]  # this visitor's shelf: never cached for others
    assert str(shoe.pk) not in _ids(_for_you(client, limit=20))
    # Its look-alike is pushed to the end of the shelf (still there: only the dismissed one is gone).
    ids = _similar(client, anchor, limit=12)
    assert ids[-1] == str(twin.pk)

    # Another visitor still sees it, and the public response stays cacheable.
    other = Client()
    public = other.get(f"{API}/products/{anchor.pk}/similar/?limit=12")
    assert str(shoe.pk) in _ids(public.json()["results"]) and "private" not in public.get("Cache-Control", "")

    # Undo brings it back.
    client.delete(f"{API}/controls/not-interested/", {"product_id": str(shoe.pk)}, content_type="application/json")
    assert str(shoe.pk) in _similar(client, anchor, limit=12)


def test_dismissed_product_stays_out_of_bought_together_and_after_login(client, shop):
    tent, stove = shop["toy 2"], shop["toy 5"]
    ct = ContentType.objects.get_for_model(tent)
    for _ in range(2):
        vid = uuid.uuid4()
        for p in (tent, stove):
            Interaction.objects.create(visitor_id=vid, content_type=ct, object_id=str(p.pk), kind="cart")
    bought_together.refresh()
    url = f"{API}/products/{tent.pk}/bought-together/?limit=4"
    assert _ids(client.get(url).json()["results"])[0] == str(stove.pk)
    client.post(f"{API}/controls/not-interested/", {"product_id": str(stove.pk)}, content_type="application/json")
    assert str(stove.pk) not in _ids(client.get(url).json()["results"])
    html = Template("{% load imgrec_tags %}{% imgrec_bought_together_shelf product %}").render(
        Context({"product": tent, "request": client.get(url).wsgi_request})
    )
    assert "toy 5" not in html

    User.objects.create_user("ann", password="pw")
    assert client.login(username="ann", password="pw")
    assert ShopperControl.objects.filter(user__username="ann", object_id=str(stove.pk)).exists()
    assert not ShopperControl.objects.filter(visitor_id__isnull=False).exists()
    assert str(stove.pk) not in _ids(client.get(url).json()["results"])
    assert str(stove.pk) not in _ids(_for_you(client, limit=30))


def test_pause_keeps_history_unused_and_records_nothing(client, shop):
    for p in [shop["fruit 1"], shop["fruit 4"], shop["fruit 7"]]:
        _view(client, p)
    assert {r["source"] for r in _for_you(client)} & {"for_you:interest"}
    kept = Interaction.objects.count()
    assert client.post(f"{API}/controls/pause/").json()["paused"] is True
    items = _for_you(client)
    assert items and {r["source"] for r in items} <= {"fallback:trending", "fallback:new"}
    _view(client, shop["toy 2"])
    assert Interaction.objects.count() == kept  # nothing new recorded, nothing deleted
    assert client.delete(f"{API}/controls/pause/").json()["paused"] is False
    assert {r["source"] for r in _for_you(client)} & {"for_you:interest"}
    _view(client, shop["toy 2"])
    assert Interaction.objects.count() == kept + 1


def test_pause_merges_at_login_without_duplicates(client, shop):
    user = User.objects.create_user("bea", password="pw")
    ShopperControl.objects.create(user=user, kind="paused")
    client.post(f"{API}/controls/pause/")
    client.post(
        f"{API}/controls/not-interested/", {"product_id": str(shop["toy 2"].pk)}, content_type="application/json"
    )
    assert client.login(username="bea", password="pw")
    rows = ShopperControl.objects.filter(user=user)
    assert sorted(rows.values_list("kind", flat=True)) == ["not_interested", "paused"]
    assert client.get(f"{API}/controls/").json() == {"paused": True, "not_interested": [str(shop["toy 2"].pk)]}


def test_forms_work_without_javascript_and_check_csrf(shop):
    client = Client(enforce_csrf_checks=True)
    shoe = shop["shoe 0"]
    page = client.get("/history/")
    assert page.status_code == 200 and "Pause personalisation" in page.content.decode()
    token = page.cookies["csrftoken"].value
    assert client.post("/imgrec/controls/not-interested/", {"product_id": shoe.pk}).status_code == 403
    r = client.post(
        "/imgrec/controls/not-interested/",
        {"product_id": shoe.pk, "next": "/p/x/", "csrfmiddlewaretoken": token},
    )
    assert r.status_code == 302 and r["Location"] == "/p/x/"
    html = client.get("/history/").content.decode()
    assert "shoe 0" in html and "Show again" in html
    r = client.post(
        "/imgrec/controls/not-interested/",
        {"product_id": shoe.pk, "undo": "1", "next": "https://evil.example/", "csrfmiddlewaretoken": token},
    )
    assert r["Location"] == "/"  # no open redirect
    assert "Nothing hidden." in client.get("/history/").content.decode()
    r = client.post(
        "/imgrec/controls/pause/", {"action": "pause", "csrfmiddlewaretoken": token}, HTTP_ACCEPT="application/json"
    )
    assert r.json() == {"paused": True, "not_interested": []}
    assert "Resume personalisation" in client.get("/history/").content.decode()
    _anon = client.post("/imgrec/controls/clear-history/", {"csrfmiddlewaretoken": token})
    assert _anon.status_code == 302


def test_shelf_items_offer_not_interested_and_the_script_is_static(client, shop):
    anchor = shop["shoe 3"]
    request = client.get("/history/").wsgi_request
    html = Template("{% load imgrec_tags %}{% imgrec_similar_shelf product limit=4 %}").render(
        Context({"product": anchor, "request": request})
    )
    assert html.count('data-imgrec-control="not-interested"') == 4
    assert "csrfmiddlewaretoken" in html and "imgrec_app/controls.js" in html
    assert "<script>" not in html  # no inline code (strict CSP)


def test_cross_site_api_post_cannot_dismiss_for_a_visitor(shop):
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    client = Client(enforce_csrf_checks=True)
    session = SessionStore()  # a visitor with a history: a forged cross-site POST must not reach it
    session[history.VISITOR_SESSION_KEY] = str(uuid.uuid4())
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    r = client.post(
        f"{API}/controls/not-interested/", {"product_id": str(shop["shoe 0"].pk)}, content_type="application/json"
    )
    assert r.status_code == 403
    assert not ShopperControl.objects.exists()


def test_apply_is_a_no_op_for_visitors_without_controls(shop, django_assert_num_queries):
    from django.test import RequestFactory

    def request():
        req = RequestFactory().get("/")
        req.user = type("Anon", (), {"is_authenticated": False})()
        req.session = {}
        return req

    items = [type("I", (), {"product_id": str(p.pk)})() for p in list(shop.values())[:5]]
    with django_assert_num_queries(0):
        assert controls.apply(request(), items) == items
    known = request()
    history.visitor_id(known, create=True)
    with django_assert_num_queries(1):  # one read of the visitor's controls, kept on the request
        assert controls.apply(known, items) == items
        assert controls.apply(known, items) == items and not controls.is_paused(known)
