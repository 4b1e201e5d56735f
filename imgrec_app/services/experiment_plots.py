"""The shelf-performance plot: a rate per day and variant with its 95 % Wilson band (PNG).

matplotlib is optional (the ``[eval]`` extra): :func:`plot_available` says whether it can be
drawn, and the admin page says so instead of showing a broken image.  Only matplotlib's object
API is used (``Figure`` + the Agg canvas): no ``pyplot`` global state in a web process.
"""

from __future__ import annotations

import io
from importlib.util import find_spec
from typing import Any

from imgrec_app.services.experiment_stats import ExperimentReport

METRIC_LABELS = {"ctr": "CTR", "cart_rate": "add-to-cart rate", "purchase_rate": "purchase rate"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_available() -> bool:
    return find_spec("matplotlib") is not None


def rate_plot_png(report: ExperimentReport, *, shelf: str, experiment: str, metric: str = "ctr") -> bytes:
    """A PNG of ``metric`` per day for each variant of ``experiment`` on ``shelf`` (all sources).

    Raises:
        PlotUnavailable: when matplotlib is missing.
        ValueError: for an unknown metric.
    """
    if metric not in METRIC_LABELS:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(METRIC_LABELS)}")
    if not plot_available():
        raise PlotUnavailable("matplotlib is not installed: pip install 'django-imgrec[eval]' to draw the plot.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = report.series(shelf, experiment, metric=metric)
    for variant, points in series.items():
        kept = [(day, r, r.value) for day, r in points if r.value is not None]
        if not kept:
            continue
        days: Any = [day for day, _, _ in kept]  # dates: matplotlib's date axis (its stubs say floats)
        rates = [r for _, r, _ in kept]
        (line,) = ax.plot(days, [100 * v for _, _, v in kept], marker="o", label=variant or "(no experiment)")
        ax.fill_between(
            days,
            [100 * (r.low or 0.0) for r in rates],
            [100 * (r.high or 0.0) for r in rates],
            color=line.get_color(),
            alpha=0.18,
        )
    title = f"{shelf} shelf · {experiment or 'no experiment'}: {METRIC_LABELS[metric]} per day (95 % Wilson band)"
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no impressions in this range", ha="center", va="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()
