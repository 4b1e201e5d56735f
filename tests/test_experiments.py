"""A/B experiments: deterministic sticky assignment (anonymous → login → same variant), the
variant's settings change that visitor's shelf (and only theirs), impressions record the variant,
the API shows the visitor's own assignment, config checks E048–E052, the override is per thread."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.core.checks import Error
from django.test import Client

from imgrec_app.checks_tracking import check_tracking
from imgrec_app.conf import active_overrides, imgrec_settings, override
from imgrec_app.models import ExperimentAssignment, ShelfImpression
from imgrec_app.services import experiments, history
from tests.test_tracking import _page, _similar_links, shop  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db
API = "/api/imgrec"


def _experiment(control=50, variant=50, settings=None, shelves=("similar",)):
    return {
        "shelves": list(shelves),
        "control": "control",
        "variants": {
            "control": {"traffic": control, "settings": {}},
            "capped": {"traffic": variant, "settings": settings or {"DIVERSITY": "category", "CATEGORY_CAP": 1}},
        },
    }


def _assignment(client: Client, name: str = "exp") -> str | None:
    rows = client.get(f"{API}/experiments/").json()["results"]
    return next(r["variant"] for r in rows if r["experiment"] == name)


def test_bucket_is_deterministic_and_traffic_is_split():
    assert experiments.bucket("a", "k") == experiments.bucket("a", "k")
    assert experiments.bucket("a", "k") != experiments.bucket("b", "k")
    points = [experiments.bucket("a", str(i)) for i in range(4000)]
    share = sum(p < 30 for p in points) / len(points)
    assert 0.27 < share < 0.33


def test_traffic_below_100_leaves_the_rest_outside(settings):
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment(10, 10)}}
    assigned = [experiments.variant_for_key("exp", str(i)) for i in range(2000)]
    outside = assigned.count(None) / len(assigned)
    assert 0.75 < outside < 0.85 and {"control", "capped"} <= set(assigned)


def test_assignment_stays_the_same_after_login_and_in_later_sessions(settings, db):
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment()}}
    user = User.objects.create_user("cai", password="pw")
    own = experiments.variant_for_key("exp", f"user:{user.pk}")
    # An anonymous visitor whose hash lands in the other variant than the user's own hash would.
    for _ in range(50):
        client = Client()
        anonymous = _assignment(client)
        if anonymous != own:
            break
    assert anonymous is not None and anonymous != own
    assert client.login(username="cai", password="pw")
    assert _assignment(client) == anonymous
    assert ExperimentAssignment.objects.get(user=user, experiment="exp").variant == anonymous
    # A later session on another device: a new anonymous id, the same variant once logged in.
    later = Client()
    assert later.login(username="cai", password="pw")
    assert _assignment(later) == anonymous


def test_logged_in_user_without_history_gets_a_stored_variant(settings, db):
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment()}}
    user = User.objects.create_user("dan", password="pw")
    client = Client()
    client.force_login(user)  # no anonymous visitor id before
    variant = _assignment(client)
    assert variant == experiments.variant_for_key("exp", f"user:{user.pk}")
    assert ExperimentAssignment.objects.filter(user=user, experiment="exp", variant=variant).count() == 1


def test_bots_and_inactive_experiments_are_in_nothing(settings, db):
    exp = {**_experiment(), "active": False}
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": exp}}
    assert client_variant(Client()) is None
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment()}}
    bot = Client(HTTP_USER_AGENT="Googlebot/2.1")
    assert _assignment(bot) is None


def client_variant(client: Client) -> str | None:
    return {r["experiment"]: r["variant"] for r in client.get(f"{API}/experiments/").json()["results"]}.get("exp")


def test_variant_settings_change_that_visitors_shelf_and_are_recorded(client, shop, settings):  # noqa: F811
    plain = _similar_links(_page(Client(), shop[0]))
    # Everyone in "capped": at most one product per category on the similar shelf.
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment(0, 100)}}
    capped = _similar_links(_page(client, shop[0]))
    assert capped != plain
    imp = ShelfImpression.objects.filter(shelf="similar").latest("created_at")
    assert (imp.experiment, imp.variant) == ("exp", "capped")
    # The similar items proper (not the fallbacks that fill the shelf) are one per category.
    categories = [
        type(shop[0]).objects.get(pk=pk).category_id
        for pk, source in zip(imp.item_ids, imp.item_sources)
        if source.startswith("similar:")
    ]
    assert categories and len(categories) == len(set(categories))
    # Control: the default shelf (the same products as without the experiment), recorded as control.
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment(100, 0)}}
    control = _similar_links(_page(Client(), shop[0]))
    assert [link.split("?")[0] for link in control] == [link.split("?")[0] for link in plain]
    assert ShelfImpression.objects.filter(shelf="similar").latest("created_at").variant == "control"
    # The for-you shelf of the same page is not in the experiment.
    assert not ShelfImpression.objects.filter(shelf="foryou").exclude(experiment="").exists()


def test_override_is_local_to_its_thread_and_block():
    seen: dict[str, object] = {}
    inside = threading.Event()
    release = threading.Event()

    def other_thread() -> None:
        inside.wait(5)
        seen["other"] = imgrec_settings.CATEGORY_CAP
        release.set()

    t = threading.Thread(target=other_thread)
    t.start()
    default = imgrec_settings.CATEGORY_CAP
    with override({"CATEGORY_CAP": default + 7}):
        assert imgrec_settings.CATEGORY_CAP == default + 7 and active_overrides() == {"CATEGORY_CAP": default + 7}
        inside.set()
        release.wait(5)
    t.join(5)
    assert seen["other"] == default and imgrec_settings.CATEGORY_CAP == default and active_overrides() == {}


def _ids(settings, value):
    settings.IMGREC = {**settings.IMGREC, **value}
    return sorted({m.id for m in check_tracking() if isinstance(m, Error)})


@pytest.mark.parametrize(
    "value, code",
    [
        ({"TRACKING": "yes"}, "imgrec_app.E048"),
        ({"ATTRIBUTION_WINDOW": 0}, "imgrec_app.E048"),
        ({"TRACKING_BEACON_RATE": "lots"}, "imgrec_app.E048"),
        ({"EXPERIMENTS": ["exp"]}, "imgrec_app.E049"),
        ({"EXPERIMENTS": {"bad name!": _experiment()}}, "imgrec_app.E049"),
        ({"EXPERIMENTS": {"exp": {**_experiment(), "shelves": ["sidebar"]}}}, "imgrec_app.E049"),
        ({"EXPERIMENTS": {"exp": {**_experiment(), "control": "nope"}}}, "imgrec_app.E050"),
        ({"EXPERIMENTS": {"exp": _experiment(60, 50)}}, "imgrec_app.E050"),
        ({"EXPERIMENTS": {"exp": _experiment(50, "half")}}, "imgrec_app.E050"),
        ({"EXPERIMENTS": {"exp": _experiment(settings={"PRODUCT_MODEL": "x.Y"})}}, "imgrec_app.E051"),
        ({"EXPERIMENTS": {"exp": _experiment(settings={"CATEGORY_CAP": 0})}}, "imgrec_app.E051"),
        ({"EXPERIMENTS": {"exp": _experiment(settings={"FORYOU_WEIGHTS": {"interest": -1}})}}, "imgrec_app.E051"),
        ({"EXPERIMENTS": {"a": _experiment(), "b": _experiment()}}, "imgrec_app.E052"),
    ],
)
def test_checks_refuse_malformed_config(settings, value, code):
    assert _ids(settings, value) == [code]


def test_checks_accept_the_documented_example(settings):
    example = {
        "similar-text-weight": {
            "shelves": ["similar"],
            "control": "control",
            "variants": {
                "control": {"traffic": 50, "settings": {}},
                "text-heavy": {"traffic": 50, "settings": {"SIMILAR_WEIGHTS": {"image": 1, "text": 2, "coview": 0.3}}},
            },
            "active": True,
        },
        "b": {**_experiment(), "active": False},  # inactive: no overlap
    }
    assert _ids(settings, {"EXPERIMENTS": example}) == []


def test_visitor_id_is_the_stable_key(db, settings):
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {"exp": _experiment()}}
    client = Client()
    first = _assignment(client)
    vid = history.visitor_id(client.get("/").wsgi_request)
    assert first == experiments.variant_for_key("exp", str(vid))
    assert all(_assignment(client) == first for _ in range(3))
