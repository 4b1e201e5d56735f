"""The DRF API: shelves, events, own history, privacy headers, CSRF, permissions, schema."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from imgrec_app.models import Interaction, ReindexRun
from tests.conftest import upload
from tests.test_recommend import catalogue  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def test_similar_endpoint_returns_described_items(client, catalogue):  # noqa: F811
    products, _ = catalogue
    r = client.get(f"/api/imgrec/products/{products[0].pk}/similar/?limit=5")
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 5
    first = results[0]
    assert set(first) >= {"product_id", "score", "reason", "source", "name", "url", "image_url"}
    assert first["url"].startswith("http://testserver/p/")


def test_similar_endpoint_statements_cold_and_cached(client, catalogue):  # noqa: F811
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    products, _ = catalogue
    client.get(f"/api/imgrec/products/{products[1].pk}/similar/?limit=8")  # the process reads the serving model once
    url = f"/api/imgrec/products/{products[0].pk}/similar/?limit=8"
    with CaptureQueriesContext(connection) as cold:
        first = client.get(url)
    with CaptureQueriesContext(connection) as cached:
        again = client.get(url)
    # One statement: no query for the product itself (the k-NN statement, rules and near-duplicate
    # pairs inside, says whether a visitor may see it) and none for the shelf's products (their
    # columns and primary images come with the candidates' rows).
    assert len(cold) == 1
    # The cached ids through the rules, with the product's visibility, existence, the serving
    # model and the vector stamp as columns.
    assert len(cached) == 1
    assert first.json() == again.json() and len(first.json()["results"]) == 8


def test_cached_shelf_of_a_deleted_product_is_404(client, catalogue):  # noqa: F811
    from imgrec_app.models import ProductVector

    products, _ = catalogue
    url = f"/api/imgrec/products/{products[0].pk}/similar/?limit=8"
    assert client.get(url).status_code == 200  # now cached
    # Deleted behind Django's back (no signal): its vectors, hence the cache entry's stamp, stay.
    type(products[0]).objects.filter(pk=products[0].pk)._raw_delete("default")
    assert ProductVector.objects.filter(object_id=str(products[0].pk)).exists()
    assert client.get(url).status_code == 404


def test_cached_shelf_of_a_product_hidden_since_is_404(client, catalogue):  # noqa: F811
    products, _ = catalogue
    url = f"/api/imgrec/products/{products[0].pk}/similar/?limit=8"
    assert client.get(url).status_code == 200  # now cached
    type(products[0]).objects.filter(pk=products[0].pk).update(published=False)  # no signal fires
    assert client.get(url).status_code == 404
    assert client.get(f"/api/imgrec/products/{products[1].pk}/similar/?limit=8").status_code == 200


def test_similar_endpoint_uses_the_visibility_rule_not_the_shelf_rule(client, catalogue):  # noqa: F811
    """A sold-out product is visible (its page exists): its shelf is served, itself never on one."""
    products, _ = catalogue
    type(products[0]).objects.filter(pk=products[0].pk).update(stock=0)
    response = client.get(f"/api/imgrec/products/{products[0].pk}/similar/?limit=8")
    assert response.status_code == 200 and len(response.json()["results"]) == 8
    shelf = client.get(f"/api/imgrec/products/{products[3].pk}/similar/?limit=8").json()["results"]
    assert str(products[0].pk) not in {r["product_id"] for r in shelf}


def test_similar_endpoint_of_a_product_without_vector(client, catalogue, make_product):  # noqa: F811
    """The labelled fallback for a visible product; a hidden one is a 404 on that path too."""
    lonely = make_product("new shoe", category="shoes")
    hidden = make_product("draft shoe", category="shoes", published=False)
    response = client.get(f"/api/imgrec/products/{lonely.pk}/similar/?limit=5")
    assert response.status_code == 200
    assert {r["source"] for r in response.json()["results"]} <= {"fallback:category", "fallback:trending", "fallback:new"}
    assert client.get(f"/api/imgrec/products/{hidden.pk}/similar/?limit=5").status_code == 404


@pytest.mark.parametrize("limit", ["0", "51", "abc"])
def test_limit_is_bounded(client, catalogue, limit):  # noqa: F811
    products, _ = catalogue
    assert client.get(f"/api/imgrec/products/{products[0].pk}/similar/?limit={limit}").status_code == 400


def test_unknown_product_is_404(client, catalogue):  # noqa: F811
    assert client.get("/api/imgrec/products/999999/similar/").status_code == 404
    assert client.get("/api/imgrec/products/not-a-number/similar/").status_code == 404


def test_events_history_and_privacy(catalogue):  # noqa: F811
    products, _ = catalogue
    a, b = Client(), Client()
    for p in products[:3]:
        assert a.post("/api/imgrec/events/", {"product_id": p.pk, "kind": "view"}, content_type="application/json").status_code == 201
    # the same view again within the dedupe window counts once
    assert a.post("/api/imgrec/events/", {"product_id": products[0].pk}, content_type="application/json").status_code == 204
    mine = a.get("/api/imgrec/history/")
    assert len(mine.json()["results"]) == 3
    assert "Cookie" in mine["Vary"] and "private" in mine["Cache-Control"]
    assert b.get("/api/imgrec/history/").json()["results"] == []
    # B cannot read A's history through a parameter
    assert b.get(f"/api/imgrec/history/?user=1&visitor={Interaction.objects.first().visitor_id}").json()["results"] == []
    rec_b = b.get("/api/imgrec/recommendations/?limit=4").json()["results"]
    assert {r["source"] for r in rec_b} <= {"fallback:trending", "fallback:new"}
    rec_a = a.get("/api/imgrec/recommendations/?limit=4").json()["results"]
    assert rec_a and all(r["source"] == "for_you:interest" for r in rec_a)
    assert b.delete("/api/imgrec/history/").status_code == 204
    assert Interaction.objects.count() == 3
    assert a.delete("/api/imgrec/history/").status_code == 204
    assert Interaction.objects.count() == 0


def test_session_writes_need_csrf(catalogue):  # noqa: F811
    products, _ = catalogue
    user = User.objects.create_user("shopper", password="pw")
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    r = c.post("/api/imgrec/events/", {"product_id": products[0].pk}, content_type="application/json")
    assert r.status_code == 403
    anon = Client(enforce_csrf_checks=True)
    anon.get(f"/api/imgrec/history/")  # no session yet: nothing to protect
    anon.cookies["sessionid"] = "forged"
    assert anon.post("/api/imgrec/events/", {"product_id": products[0].pk}, content_type="application/json").status_code == 403
    assert not Interaction.objects.exists()


def test_reindex_needs_the_reindex_permission(client, catalogue):  # noqa: F811
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.post("/api/imgrec/reindex/", {"scope": "missing"}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="reindex"))
    client.force_login(User.objects.get(pk=staff.pk))
    first = client.post("/api/imgrec/reindex/", {"scope": "all"})
    assert first.status_code == 202
    assert client.get("/api/imgrec/status/").status_code == 200


def test_anonymous_cannot_see_status(client):
    assert client.get("/api/imgrec/status/").status_code in (401, 403)
    assert client.post("/api/imgrec/reindex/", {"scope": "all"}).status_code in (401, 403)


def test_openapi_schema_is_served_and_lists_endpoints(client):
    r = client.get("/api/imgrec/schema/?format=json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in ["/products/{product_id}/similar/", "/recommendations/", "/events/", "/history/", "/search/", "/status/", "/reindex/"]:
        assert "/api/imgrec" + p in paths  # with the mount prefix: tests/test_api_schema.py


def test_staff_can_upload_a_product_image_and_bad_files_leave_nothing(client, make_product):
    from django.contrib.auth.models import Permission, User

    from imgrec_app.models import IndexedImage, ProductImage
    from tests.conftest import make_image_bytes, upload

    product = make_product()
    url = f"/api/imgrec/products/{product.pk}/images/"
    assert client.post(url, {"image": upload("a.jpg", make_image_bytes())}).status_code in (401, 403)
    staff = User.objects.create_user("uploader", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_productimage"))
    client.force_login(staff)
    ok = client.post(url, {"image": upload("a.jpg", make_image_bytes()), "alt_text": "front"})
    assert ok.status_code == 201, ok.content
    assert ok.json()["width"] == 320 and len(ok.json()["file_hash"]) == 64
    assert IndexedImage.objects.filter(source_id=str(ok.json()["id"]), status="pending").exists()
    bad = client.post(url, {"image": upload("b.png", b"not an image at all")})
    assert bad.status_code == 400 and "image" in bad.json()
    assert ProductImage.objects.count() == 1 and IndexedImage.objects.filter(source="imgrec_app.productimage.image").count() == 1


def test_search_by_photo_finds_the_product_and_stores_nothing(client, make_product, settings, tmp_path):
    import io
    import os

    from django.core.management import call_command

    from tests.conftest import CATALOGUE_DIR

    settings.MEDIA_ROOT = str(tmp_path)
    files = {cat: sorted((CATALOGUE_DIR / "images" / cat).glob("*.png"))[:3] for cat in ("fruit", "vehicles", "musical-instruments")}
    products = {}
    for cat, paths in files.items():
        for path in paths:
            products[path] = make_product(path.stem, category=cat, photo=upload(path.name, path.read_bytes(), "image/png"))
    call_command("imgrec_reindex", "--missing", "--sync", stdout=io.StringIO(), verbosity=0)
    before = sorted(os.walk(tmp_path))
    query = files["vehicles"][1]
    r = client.post("/api/imgrec/search/", {"image": upload("query.png", query.read_bytes(), "image/png"), "limit": 3})
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    assert results[0]["product_id"] == str(products[query].pk)
    assert results[0]["reason"] == "Looks like your photo"
    assert sorted(os.walk(tmp_path)) == before  # nothing stored
    bad = client.post("/api/imgrec/search/", {"image": upload("x.jpg", b"GIF89a not really")})
    assert bad.status_code == 400
    settings.IMGREC = {**settings.IMGREC, "SEARCH_STORE_UPLOADS": True, "SEARCH_THROTTLE_RATE": "100/min"}
    assert client.post("/api/imgrec/search/", {"image": upload("q.png", query.read_bytes(), "image/png")}).status_code == 200
    assert len(list((tmp_path / "imgrec" / "searches").iterdir())) == 1
