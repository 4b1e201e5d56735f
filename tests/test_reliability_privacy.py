"""Visitors, permissions and privacy (issue 7, cases 28–34), through the real request stack.

Service-level guarantees are tested in tests/test_history.py (merge once, own export/clear,
user deletion), tests/test_api.py (``?user=`` on the history API, CSRF on events, reindex
permission) and tests/test_admin.py (status page permissions, double click); here the same
promises are checked end to end with Django's cache middleware on, with forged parameters on
every personal URL, on a shared device, with CSRF enforced on every session write, with a
throttled search, with two re-index requests at the same instant, and with a database error
inside the shelves of a product page served in a request transaction.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.db import connection
from django.template import Context, Template
from django.test import Client

from imgrec_app.models import Interaction, ReindexRun
from imgrec_app.services import history, reindex
from tests.conftest import make_image_bytes
from tests.test_recommend import _request, catalogue  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

CACHED_MIDDLEWARE = "django.middleware.cache.UpdateCacheMiddleware"


@pytest.fixture
def page_cache(settings: Any) -> None:
    """Django's whole-site cache middleware on a real (local-memory) cache."""
    settings.MIDDLEWARE = [
        CACHED_MIDDLEWARE,
        *settings.MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
    ]
    settings.CACHE_MIDDLEWARE_SECONDS = 600
    cache.clear()


def _visitor_id(client: Client) -> str:
    return str(client.session.get(history.VISITOR_SESSION_KEY, ""))


def _reasons_naming(html_or_json: str, products: list[Any]) -> list[str]:
    """ "Because you viewed X" reasons that name one of ``products``."""
    return [p.name for p in products if f"Because you viewed {p.name}" in html_or_json]


def _recently_viewed(html: str) -> str:
    match = re.search(r"<h3>Recently viewed</h3>(.*?)</section>", html, re.S)
    return match.group(1) if match else ""


PERSONAL_URLS = [
    "/api/imgrec/recommendations/?limit=8",
    "/api/imgrec/history/",
    "/imgrec/fragments/for-you/?limit=8",
    "/",  # recently viewed + the for-you shelf
]


# --- 28: nothing derived from visitor A reaches visitor B -------------------------------------


@pytest.mark.parametrize("b_logs_in", [False, True], ids=["b-anonymous", "b-logged-in"])
def test_no_visitor_sees_anything_derived_from_another_with_caching_on(
    b_logs_in: bool,
    catalogue: Any,  # noqa: F811
    page_cache: None,
) -> None:
    products, _ = catalogue
    a_seen, b_seen = products[0:6:3], products[1:2]
    alice = User.objects.create_user("alice", password="pw")
    a = Client()
    a.force_login(alice)
    anon_a = Client()  # an anonymous visitor with a history of their own
    for p in a_seen:
        assert a.get(p.get_absolute_url()).status_code == 200
    anon_seen = products[9:10]
    anon_a.get(anon_seen[0].get_absolute_url())
    a_secrets = {
        "user": str(alice.pk),
        "user_id": str(alice.pk),
        "username": "alice",
        "visitor": _visitor_id(anon_a),
        "visitor_id": _visitor_id(anon_a),
        "session": anon_a.session.session_key,
        "sessionid": a.session.session_key,
    }
    # A loads every personal URL first, so any shared cache entry would be A's.
    for url in PERSONAL_URLS:
        assert a.get(url).status_code == 200
        assert anon_a.get(url).status_code == 200
    assert _reasons_naming(a.get("/imgrec/fragments/for-you/?limit=8").content.decode(), a_seen)

    b = Client()
    if b_logs_in:
        b.force_login(User.objects.create_user("bob", password="pw"))
    for p in b_seen:
        b.get(p.get_absolute_url())
    others = [*a_seen, *anon_seen]
    forged = "&".join(f"{k}={v}" for k, v in a_secrets.items())
    for url in PERSONAL_URLS:
        plain = b.get(url)
        spoofed = b.get(f"{url}{'&' if '?' in url else '?'}{forged}")
        for response in (plain, spoofed):
            assert response.status_code == 200
            body = response.content.decode()
            assert not _reasons_naming(body, others), (url, body[:400])
            assert not any(p.name in _recently_viewed(body) for p in others), url
        if url.startswith("/api/"):
            assert plain.json() == spoofed.json(), url
            assert "Cookie" in plain["Vary"] and "private" in plain["Cache-Control"]
    mine = b.get("/api/imgrec/history/").json()["results"]
    assert {r["product_id"] for r in mine} == {str(p.pk) for p in b_seen}
    for item in b.get("/api/imgrec/recommendations/?limit=8").json()["results"]:
        assert set(item["because_of"]) <= {str(p.pk) for p in b_seen}, item


def test_writes_ignore_any_field_naming_another_visitor(catalogue: Any) -> None:  # noqa: F811
    products, _ = catalogue
    alice = User.objects.create_user("alice", password="pw")
    a = Client()
    a.force_login(alice)
    a.post("/api/imgrec/events/", {"product_id": products[0].pk}, content_type="application/json")
    b = Client()
    forged = {
        "product_id": products[1].pk,
        "kind": "cart",
        "user": alice.pk,
        "user_id": alice.pk,
        "visitor_id": str(uuid.uuid4()),
    }
    assert b.post("/api/imgrec/events/", forged, content_type="application/json").status_code == 201
    row = Interaction.objects.get(object_id=str(products[1].pk))
    assert row.user is None and str(row.visitor_id) == _visitor_id(b) != forged["visitor_id"]
    assert b.delete(f"/api/imgrec/history/?user={alice.pk}&user_id={alice.pk}").status_code == 204
    assert not Interaction.objects.filter(pk=row.pk).exists()  # B cleared B's own history
    assert Interaction.objects.filter(user=alice).count() == 1  # and nothing of A's


def test_template_tags_read_only_the_requests_visitor(catalogue: Any) -> None:  # noqa: F811
    """A template cannot point the tags at someone else: they take no visitor argument and
    ignore context variables such as ``user``."""
    products, _ = catalogue
    alice = User.objects.create_user("alice", password="pw")
    a_request = _request(user=alice)
    for p in products[:3]:
        history.record(a_request, p)
    b_request = _request()
    html = Template(
        "{% load imgrec_tags %}{% imgrec_recently_viewed as recent %}{% for p in recent %}[{{ p.name }}]{% endfor %}"
        "{% imgrec_for_you_shelf limit=8 %}"
    ).render(Context({"request": b_request, "user": alice, "visitor_id": "whatever"}))
    assert "[" not in html and not _reasons_naming(html, products[:3])


# --- 29: merge on login once; a shared device ---------------------------------------------------


def test_shared_device_b_gets_only_the_history_after_a_logged_out(catalogue: Any) -> None:  # noqa: F811
    products, _ = catalogue
    alice = User.objects.create_user("alice", password="pw")
    bob = User.objects.create_user("bob", password="pw")
    device = Client()
    device.get(products[0].get_absolute_url())  # anonymous, before A logs in: becomes A's
    assert device.post("/accounts/login/", {"username": "alice", "password": "pw"}).status_code == 302
    device.get(products[3].get_absolute_url())
    assert device.post("/accounts/logout/").status_code == 302
    device.get(products[6].get_absolute_url())  # anonymous again, after A left
    assert device.post("/accounts/login/", {"username": "bob", "password": "pw"}).status_code == 302

    def ids(user: User) -> set[str]:
        return set(Interaction.objects.filter(user=user).values_list("object_id", flat=True))

    assert ids(alice) == {str(products[0].pk), str(products[3].pk)}
    assert ids(bob) == {str(products[6].pk)}
    assert not Interaction.objects.filter(user__isnull=True).exists()
    recs = device.get("/api/imgrec/recommendations/?limit=8").json()["results"]
    # Every reason comes from B's own history (never from A's products); popularity items name none.
    assert recs and all(set(r["because_of"]) <= {str(products[6].pk)} for r in recs)
    assert any(r["because_of"] == [str(products[6].pk)] for r in recs)
    # Logging in again merges nothing twice.
    device.post("/accounts/logout/")
    device.post("/accounts/login/", {"username": "bob", "password": "pw"})
    assert ids(bob) == {str(products[6].pk)} and Interaction.objects.count() == 3


# --- 30: CSRF on every session write ------------------------------------------------------------


def _csrf_client(user: User | None = None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def _with_token(client: Client) -> dict[str, str]:
    client.get("/accounts/login/")  # any page with a form sets the csrftoken cookie
    return {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}


def test_every_session_write_needs_a_csrf_token(catalogue: Any, make_product: Any) -> None:  # noqa: F811
    products, _ = catalogue
    staff = User.objects.create_user("staffer", password="pw", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["reindex", "add_productimage", "view_indexedimage"])
    )
    shopper = User.objects.create_user("shopper", password="pw")
    anonymous = _csrf_client()
    anonymous.get(products[0].get_absolute_url())  # now has a session and a history
    png = make_image_bytes("PNG", (64, 64))
    writes: list[tuple[Client, str, str, dict[str, Any]]] = [
        (
            anonymous,
            "post",
            "/api/imgrec/events/",
            {"data": {"product_id": products[1].pk}, "content_type": "application/json"},
        ),
        (anonymous, "delete", "/api/imgrec/history/", {}),
        (anonymous, "post", "/api/imgrec/search/", {"data": {"image": _file("s.png", png)}}),
        (
            _csrf_client(shopper),
            "post",
            "/api/imgrec/events/",
            {"data": {"product_id": products[1].pk}, "content_type": "application/json"},
        ),
        (_csrf_client(shopper), "delete", "/api/imgrec/history/", {}),
        (_csrf_client(staff), "post", "/api/imgrec/reindex/", {"data": {"scope": "all"}}),
        (
            _csrf_client(staff),
            "post",
            f"/api/imgrec/products/{products[2].pk}/images/",
            {"data": {"image": _file("u.png", png)}},
        ),
        (_csrf_client(staff), "post", "/admin/imgrec_app/indexedimage/status/", {"data": {"scope": "all"}}),
    ]
    before = Interaction.objects.count()
    for client, method, url, kwargs in writes:
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code == 403, (method, url, response.status_code)
    assert Interaction.objects.count() == before and not ReindexRun.objects.exists()
    # The same writes with the token go through (the check above is not a blanket refusal).
    ok = anonymous.post(
        "/api/imgrec/events/", {"product_id": products[1].pk}, content_type="application/json", **_with_token(anonymous)
    )
    assert ok.status_code == 201
    staff_client = _csrf_client(staff)
    assert staff_client.post("/api/imgrec/reindex/", {"scope": "all"}, **_with_token(staff_client)).status_code == 202


def _file(name: str, data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/png")


# --- 31: search by photo is throttled per client address ------------------------------------------


def test_search_is_throttled_with_retry_after_and_forged_forwarding_headers_do_not_reset_it(settings: Any) -> None:
    settings.IMGREC = {**settings.IMGREC, "SEARCH_THROTTLE_RATE": "2/min"}
    cache.clear()
    png = make_image_bytes("PNG", (64, 64))
    client = Client()

    def search(**extra: str) -> Any:
        return client.post("/api/imgrec/search/", {"image": _file("q.png", png)}, REMOTE_ADDR="203.0.113.7", **extra)

    assert [search().status_code for _ in range(2)] == [503, 503]  # nothing indexed yet, but counted
    limited = search()
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    for forged in (
        {"HTTP_X_FORWARDED_FOR": "198.51.100.1"},
        {"HTTP_X_FORWARDED_FOR": "198.51.100.2, 203.0.113.7"},
        {"HTTP_X_REAL_IP": "198.51.100.3"},
        {"HTTP_FORWARDED": "for=198.51.100.4"},
    ):
        assert search(**forged).status_code == 429, forged
    other = Client().post("/api/imgrec/search/", {"image": _file("q.png", png)}, REMOTE_ADDR="203.0.113.8")
    assert other.status_code == 503  # another address has its own budget


# --- 32: who may re-index; a double click creates no duplicate work ---------------------------------


@pytest.mark.parametrize("who", ["non-staff-with-the-permission", "staff-without-the-permission"])
def test_only_staff_with_the_permission_can_reindex_anywhere(who: str, make_product: Any, add_image: Any) -> None:
    add_image(make_product())
    user = User.objects.create_user("someone", password="pw", is_staff=who.startswith("staff"))
    if who.startswith("non-staff"):
        user.user_permissions.add(Permission.objects.get(codename="reindex"))
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_indexedimage", "change_product", "view_product"])
    )
    client = Client()
    client.force_login(user)
    with mock.patch("celery.app.base.Celery.send_task") as queued:
        assert client.post("/api/imgrec/reindex/", {"scope": "all"}).status_code == 403
        status = client.post("/admin/imgrec_app/indexedimage/status/", {"scope": "all"})
        assert status.status_code in (302, 403)
        action = client.post(
            "/admin/catalog/product/",
            {"action": "reindex_products_action", "_selected_action": [p.pk for p in _products()]},
        )
        assert action.status_code in (200, 302)
    assert not ReindexRun.objects.exists() and not queued.called


def test_a_second_reindex_request_joins_the_running_one(client: Client, make_product: Any, add_image: Any) -> None:
    """The API half of test_admin's double click: while images are pending, a repeat returns
    the same run (200, ``created: false``) and queues nothing more."""
    add_image(make_product())
    user = User.objects.create_user("merchant", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="reindex"))
    client.force_login(user)
    with mock.patch("celery.app.base.Celery.send_task") as queued:
        first = client.post("/api/imgrec/reindex/", {"scope": "all"})
        second = client.post("/api/imgrec/reindex/", {"scope": "all"})
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["run_id"] == second.json()["run_id"] and second.json()["created"] is False
    assert second.json()["remaining"] == 1
    assert ReindexRun.objects.count() == 1 and queued.call_count == 1


def _products() -> list[Any]:
    from shop_demo.catalog.models import Product

    return list(Product.objects.all())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["api", "admin"])
def test_two_reindex_clicks_at_the_same_instant_start_one_run(path: str, make_product: Any, add_image: Any) -> None:
    """test_admin checks a second click after the first; here both requests race."""
    for i in range(3):
        add_image(make_product(), make_image_bytes(color=(20 * i, 0, 200)), name=f"{i}.jpg")
    user = User.objects.create_user("merchant", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["reindex", "view_indexedimage"]))
    url = "/api/imgrec/reindex/" if path == "api" else "/admin/imgrec_app/indexedimage/status/"
    start = threading.Barrier(2)
    answers: list[Any] = []

    def click() -> None:
        try:
            client = Client()
            client.force_login(user)
            start.wait(10)
            answers.append(client.post(url, {"scope": "all"}))
        except BaseException as exc:
            answers.append(exc)
        finally:
            connection.close()

    # Make the race certain: both requests are past their "is a run going?" query before either
    # creates a run (with a lock around start_run, the second never gets here: the wait times out).
    inside = threading.Barrier(2)
    select_images = reindex.select_images

    def both_inside(*args: Any, **kwargs: Any) -> Any:
        try:
            inside.wait(3)
        except threading.BrokenBarrierError:
            pass
        return select_images(*args, **kwargs)

    with (
        mock.patch("celery.app.base.Celery.send_task") as queued,
        mock.patch.object(reindex, "select_images", both_inside),
    ):
        threads = [threading.Thread(target=click) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    assert ReindexRun.objects.count() == 1
    assert queued.call_count == 1
    if path == "api":
        runs = {a.json()["run_id"] for a in answers}
        assert len(runs) == 1 and sorted(a.status_code for a in answers) == [200, 202]


# --- 33: deleting a user removes their history at once ---------------------------------------------


def test_deleting_a_user_through_the_admin_removes_their_history_and_personal_shelves(catalogue: Any) -> None:  # noqa: F811
    products, _ = catalogue
    carol = User.objects.create_user("carol", password="pw")
    c = Client()
    c.force_login(carol)
    for p in products[:3]:
        c.get(p.get_absolute_url())
    other = Client()
    other.get(products[5].get_absolute_url())
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    assert admin.post(f"/admin/auth/user/{carol.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Interaction.objects.filter(object_id__in=[str(p.pk) for p in products[:3]]).exists()
    assert Interaction.objects.count() == 1  # only the other visitor's view
    # Carol's old session is anonymous now and shows nothing of hers.
    assert c.get("/api/imgrec/history/").json()["results"] == []
    assert not _reasons_naming(c.get("/imgrec/fragments/for-you/").content.decode(), products[:3])


# --- 34: a database error inside the shelves does not break the page --------------------------------


def test_product_page_survives_a_database_error_in_the_vector_query_inside_a_request_transaction(
    client: Client,
    catalogue: Any,  # noqa: F811
    caplog: Any,
) -> None:
    """test_templatetags makes the query raise in Python; here PostgreSQL itself fails the
    statement while the page runs in ``ATOMIC_REQUESTS``: the shelf's savepoint keeps the
    request's transaction usable, the page renders (200) and the error is logged."""
    products, _ = catalogue
    connection.settings_dict["ATOMIC_REQUESTS"] = True

    def fail_vector_queries(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if "<=>" in sql:
            return execute("SELECT 1 / 0", None, many, context)  # division_by_zero, from the server
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(fail_vector_queries):
            response = client.get(products[0].get_absolute_url())
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    assert response.status_code == 200
    assert products[0].name in response.content.decode()
    assert "division by zero" in caplog.text
    assert Interaction.objects.filter(object_id=str(products[0].pk)).exists()  # the view was recorded
