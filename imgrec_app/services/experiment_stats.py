"""Shelf performance and A/B comparisons: impressions, clicks, carts and purchases per shelf,
source, experiment and variant, with Wilson intervals and a two-proportion z-test against the
control (read by the admin's "Shelf performance" page, its CSV and ``imgrec_experiments``).

The counts come from three SQL aggregates (impressions; clicks; conversions), grouped by
shelf, source, experiment, variant and day; everything after that works on those groups, never
on rows.  Every rate is a share of units that can each count once, so it is a binomial
proportion: CTR is the share of impressions with at least one click, the cart (purchase) rate
the share of impressions (or of clicks) with an attributed add-to-cart (purchase).  The
statistics (docs/DESIGN.md, "Measured shelves") use only :mod:`math` and :mod:`statistics`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from imgrec_app.conf import imgrec_settings

CONFIDENCE = 0.95
ALPHA = 0.05
# The normal approximation behind the z-test wants a few successes and failures in each arm;
# below that a difference is reported but never called significant.
MIN_EXPECTED = 5
ALL_SOURCES = ""
METRICS = ("ctr", "cart_rate", "purchase_rate")
KEY_FIELDS = ("shelf", "source", "experiment", "variant")


# --- statistics (pure functions, no Django) --------------------------------------------------------


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class Rate:
    """A binomial proportion ``successes / trials`` with its Wilson score interval."""

    successes: int
    trials: int
    low: float | None
    high: float | None

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "successes": self.successes,
            "trials": self.trials,
            "value": self.value,
            "low": self.low,
            "high": self.high,
        }


def wilson_interval(successes: int, trials: int, *, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion (None when there are no trials).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is not empty at 0 or n
    successes, which matters for the small counts a new shelf or variant starts with.

    Raises:
        ValueError: on negative counts or more successes than trials.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} / {trials}")
    if trials == 0:
        return None
    z = _z(confidence)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, trials: int) -> Rate:
    """``successes / trials`` with its 95 % Wilson interval."""
    interval = wilson_interval(successes, trials)
    low, high = interval if interval else (None, None)
    return Rate(successes, trials, low, high)


@dataclass(frozen=True)
class Comparison:
    """A variant's rate against the control's: difference, relative lift, z and two-sided p."""

    difference: float | None
    lift: float | None
    z: float | None
    p_value: float | None
    enough_data: bool
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "lift": self.lift,
            "z": self.z,
            "p_value": self.p_value,
            "enough_data": self.enough_data,
            "significant": self.significant,
        }


def two_proportion_z_test(variant: Rate, control: Rate, *, alpha: float = ALPHA) -> Comparison:
    """The pooled two-proportion z-test of ``variant`` against ``control`` (two-sided).

    ``significant`` is ``p < alpha`` and only when each arm has at least :data:`MIN_EXPECTED`
    expected successes and failures under the pooled rate (the normal approximation's rule of
    thumb).  One test per variant and metric: see docs/DESIGN.md on multiple comparisons and on
    looking at the page every day ("peeking").
    """
    n1, n2 = variant.trials, control.trials
    if not n1 or not n2:
        return Comparison(None, None, None, None, False, False)
    p1, p2 = variant.successes / n1, control.successes / n2
    pooled = (variant.successes + control.successes) / (n1 + n2)
    difference = p1 - p2
    lift = difference / p2 if p2 else None
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:  # both arms all-or-nothing alike: no evidence of a difference
        z, p_value = 0.0, 1.0
    else:
        z = difference / se
        p_value = math.erfc(abs(z) / math.sqrt(2))
    enough = min(n1, n2) * min(pooled, 1 - pooled) >= MIN_EXPECTED
    return Comparison(difference, lift, z, p_value, enough, enough and p_value < alpha)


# --- counting (SQL aggregates) ---------------------------------------------------------------------


@dataclass
class Counts:
    """Event counts of one group (additive: groups of sources or days sum to their total)."""

    impressions: int = 0
    seen: int = 0
    clicks: int = 0
    clicked_impressions: int = 0
    carts: int = 0
    carted_impressions: int = 0
    purchases: int = 0
    purchased_impressions: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def ctr(self) -> Rate:
        return rate(self.clicked_impressions, self.impressions)

    @property
    def cart_rate(self) -> Rate:
        return rate(self.carted_impressions, self.impressions)

    @property
    def purchase_rate(self) -> Rate:
        return rate(self.purchased_impressions, self.impressions)

    @property
    def cart_per_click(self) -> Rate:
        return rate(min(self.carts, self.clicks), self.clicks)

    @property
    def purchase_per_click(self) -> Rate:
        return rate(min(self.purchases, self.clicks), self.clicks)


@dataclass(frozen=True)
class Filters:
    """What the report covers: impressions created in ``[since, until]`` (dates, inclusive), one
    shelf or all, one experiment or all."""

    since: dt.date | None = None
    until: dt.date | None = None
    shelf: str = ""
    experiment: str = ""

    def impression_q(self, prefix: str = "") -> Q:
        # Bounds as datetimes (not ``__date``), so the created_at indexes serve the range.
        q = Q()
        if self.since:
            q &= Q(**{f"{prefix}created_at__gte": _day_start(self.since)})
        if self.until:
            q &= Q(**{f"{prefix}created_at__lt": _day_start(self.until + dt.timedelta(days=1))})
        if self.shelf:
            q &= Q(**{f"{prefix}shelf": self.shelf})
        if self.experiment:
            q &= Q(**{f"{prefix}experiment": self.experiment})
        return q


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


Key = tuple[str, str, str, str, dt.date]


def _grouped(qs: QuerySet, prefix: str, **aggregates: Any) -> Iterator[tuple[Key, dict[str, int]]]:
    names = [f"{prefix}{f}" for f in KEY_FIELDS]
    day = f"{prefix}created_at"
    rows = qs.annotate(day=TruncDate(day)).values(*names, "day").annotate(**aggregates).order_by()
    for row in rows:
        key = tuple(row[n] for n in names) + (row["day"],)
        yield key, {k: row[k] for k in aggregates}


def daily_counts(filters: Filters | None = None) -> dict[Key, Counts]:
    """Counts per (shelf, source, experiment, variant, day), from three grouped queries.

    Clicks and conversions are counted on the day of the impression they came from (an A/B
    comparison compares what each variant's impressions led to).
    """
    from imgrec_app.models import ShelfClick, ShelfConversion, ShelfImpression

    filters = filters or Filters()
    out: dict[Key, Counts] = defaultdict(Counts)
    impressions = ShelfImpression.objects.filter(filters.impression_q())
    for key, agg in _grouped(impressions, "", n=Count("pk"), seen_n=Count("pk", filter=Q(seen=True))):
        out[key].impressions += agg["n"]
        out[key].seen += agg["seen_n"]
    clicks = ShelfClick.objects.filter(filters.impression_q("impression__"))
    for key, agg in _grouped(clicks, "impression__", n=Count("pk"), imps=Count("impression", distinct=True)):
        out[key].clicks += agg["n"]
        out[key].clicked_impressions += agg["imps"]
    conversions = ShelfConversion.objects.filter(filters.impression_q("click__impression__"))
    for kind in ("cart", "purchase"):
        for key, agg in _grouped(
            conversions.filter(kind=kind),
            "click__impression__",
            n=Count("pk"),
            imps=Count("click__impression", distinct=True),
        ):
            setattr(out[key], f"{kind}s", getattr(out[key], f"{kind}s") + agg["n"])
            name = f"{kind}ed_impressions" if kind == "cart" else "purchased_impressions"
            setattr(out[key], name, getattr(out[key], name) + agg["imps"])
    return dict(out)


# --- the report --------------------------------------------------------------------------------------


def configured_experiments() -> dict[str, Any]:
    """``IMGREC["EXPERIMENTS"]`` as configured (active or not: a stopped test is still reported)."""
    value = imgrec_settings.EXPERIMENTS
    return dict(value) if isinstance(value, dict) else {}


def control_variant(experiment: str, variants: Iterable[str]) -> str | None:
    """The control of an experiment: the configured one; for an experiment no longer configured,
    a variant named "control" if there is one (else no comparison)."""
    if not experiment:
        return None
    config = configured_experiments().get(experiment)
    if isinstance(config, dict) and config.get("control"):
        return str(config["control"])
    return "control" if "control" in set(variants) else None


@dataclass
class Row:
    """One line of the report: a shelf, a source (``""``: all sources), an experiment's variant."""

    shelf: str
    source: str
    experiment: str
    variant: str
    counts: Counts
    is_control: bool = False
    control: str | None = None
    vs_control: dict[str, Comparison] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return any(c.significant for c in self.vs_control.values())

    def rates(self) -> dict[str, Rate]:
        c = self.counts
        return {
            "ctr": c.ctr,
            "cart_rate": c.cart_rate,
            "purchase_rate": c.purchase_rate,
            "cart_per_click": c.cart_per_click,
            "purchase_per_click": c.purchase_per_click,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "shelf": self.shelf,
            "source": self.source,
            "experiment": self.experiment,
            "variant": self.variant,
            "is_control": self.is_control,
            "control": self.control,
            **{k: getattr(self.counts, k) for k in self.counts.__dataclass_fields__},
            "rates": {k: r.as_dict() for k, r in self.rates().items()},
            "vs_control": {k: c.as_dict() for k, c in self.vs_control.items()},
            "significant": self.significant,
        }


@dataclass
class ExperimentReport:
    """The report: rows (totals over all sources first, then per source), the daily counts and
    the filters it was made with."""

    filters: Filters
    rows: list[Row]
    daily: dict[Key, Counts]

    def days(self) -> list[dt.date]:
        return sorted({key[4] for key in self.daily})

    def shelves(self) -> list[str]:
        return sorted({row.shelf for row in self.rows})

    def series(self, shelf: str, experiment: str, *, metric: str = "ctr") -> dict[str, list[tuple[dt.date, Rate]]]:
        """Per variant, the day-by-day ``metric`` (all sources) of one shelf and experiment."""
        per: dict[str, dict[dt.date, Counts]] = defaultdict(lambda: defaultdict(Counts))
        for (k_shelf, _, k_exp, variant, day), counts in self.daily.items():
            if k_shelf == shelf and k_exp == experiment:
                per[variant][day].add(counts)
        return {
            variant: [(day, getattr(days[day], metric)) for day in sorted(days)]
            for variant, days in sorted(per.items())
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.filters.since.isoformat() if self.filters.since else None,
            "until": self.filters.until.isoformat() if self.filters.until else None,
            "shelf": self.filters.shelf,
            "experiment": self.filters.experiment,
            "confidence": CONFIDENCE,
            "alpha": ALPHA,
            "rows": [row.as_dict() for row in self.rows],
        }


def _rows(daily: dict[Key, Counts]) -> list[Row]:
    totals: dict[tuple[str, str, str, str], Counts] = defaultdict(Counts)
    for (shelf, source, experiment, variant, _), counts in daily.items():
        totals[(shelf, source, experiment, variant)].add(counts)
        totals[(shelf, ALL_SOURCES, experiment, variant)].add(counts)
    variants: dict[str, set[str]] = defaultdict(set)
    for _, _, experiment, variant in totals:
        variants[experiment].add(variant)
    controls = {exp: control_variant(exp, names) for exp, names in variants.items()}
    rows = []
    for (shelf, source, experiment, variant), counts in totals.items():
        control = controls.get(experiment)
        row = Row(shelf, source, experiment, variant, counts, is_control=bool(control) and variant == control)
        row.control = control
        base = totals.get((shelf, source, experiment, control)) if control else None
        if base is not None and not row.is_control:
            row.vs_control = {m: two_proportion_z_test(getattr(counts, m), getattr(base, m)) for m in METRICS}
        rows.append(row)
    # Shelf, then totals before sources, then the experiment, the control first.
    rows.sort(key=lambda r: (r.shelf, r.source != ALL_SOURCES, r.source, r.experiment, not r.is_control, r.variant))
    return rows


def experiment_report(filters: Filters | None = None) -> ExperimentReport:
    """The shelf-performance report for ``filters`` (default: everything recorded)."""
    filters = filters or Filters()
    daily = daily_counts(filters)
    return ExperimentReport(filters=filters, rows=_rows(daily), daily=daily)


CSV_COLUMNS = [
    "date",
    "shelf",
    "source",
    "experiment",
    "variant",
    "impressions",
    "seen",
    "clicks",
    "clicked_impressions",
    "ctr",
    "ctr_low",
    "ctr_high",
    "carts",
    "cart_rate",
    "cart_rate_low",
    "cart_rate_high",
    "purchases",
    "purchase_rate",
    "purchase_rate_low",
    "purchase_rate_high",
]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def to_csv(report: ExperimentReport) -> str:
    """One row per day, shelf, source, experiment and variant (the daily counts, 95 % Wilson
    intervals of each day's rates); ordered by day, then as the report's rows."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for (shelf, source, experiment, variant, day), c in sorted(
        report.daily.items(), key=lambda kv: (kv[0][4], kv[0][:4])
    ):
        line: list[Any] = [day.isoformat(), shelf, source, experiment, variant, c.impressions, c.seen, c.clicks]
        line.append(c.clicked_impressions)
        for r in (c.ctr,):
            line += [_fmt(r.value), _fmt(r.low), _fmt(r.high)]
        line.append(c.carts)
        line += [_fmt(c.cart_rate.value), _fmt(c.cart_rate.low), _fmt(c.cart_rate.high)]
        line.append(c.purchases)
        line += [_fmt(c.purchase_rate.value), _fmt(c.purchase_rate.low), _fmt(c.purchase_rate.high)]
        writer.writerow(line)
    return buf.getvalue()
