"""The web-side cases of issue 13 (§3.2–§3.8, "Also seen", §4), through the real request stack.

Each test here failed on the code before its fix (see docs/RELIABILITY.md, "Issue 13").
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from imgrec_app.models import Interaction
from tests.conftest import make_image_bytes, upload
from tests.test_recommend import catalogue  # noqa: F401  (fixture)
from tests.test_reliability_uploads import (  # noqa: F401  (staff_client is a fixture)
    INLINE_PREFIX,
    error_text,
    media_files,
    post_admin,
    post_api,
    staff_client,
)

pytestmark = pytest.mark.django_db


def _json_client() -> Client:
    """A visitor holding the shop's CSRF cookie (any page with a form sets it)."""
    client = Client(enforce_csrf_checks=True)
    client.get("/search/photo/")
    return client


def _post_json(client: Client, url: str, body: str) -> Any:
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)


# --- issue 13 §3.7: deeply nested JSON is a 400, not a 500 ---------------------------------------


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_json_is_a_400_not_a_500(make_product: Any, depth: int) -> None:
    product = make_product()
    client = Client()
    body = '{"product_id": ' + "[" * depth + '"%s"' % product.pk + "]" * depth + "}"
    response = client.post("/api/imgrec/events/", body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested deeper" in response.json()["detail"]
    assert not Interaction.objects.exists()
    # An ordinary body still works.
    ok = client.post("/api/imgrec/events/", {"product_id": str(product.pk)}, content_type="application/json")
    assert ok.status_code == 201


# --- issue 13 §3.2: events, "recently viewed" and for-you reasons only for visible products -------


def _names_in_reasons(text: str, products: list[Any]) -> list[str]:
    return [p.name for p in products if re.search(rf"Because you viewed {re.escape(p.name)}(?!\d)", text)]


def _recently_viewed(html: str) -> str:
    match = re.search(r"<h3>Recently viewed</h3>(.*?)</section>", html, re.S)
    return match.group(1) if match else ""


def test_unpublished_products_are_never_recorded_nor_named(catalogue: Any) -> None:  # noqa: F811
    from shop_demo.catalog.models import Product

    products, _ = catalogue
    hidden = products[1]
    Product.objects.filter(pk=hidden.pk).update(published=False)
    client = Client()
    missing = client.post("/api/imgrec/events/", {"product_id": "99999999"}, content_type="application/json")
    refused = client.post("/api/imgrec/events/", {"product_id": str(hidden.pk)}, content_type="application/json")
    # A hidden product is answered exactly like a missing one: nothing tells them apart.
    assert refused.status_code == missing.status_code == 404
    assert refused.content == missing.content
    assert not Interaction.objects.exists()
    # Out of stock but published: visible (its page exists), so its view is recorded.
    Product.objects.filter(pk=products[4].pk).update(stock=0)
    assert client.post("/api/imgrec/events/", {"product_id": str(products[4].pk)}, content_type="application/json").status_code == 201

    # Views recorded while products were published; then one of them is unpublished.
    viewed = [products[0], products[3], products[6]]
    for p in viewed:
        assert client.post("/api/imgrec/events/", {"product_id": str(p.pk)}, content_type="application/json").status_code == 201
    Product.objects.filter(pk=products[3].pk).update(published=False)
    later_hidden = [hidden, products[3]]
    home = client.get("/").content.decode()
    recent = _recently_viewed(home)
    assert products[0].name in recent and products[6].name in recent
    assert not [p.name for p in later_hidden if re.search(rf">\s*{re.escape(p.name)}\s*<", recent)]
    api = client.get("/api/imgrec/recommendations/?limit=8").content.decode()
    fragment = client.get("/imgrec/fragments/for-you/?limit=8").content.decode()
    assert _names_in_reasons(api, viewed[:1] + viewed[2:]), api  # the visible ones still explain it
    for text in (home, api, fragment):
        assert _names_in_reasons(text, later_hidden) == []


# --- issue 13 §4: the similar endpoint and fragment answer a hidden id like a missing one ---------


def test_similar_endpoint_and_fragment_answer_hidden_and_missing_ids_alike(catalogue: Any) -> None:  # noqa: F811
    from shop_demo.catalog.models import Product

    products, _ = catalogue
    hidden = products[2]
    Product.objects.filter(pk=hidden.pk).update(published=False)
    client = Client()
    for url in ("/api/imgrec/products/{}/similar/", "/imgrec/fragments/similar/{}/"):
        missing = client.get(url.format(99999999))
        unpublished = client.get(url.format(hidden.pk))
        assert unpublished.status_code == missing.status_code == 404, url
        assert unpublished.content == missing.content
        assert client.get(url.format(products[0].pk)).status_code == 200


# --- issue 13 §3.8: a database error in a fragment is a 503, not "No such product" ----------------


FRAGMENTS = {
    "similar": "/imgrec/fragments/similar/{}/",
    "bought-together": "/imgrec/fragments/bought-together/{}/",
    "for-you": "/imgrec/fragments/for-you/?product={}",
}


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_fragment_with_the_database_failing_is_an_uncached_503(catalogue: Any, fragment: str) -> None:  # noqa: F811
    from django.db import connection

    from shop_demo.catalog.models import Product

    products, _ = catalogue
    url = FRAGMENTS[fragment].format(products[0].pk)
    client = Client()
    assert client.get(url).status_code == 200
    # A real PostgreSQL error on the product lookup (rolled back with the test's transaction).
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {Product._meta.db_table} RENAME TO imgrec_gone")
    response = client.get(url)
    assert response.status_code == 503
    assert response.content == b""
    assert "no-store" in response["Cache-Control"] and response["Retry-After"] == "30"


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_fragments_answer_hidden_and_missing_ids_alike(catalogue: Any, fragment: str) -> None:  # noqa: F811
    from shop_demo.catalog.models import Product

    products, _ = catalogue
    Product.objects.filter(pk=products[2].pk).update(published=False)
    client = Client()
    missing, hidden = (client.get(FRAGMENTS[fragment].format(pk)) for pk in (99999999, products[2].pk))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    shown = client.get(FRAGMENTS[fragment].format(products[0].pk))
    assert shown.status_code == 200
    if fragment == "for-you":  # depends on the visitor: never shared by a cache
        assert "private" in shown["Cache-Control"] and "Cookie" in shown["Vary"]


# --- issue 13 §3.3: a second primary image --------------------------------------------------------


def test_a_second_primary_upload_through_the_api_becomes_primary_and_demotes_the_old(
    staff_client: Client, make_product: Any
) -> None:
    from imgrec_app.models import IndexedImage, ProductImage

    product = make_product()
    first = post_api(staff_client, product, [("a.jpg", make_image_bytes())], {"is_primary": "true"})
    assert first.status_code == 201, first.content[:300]
    second = post_api(staff_client, product, [("b.jpg", make_image_bytes(color=(0, 90, 200)))], {"is_primary": "true"})
    assert second.status_code == 201, second.content[:300]
    rows = dict(ProductImage.objects.values_list("pk", "is_primary"))
    assert rows == {first.json()["id"]: False, second.json()["id"]: True}
    # The index's mirror of the flag follows (shelves show the primary image).
    mirrored = dict(IndexedImage.objects.values_list("source_id", "is_primary"))
    assert mirrored == {str(first.json()["id"]): False, str(second.json()["id"]): True}


def test_two_primaries_in_the_admin_inline_are_a_form_error_and_leave_no_file(
    staff_client: Client, make_product: Any
) -> None:
    from imgrec_app.models import ProductImage

    product = make_product()
    before = media_files()
    response = post_admin(
        staff_client,
        product,
        [("a.jpg", make_image_bytes()), ("b.jpg", make_image_bytes())],
        {f"{INLINE_PREFIX}-0-is_primary": "on", f"{INLINE_PREFIX}-1-is_primary": "on"},
    )
    assert "Only one image can be primary" in error_text("admin", response)
    assert not ProductImage.objects.exists()
    assert media_files() == before


def test_a_failed_image_save_deletes_the_file_it_wrote(make_product: Any) -> None:
    """A database error on the INSERT (here a real PostgreSQL trigger) after the file was stored."""
    from django.contrib.contenttypes.models import ContentType
    from django.db import DatabaseError, connection

    from imgrec_app.models import ProductImage

    product = make_product()
    table = ProductImage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION imgrec_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        cursor.execute(f"CREATE TRIGGER imgrec_test_refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION imgrec_test_refuse()")
    before = media_files()
    image = ProductImage(
        content_type=ContentType.objects.get_for_model(product),
        object_id=str(product.pk),
        image=upload("a.jpg", make_image_bytes()),
        is_primary=True,
    )
    with pytest.raises(DatabaseError, match="refused by the test"):
        image.save()
    assert media_files() == before


# --- issue 13 §3.4: a long non-ASCII file name on the host's own image field -----------------------


def test_long_non_ascii_name_on_the_hosts_image_field_is_shortened_by_bytes(
    staff_client: Client, make_product: Any
) -> None:
    from pathlib import Path

    from django.conf import settings

    from shop_demo.catalog.models import Product
    from tests.faults.http import multipart

    product = make_product()
    name = "商" * 85 + ".png"  # 85 characters, 259 bytes: over the filesystem's 255-byte limit
    assert len(name.encode()) > 255 and len(name) < 100
    fields = {
        "name": product.name,
        "slug": product.slug,
        "description": "",
        "price": str(product.price),
        "stock": str(product.stock),
        "published": "on",
        "category": str(product.category_id),
        f"{INLINE_PREFIX}-TOTAL_FORMS": "0",
        f"{INLINE_PREFIX}-INITIAL_FORMS": "0",
        f"{INLINE_PREFIX}-MIN_NUM_FORMS": "0",
        f"{INLINE_PREFIX}-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    body, ctype = multipart(fields, [("photo", name.encode(), make_image_bytes("PNG"))])
    response = staff_client.generic("POST", f"/admin/catalog/product/{product.pk}/change/", body, ctype)
    assert response.status_code == 302, response.content[:500]
    stored = Product.objects.get(pk=product.pk).photo.name
    base = stored.rsplit("/", 1)[-1]
    # At most 200 bytes, plus the "_abc1234" Django adds when that name is taken: under 255.
    assert base.endswith(".png") and base.startswith("商") and len(base.encode()) <= 200 + 8
    path = Path(settings.MEDIA_ROOT) / stored
    assert path.is_file()
    path.unlink()


def test_fit_filename_cuts_bytes_on_character_boundaries() -> None:
    from imgrec_app.fields import fit_filename

    assert fit_filename("photo.jpg") == "photo.jpg"
    cut = fit_filename("dir/" + "é" * 300 + ".jpeg", max_bytes=50)
    assert cut.startswith("dir/") and cut.endswith(".jpeg")
    assert len(cut.split("/")[1].encode()) <= 50 and "\ufffd" not in cut
    assert len(fit_filename("x" * 300, max_bytes=50).encode()) == 50


# --- issue 13 §3.5: every path that runs the model is throttled, with a memory bound on decode -----


def _photo(name: str, data: bytes) -> Any:
    return upload(name, data, "image/png")


def test_the_shops_search_page_shares_the_apis_throttle(settings: Any) -> None:
    from unittest import mock

    from django.core.cache import cache

    from imgrec_app.services import recommend

    settings.IMGREC = {**settings.IMGREC, "SEARCH_THROTTLE_RATE": "2/min"}
    cache.clear()
    png = make_image_bytes("PNG", (64, 64))
    client = Client()
    with mock.patch.object(recommend, "search_by_photo", wraps=recommend.search_by_photo) as model_path:
        pages = [
            client.post("/search/photo/", {"image": _photo("q.png", png)}, REMOTE_ADDR="203.0.113.20")
            for _ in range(3)
        ]
        assert [p.status_code for p in pages] == [200, 200, 429]
        assert int(pages[2]["Retry-After"]) > 0 and b"Too many searches" in pages[2].content
        # The same budget as the API's: the page's two searches used it up.
        api = client.post("/api/imgrec/search/", {"image": _photo("q.png", png)}, REMOTE_ADDR="203.0.113.20")
        assert api.status_code == 429
        assert model_path.call_count == 2  # the throttled requests never reached the model


@pytest.mark.parametrize("url", ["/search/photo/", "/api/imgrec/search/"])
def test_a_search_photo_too_big_to_decode_is_refused_from_its_header(url: str) -> None:
    import io
    from unittest import mock

    from PIL import Image

    from imgrec_app.ml import preprocess

    buf = io.BytesIO()
    Image.new("RGB", (5000, 4000), (200, 30, 30)).save(buf, "PNG")  # 20 Mpx: under MAX_IMAGE_PIXELS
    with mock.patch.object(preprocess, "load_rgb", wraps=preprocess.load_rgb) as decode:
        response = Client().post(url, {"image": _photo("big.png", buf.getvalue())}, REMOTE_ADDR="203.0.113.21")
    assert response.status_code in (200, 400)
    assert "search takes photos of at most 16,000,000 pixels" in response.content.decode()
    decode.assert_not_called()


def test_decoded_size_counts_jpeg_draft_scale() -> None:
    from imgrec_app.ml.preprocess import ImageInfo
    from imgrec_app.services.throttle import decoded_pixels

    assert decoded_pixels(ImageInfo("PNG", 6000, 6600, 1)) == 6000 * 6600
    assert decoded_pixels(ImageInfo("JPEG", 6000, 4000, 1)) == 750 * 500  # 1/8 scale
    assert decoded_pixels(ImageInfo("JPEG", 600, 400, 1)) == 600 * 400  # 1/2 would go below 256


# --- issue 13 §3.6: the throttle is shared by every web process (the demo's Redis cache) -----------

SPEND_BUDGET_IN_ANOTHER_PROCESS = """
import json, sys
import django
django.setup()
from django.test.utils import override_settings
from django.conf import settings
with override_settings(CACHES=json.loads(sys.argv[1]), IMGREC={**settings.IMGREC, "SEARCH_THROTTLE_RATE": "2/min"}):
    from imgrec_app.services import throttle
    for _ in range(2):
        throttle.take_search_slot("203.0.113.30", now=float(sys.argv[2]))
print("spent")
"""


def test_the_demos_cache_shares_the_search_budget_across_processes(settings: Any) -> None:
    import json
    import os
    import subprocess
    import sys
    import time
    import uuid

    from django.core.checks import Warning as CheckWarning

    import shop_demo.settings as demo
    from imgrec_app.checks_services import check_throttle_cache
    from imgrec_app.services import throttle

    redis_url = os.environ.get("IMGREC_TEST_REDIS_URL", settings.CELERY_BROKER_URL)
    caches = {"default": {**demo.CACHES["default"], "LOCATION": redis_url, "KEY_PREFIX": f"t{uuid.uuid4().hex}"}}
    settings.CACHES = caches
    settings.IMGREC = {**settings.IMGREC, "SEARCH_THROTTLE_RATE": "2/min"}
    assert check_throttle_cache() == []  # a shared cache: no warning
    now = time.time()  # one instant for both processes: the same window whatever the clock does
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    out = subprocess.run(
        [sys.executable, "-c", SPEND_BUDGET_IN_ANOTHER_PROCESS, json.dumps(caches), repr(now)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0 and "spent" in out.stdout, out.stderr[-2000:]
    with pytest.raises(throttle.Throttled):
        throttle.take_search_slot("203.0.113.30", now=now)
    throttle.take_search_slot("203.0.113.31", now=now)  # another client has its own budget

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    (warning,) = check_throttle_cache()
    assert isinstance(warning, CheckWarning) and warning.id == "imgrec_app.W030"
    settings.IMGREC = {**settings.IMGREC, "SEARCH_THROTTLE_RATE": None}
    assert check_throttle_cache() == []


# --- issue 13 §4: an INVALID HNSW index is rebuilt; pgvector >= 0.8 is checked ----------------------


def test_an_invalid_hnsw_index_is_dropped_and_rebuilt() -> None:
    from django.db import connection

    from imgrec_app.services import vectors

    model_id, dim = "invalid-index-test:v1", 8
    name = vectors.ensure_hnsw_index(model_id, dim)

    def state() -> tuple[int, bool] | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexrelid::oid::int, indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
            return cursor.fetchone()

    oid, valid = state()
    assert valid
    # What a failed CREATE INDEX CONCURRENTLY leaves behind (the test runs as the superuser).
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)", [name])
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE indexname = %s", [name])
        assert cursor.fetchone()[0] == 1  # still listed where the old code looked
    vectors._ensured.clear()  # a new process (the cache only skips the lookup within one)
    assert vectors.ensure_hnsw_index(model_id, dim) == name
    new_oid, valid = state()
    assert valid and new_oid != oid


def test_pgvector_older_than_0_8_is_an_error_and_the_installed_one_passes() -> None:
    from imgrec_app.checks_services import check_database, check_pgvector_version

    (error,) = check_pgvector_version("0.7.4")
    assert error.id == "imgrec_app.E022" and "0.8" in error.msg
    assert check_pgvector_version("0.8.0") == [] and check_pgvector_version("1.0.1") == []
    assert check_pgvector_version(None) == []
    assert [m.id for m in check_database(databases=["default"]) if m.id == "imgrec_app.E022"] == []


# --- issue 13 "Also seen": a cookie-less cross-site form POST writes nothing -----------------------


def test_a_cookieless_cross_site_form_post_to_events_is_refused(make_product: Any) -> None:
    product = make_product()
    attacker = Client(enforce_csrf_checks=True)  # no cookies at all: a form on another site
    response = attacker.post("/api/imgrec/events/", {"product_id": str(product.pk), "kind": "cart"})
    assert response.status_code == 403
    assert not Interaction.objects.exists()
    assert "sessionid" not in response.cookies  # no session was started for it
    # The shop's own page gives its scripts the CSRF cookie; with the token the event counts.
    visitor = _json_client()
    ok = _post_json(visitor, "/api/imgrec/events/", '{"product_id": "%s"}' % product.pk)
    assert ok.status_code == 201
    assert Interaction.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["shop_demo.sessions"])
def test_a_session_cookie_with_a_nul_byte_is_no_session_not_a_500(client, settings, engine):
    """Found by the schemathesis fuzz test: Django's database sessions sent a cookie with a NUL
    byte to PostgreSQL, which raised DataError (a 500 on every page reading the session).  The
    demo's session store treats any key Django would not issue as no session."""
    settings.SESSION_ENGINE = engine
    client.cookies[settings.SESSION_COOKIE_NAME] = "abcdefgh\x00ijkl"
    r = client.get("/api/imgrec/recommendations/")
    assert r.status_code == 200
    assert client.get("/api/imgrec/controls/").json() == {"paused": False, "not_interested": []}


@pytest.mark.django_db
def test_basic_auth_with_a_nul_byte_is_refused_not_a_500(client):
    """Found by the schemathesis fuzz test: DRF's default HTTP Basic authentication looked the user
    name up in PostgreSQL as sent, and a NUL byte in it raised DataError.  The demo authenticates
    API calls by session only."""
    import base64

    token = base64.b64encode(b"ad\x00min:pw").decode()
    r = client.post("/api/imgrec/reindex/", {"scope": "stale"}, HTTP_AUTHORIZATION=f"Basic {token}")
    assert r.status_code in (401, 403)


# --- found by the write-window soak (2026-12-02): the shelf cache's Redis down -----------------


def test_similar_api_with_the_shelf_caches_redis_down_is_computed_not_a_500(catalogue: Any) -> None:  # noqa: F811
    from django.conf import settings
    from django.test import override_settings

    from tests.faults.broker import free_port

    products, _ = catalogue
    caches = {
        **settings.CACHES,
        # A real Redis cache whose server is down: nothing listens there, connections are refused.
        "imgrec-shelves": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        },
    }
    imgrec = {**settings.IMGREC, "SHELF_CACHE": True, "SHELF_CACHE_ALIAS": "imgrec-shelves"}
    with override_settings(CACHES=caches, IMGREC=imgrec):
        response = Client(raise_request_exception=False).get(f"/api/imgrec/products/{products[0].pk}/similar/")
    assert response.status_code == 200
    assert any(item["source"].startswith("similar") for item in response.json()["results"])
