"""Shelf-performance statistics: Wilson intervals and the z-test against hand-computed values, and
the report on real tracking rows in PostgreSQL (grouping, attribution to the impression's day,
the control from IMGREC["EXPERIMENTS"], significance that flips with the data, CSV, command)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import uuid

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.utils import timezone

from imgrec_app.models import ShelfClick, ShelfConversion, ShelfImpression
from imgrec_app.services import experiment_stats as stats

EXPERIMENT = "similar-text-weight"
EXPERIMENTS = {
    EXPERIMENT: {
        "shelves": ["similar"],
        "control": "baseline",
        "variants": {"baseline": {"traffic": 50, "settings": {}}, "image-only": {"traffic": 50, "settings": {}}},
    }
}


# --- pure statistics ----------------------------------------------------------------------------------


def test_wilson_interval_matches_hand_computed_values():
    # 10 / 100 at 95 %: p = 0.1, z = 1.959964, z²/n = 0.0384146;
    # centre = (0.1 + 0.0192073) / 1.0384146 = 0.114797, half = 1.887459 · √0.00099604 = 0.059568.
    low, high = stats.wilson_interval(10, 100)
    assert low == pytest.approx(0.055229, abs=1e-5)
    assert high == pytest.approx(0.174366, abs=1e-5)
    # 0 successes: the interval starts at 0 and is not empty (Wald's would be [0, 0]);
    # upper bound z²/(n + z²) = 3.841459 / 23.841459.
    low, high = stats.wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.161125, abs=1e-5)
    # n successes mirrors 0 successes.
    low, high = stats.wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(1 - 0.161125, abs=1e-5)
    assert stats.wilson_interval(0, 0) is None


def test_wilson_interval_refuses_impossible_counts():
    for successes, trials in [(5, 4), (-1, 10), (1, -1)]:
        with pytest.raises(ValueError):
            stats.wilson_interval(successes, trials)


def test_two_proportion_z_test_matches_hand_computed_values():
    # 200/1000 vs 150/1000: pooled 0.175, se = √(0.175 · 0.825 · 0.002) = 0.0169926,
    # z = 0.05 / 0.0169926 = 2.94245, two-sided p = erfc(z / √2) = 0.003256.
    result = stats.two_proportion_z_test(stats.rate(200, 1000), stats.rate(150, 1000))
    assert result.z == pytest.approx(2.94245, abs=1e-4)
    assert result.p_value == pytest.approx(0.003256, abs=1e-5)
    assert result.difference == pytest.approx(0.05)
    assert result.lift == pytest.approx(1 / 3)
    assert result.enough_data and result.significant
    # The same rates on a tenth of the traffic: z = 0.930, p = 0.352, not significant.
    small = stats.two_proportion_z_test(stats.rate(20, 100), stats.rate(15, 100))
    assert small.p_value == pytest.approx(0.3524, abs=1e-3)
    assert not small.significant
    # Symmetric: swapping the arms flips z, keeps p.
    swapped = stats.two_proportion_z_test(stats.rate(150, 1000), stats.rate(200, 1000))
    assert swapped.z == pytest.approx(-result.z) and swapped.p_value == pytest.approx(result.p_value)


def test_z_test_needs_enough_events_to_call_a_difference():
    # 3/40 vs 0/40: p ≈ 0.077 anyway, but the pooled rate gives 40 · 0.0375 = 1.5 expected
    # successes per arm (< 5): never significant, however small p gets.
    tiny = stats.two_proportion_z_test(stats.rate(6, 40), stats.rate(0, 40))
    assert tiny.p_value < 0.05 and not tiny.enough_data and not tiny.significant
    same = stats.two_proportion_z_test(stats.rate(0, 50), stats.rate(0, 50))
    assert same.p_value == 1.0 and not same.significant
    empty = stats.two_proportion_z_test(stats.rate(0, 0), stats.rate(3, 10))
    assert empty.p_value is None and not empty.significant


# --- rows in the database ------------------------------------------------------------------------------


def add_arm(
    *,
    variant: str,
    impressions: int,
    clicked: int,
    carted: int = 0,
    purchased: int = 0,
    shelf: str = "similar",
    source: str = "similar:image",
    experiment: str = EXPERIMENT,
    day: dt.date | None = None,
    extra_clicks: int = 0,
) -> None:
    """``impressions`` shelves of which the first ``clicked`` got a click, the first ``carted`` of
    those an add-to-cart and the first ``purchased`` a purchase; ``extra_clicks`` impressions get
    a second click (which must not raise the CTR)."""
    when = timezone.now() if day is None else dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    rows = ShelfImpression.objects.bulk_create(
        ShelfImpression(
            rec_id=uuid.uuid4(),
            visitor_id=uuid.uuid4(),
            shelf=shelf,
            source=source,
            experiment=experiment,
            variant=variant,
            item_ids=["1", "2"],
            created_at=when,
        )
        for _ in range(impressions)
    )
    ct = ContentType.objects.get(app_label="catalog", model="product")
    clicks = ShelfClick.objects.bulk_create(
        ShelfClick(impression=imp, content_type=ct, object_id="1", position=0, created_at=when)
        for imp in rows[:clicked]
    )
    ShelfClick.objects.bulk_create(
        ShelfClick(impression=imp, content_type=ct, object_id="2", position=1, created_at=when)
        for imp in rows[:extra_clicks]
    )
    ShelfConversion.objects.bulk_create(
        [ShelfConversion(click=c, kind="cart", created_at=when) for c in clicks[:carted]]
        + [ShelfConversion(click=c, kind="purchase", created_at=when) for c in clicks[:purchased]]
    )


@pytest.fixture
def experiments(settings):
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": EXPERIMENTS}


def _row(report, variant, *, source=stats.ALL_SOURCES, shelf="similar"):
    (row,) = [r for r in report.rows if (r.shelf, r.source, r.variant) == (shelf, source, variant)]
    return row


@pytest.mark.django_db
def test_report_counts_rates_and_comparison_on_real_rows(experiments):
    add_arm(variant="baseline", impressions=400, clicked=40, carted=10, purchased=4, extra_clicks=5)
    add_arm(variant="image-only", impressions=400, clicked=80, carted=20, purchased=6)
    add_arm(variant="image-only", impressions=100, clicked=10, source="fallback:popular")
    report = stats.experiment_report()
    base = _row(report, "baseline")
    assert (base.counts.impressions, base.counts.clicks, base.counts.clicked_impressions) == (400, 45, 40)
    assert (base.counts.carts, base.counts.purchases) == (10, 4)
    assert base.is_control and base.vs_control == {}
    assert base.counts.ctr.value == pytest.approx(0.1)  # a second click on one shelf is not a second "clicked"
    assert base.counts.cart_per_click.value == pytest.approx(10 / 45)
    variant = _row(report, "image-only")
    # All sources: 500 impressions, 90 clicked.
    assert (variant.counts.impressions, variant.counts.clicked_impressions) == (500, 90)
    assert variant.control == "baseline" and not variant.is_control
    ctr = variant.vs_control["ctr"]
    expected = stats.two_proportion_z_test(stats.rate(90, 500), stats.rate(40, 400))
    assert ctr.p_value == pytest.approx(expected.p_value) and ctr.significant
    assert variant.significant
    # Per source, compared with the control's same source (the control has no fallback rows).
    fallback = _row(report, "image-only", source="fallback:popular")
    assert fallback.counts.impressions == 100 and fallback.vs_control == {}
    image = _row(report, "image-only", source="similar:image")
    assert image.vs_control["ctr"].difference == pytest.approx(0.1)
    # Totals come before sources.
    assert report.rows[0].source == stats.ALL_SOURCES


@pytest.mark.django_db
def test_significance_flips_with_clearly_different_data(experiments):
    add_arm(variant="baseline", impressions=300, clicked=30)
    add_arm(variant="image-only", impressions=300, clicked=33)
    assert not _row(stats.experiment_report(), "image-only").significant
    # A clearly better variant: 90 more clicked impressions of 300 more.
    add_arm(variant="image-only", impressions=300, clicked=90)
    row = _row(stats.experiment_report(), "image-only")
    assert row.vs_control["ctr"].significant and row.vs_control["ctr"].p_value < 1e-3


@pytest.mark.django_db
def test_control_defaults_to_a_variant_named_control(settings):
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": {}}
    add_arm(variant="control", impressions=50, clicked=5, experiment="gone")
    add_arm(variant="b", impressions=50, clicked=10, experiment="gone")
    add_arm(variant="", impressions=20, clicked=1, experiment="")
    report = stats.experiment_report()
    assert _row(report, "control").is_control
    assert _row(report, "b").vs_control["ctr"].difference == pytest.approx(0.1)
    assert _row(report, "").control is None and _row(report, "").vs_control == {}


@pytest.mark.django_db
def test_filters_and_daily_series(experiments):
    today = timezone.now().date()
    before = today - dt.timedelta(days=3)
    add_arm(variant="baseline", impressions=10, clicked=1, day=before)
    add_arm(variant="baseline", impressions=10, clicked=3, day=today)
    add_arm(variant="image-only", impressions=10, clicked=5, day=today)
    add_arm(variant="baseline", impressions=7, clicked=7, day=today, shelf="foryou", source="foryou:interest")
    report = stats.experiment_report(stats.Filters(since=today))
    assert _row(report, "baseline").counts.impressions == 10
    assert report.days() == [today]
    assert stats.experiment_report(stats.Filters(until=before)).days() == [before]
    only = stats.experiment_report(stats.Filters(shelf="foryou"))
    assert only.shelves() == ["foryou"]
    series = stats.experiment_report().series("similar", EXPERIMENT)
    assert [(d, r.successes, r.trials) for d, r in series["baseline"]] == [(before, 1, 10), (today, 3, 10)]
    assert [(d, r.value) for d, r in series["image-only"]] == [(today, 0.5)]


@pytest.mark.django_db
def test_csv_has_one_row_per_day_shelf_source_and_variant(experiments):
    today = timezone.now().date()
    yesterday = today - dt.timedelta(days=1)
    add_arm(variant="baseline", impressions=10, clicked=2, carted=1, day=yesterday)
    add_arm(variant="baseline", impressions=10, clicked=4, day=today)
    add_arm(variant="image-only", impressions=10, clicked=5, purchased=2, day=today)
    add_arm(variant="image-only", impressions=4, clicked=1, day=today, source="fallback:popular")
    rows = list(csv.DictReader(io.StringIO(stats.to_csv(stats.experiment_report()))))
    assert list(rows[0]) == stats.CSV_COLUMNS
    assert len(rows) == 4
    assert [(r["date"], r["variant"], r["source"]) for r in rows][0] == (
        yesterday.isoformat(),
        "baseline",
        "similar:image",
    )
    first = rows[0]
    assert (first["impressions"], first["clicked_impressions"], first["carts"]) == ("10", "2", "1")
    assert float(first["ctr"]) == pytest.approx(0.2)
    low, high = stats.wilson_interval(2, 10)
    assert float(first["ctr_low"]) == pytest.approx(low, abs=1e-6) and float(first["ctr_high"]) == pytest.approx(
        high, abs=1e-6
    )
    purchases = [r for r in rows if r["variant"] == "image-only" and r["source"] == "similar:image"][0]
    assert purchases["purchases"] == "2" and float(purchases["purchase_rate"]) == pytest.approx(0.2)


@pytest.mark.django_db
def test_command_prints_the_summary_and_writes_csv(experiments, tmp_path):
    add_arm(variant="baseline", impressions=400, clicked=40)
    add_arm(variant="image-only", impressions=400, clicked=90)
    out = io.StringIO()
    target = tmp_path / "report.csv"
    call_command("imgrec_experiments", "--csv", str(target), stdout=out)
    text = out.getvalue()
    assert "image-only" in text and "SIGNIFICANT" in text and "control" in text
    assert len(list(csv.DictReader(target.open()))) == 2
    out = io.StringIO()
    call_command("imgrec_experiments", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert {r["variant"] for r in data["rows"]} == {"baseline", "image-only"}
    out = io.StringIO()
    call_command("imgrec_experiments", "--shelf", "foryou", stdout=out)
    assert "No shelf impressions" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("imgrec_experiments", "--since", "2026-02-02", "--until", "2026-01-01")
    with pytest.raises(CommandError):
        call_command("imgrec_experiments", "--since", "yesterday")


def test_rates_are_binomial_proportions():
    counts = stats.Counts(impressions=10, clicks=12, clicked_impressions=8, carts=3, carted_impressions=3)
    assert counts.ctr.value == pytest.approx(0.8) and counts.ctr.high <= 1.0
    assert counts.cart_per_click.value == pytest.approx(3 / 12)
    assert math.isclose(counts.cart_rate.value, 0.3)
