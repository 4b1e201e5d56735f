"""The admin's "Shelf performance / experiments" page: staff with the view permission only, the
table with intervals and the significance marker, filters (bad ones: a 400 with the error), the
CSV download, and the plot PNG."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from tests.test_experiment_stats import EXPERIMENT, add_arm

pytestmark = pytest.mark.django_db

PAGE = "/admin/imgrec_app/indexedimage/experiments/"
PLOT = "/admin/imgrec_app/indexedimage/experiments/plot.png"


@pytest.fixture
def experiments(settings):
    from tests.test_experiment_stats import EXPERIMENTS

    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": EXPERIMENTS}


@pytest.fixture
def rows(experiments):
    today = timezone.now().date()
    add_arm(variant="baseline", impressions=300, clicked=30, carted=6, day=today - dt.timedelta(days=1))
    add_arm(variant="baseline", impressions=300, clicked=30, carted=6, day=today)
    add_arm(variant="image-only", impressions=300, clicked=75, carted=15, day=today - dt.timedelta(days=1))
    add_arm(variant="image-only", impressions=300, clicked=80, carted=14, day=today)
    add_arm(variant="image-only", impressions=40, clicked=2, day=today, source="fallback:popular")


@pytest.fixture
def analyst(client):
    user = User.objects.create_user("analyst", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_shelfimpression"))
    client.force_login(user)
    return user


def test_page_shows_rates_intervals_and_the_significant_variant(client, analyst, rows):
    r = client.get(PAGE)
    assert r.status_code == 200
    html = r.content.decode()
    assert 'id="imgrec-experiments"' in html
    # The variant's total row is significant, the control's is not.
    assert 'data-variant="image-only"' in html
    total_rows = [line for line in html.split("<tr") if 'data-source=""' in line]
    variant_row = next(line for line in total_rows if 'data-variant="image-only"' in line)
    control_row = next(line for line in total_rows if 'data-variant="baseline"' in line)
    assert "imgrec-significant-row" in variant_row and "★" in variant_row
    assert "imgrec-significant-row" not in control_row and "(control)" in control_row
    assert "10.0 %" in control_row  # 60 / 600
    assert "p = 0.000" in variant_row  # 155/640 vs 60/600
    # A Wilson interval for the control's CTR.
    assert "imgrec-ci" in control_row


def test_filters_narrow_the_report_and_bad_ones_are_a_400(client, analyst, rows):
    today = timezone.now().date().isoformat()
    html = client.get(PAGE, {"since": today}).content.decode()
    assert html.count('data-source=""') == 2
    r = client.get(PAGE, {"shelf": "foryou"})
    assert r.status_code == 200 and "No shelf impressions" in r.content.decode()
    r = client.get(PAGE, {"since": "2026-05-02", "until": "2026-05-01"})
    assert r.status_code == 400 and "The start date is after the end date." in r.content.decode()
    assert client.get(PAGE, {"since": "not-a-date"}).status_code == 400
    assert client.get(PAGE, {"shelf": "<script>"}).status_code == 400


def test_csv_download_has_one_row_per_day_shelf_source_and_variant(client, analyst, rows):
    r = client.get(PAGE, {"format": "csv"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert "attachment" in r["Content-Disposition"]
    data = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert len(data) == 5  # 2 days x 2 variants of similar:image + 1 fallback row
    assert {row["variant"] for row in data} == {"baseline", "image-only"}
    today = timezone.now().date().isoformat()
    assert (
        len(list(csv.DictReader(io.StringIO(client.get(PAGE, {"format": "csv", "since": today}).content.decode()))))
        == 3
    )


def test_plot_is_a_png(client, analyst, rows):
    # matplotlib is the [eval] extra: a web process with [api] only shows the page without the plot
    # (test_without_matplotlib_the_page_says_so), as the torch-free job runs it.
    pytest.importorskip("matplotlib")
    html = client.get(PAGE).content.decode()
    assert f"experiment={EXPERIMENT}" in html and "plot.png" in html
    r = client.get(PLOT, {"shelf": "similar", "experiment": EXPERIMENT})
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(PLOT, {"experiment": EXPERIMENT}).status_code == 400
    assert client.get(PLOT, {"shelf": "similar", "metric": "nope"}).status_code == 400


def test_without_matplotlib_the_page_says_so(client, analyst, rows, monkeypatch):
    # None in sys.modules is how Python marks a module as not importable (find_spec gives None).
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    html = client.get(PAGE).content.decode()
    assert "The plot needs matplotlib" in html and "plot.png" not in html
    r = client.get(PLOT, {"shelf": "similar", "experiment": EXPERIMENT})
    assert r.status_code == 501


def test_page_is_for_staff_with_the_view_permission(client, rows):
    assert client.get(PAGE).status_code == 302  # anonymous: the admin's login page
    assert client.get(PLOT, {"shelf": "similar"}).status_code == 302
    shopper = User.objects.create_user("shopper", password="pw")
    client.force_login(shopper)
    assert client.get(PAGE).status_code == 302  # not staff: the admin's login page again
    staff = User.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(PAGE).status_code == 403  # staff without the permission
    assert client.get(PAGE, {"format": "csv"}).status_code == 403
    assert client.get(PLOT, {"shelf": "similar"}).status_code == 403


def test_superuser_sees_the_link_on_the_status_page(admin_client):
    html = admin_client.get("/admin/imgrec_app/indexedimage/status/").content.decode()
    assert PAGE in html
