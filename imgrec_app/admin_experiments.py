"""The admin's "Shelf performance / experiments" page, its plot and CSV (thin over
:mod:`imgrec_app.services.experiment_stats`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from imgrec_app.services import experiment_plots, experiment_stats

VIEW_PERMISSION = "imgrec_app.view_shelfimpression"
SHELVES = ["similar", "foryou", "bought_together", "recently_viewed", "search", "popular"]


class ReportFilterForm(forms.Form):
    """The page's filters (GET): a date range of impressions, one shelf, one experiment."""

    since = forms.DateField(required=False, label=gettext_lazy("From"), widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label=gettext_lazy("To"), widget=forms.DateInput(attrs={"type": "date"}))
    shelf = forms.ChoiceField(required=False, label=gettext_lazy("Shelf"))
    experiment = forms.CharField(required=False, max_length=64, label=gettext_lazy("Experiment"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shelf = self.fields["shelf"]
        assert isinstance(shelf, forms.ChoiceField)
        shelf.choices = [("", _("All shelves"))] + [(s, s) for s in SHELVES]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError(_("The start date is after the end date."), code="date_order")
        return data

    def filters(self) -> experiment_stats.Filters:
        data = self.cleaned_data
        return experiment_stats.Filters(
            since=data.get("since"),
            until=data.get("until"),
            shelf=data.get("shelf") or "",
            experiment=data.get("experiment") or "",
        )


def _check(request: HttpRequest) -> None:
    if not (request.user.is_active and request.user.is_staff and request.user.has_perm(VIEW_PERMISSION)):
        raise PermissionDenied


def _form(request: HttpRequest) -> ReportFilterForm:
    return ReportFilterForm(request.GET or None)


def experiments_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    """GET: the report for the filters (``?format=csv`` downloads the daily rows)."""
    _check(request)
    form = _form(request)
    valid = form.is_valid() if form.is_bound else True
    filters = form.filters() if form.is_bound and valid else experiment_stats.Filters()
    report = experiment_stats.experiment_report(filters) if valid else None
    if report is not None and request.GET.get("format") == "csv":
        response = HttpResponse(experiment_stats.to_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="imgrec-shelf-performance.csv"'
        return response
    query = {k: v for k, v in request.GET.items() if k in form.fields and v}
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Shelf performance / experiments"),
        "opts": model_admin.model._meta,
        "form": form,
        "report": report,
        "rows": [_display(row) for row in report.rows] if report else [],
        "plots": _plots(report, query) if report else [],
        "plot_available": experiment_plots.plot_available(),
        "csv_query": urlencode({**query, "format": "csv"}),
        "confidence": round(100 * experiment_stats.CONFIDENCE),
        "alpha": experiment_stats.ALPHA,
        "experiments": sorted(experiment_stats.configured_experiments()),
    }
    return TemplateResponse(request, "admin/imgrec_app/experiments.html", context, status=200 if valid else 400)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _cell(rate: experiment_stats.Rate, comparison: experiment_stats.Comparison | None) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "rate": _pct(rate.value),
        "ci": f"{_pct(rate.low)} – {_pct(rate.high)}" if rate.low is not None else "",
        "n": f"{rate.successes} / {rate.trials}",
        "significant": bool(comparison and comparison.significant),
        "comparison": "",
    }
    if comparison is not None and comparison.difference is not None:
        text = f"{100 * comparison.difference:+.1f} pts, p = {comparison.p_value:.3f}"
        if not comparison.enough_data:
            text += " · " + _("too few events to judge")
        cell["comparison"] = text
    return cell


def _display(row: experiment_stats.Row) -> dict[str, Any]:
    """A report row as the template shows it (formatted rates, intervals and comparisons)."""
    rates = row.rates()
    return {
        "row": row,
        "all_sources": row.source == experiment_stats.ALL_SOURCES,
        "cells": [_cell(rates[m], row.vs_control.get(m)) for m in experiment_stats.METRICS],
        "per_click": [_pct(rates["cart_per_click"].value), _pct(rates["purchase_per_click"].value)],
    }


def _plots(report: experiment_stats.ExperimentReport, query: dict[str, Any]) -> list[dict[str, str]]:
    """One plot per shelf and experiment of the report (the image is the plot view's)."""
    pairs = sorted({(row.shelf, row.experiment) for row in report.rows})
    return [
        {
            "shelf": shelf,
            "experiment": experiment,
            "query": urlencode({**query, "shelf": shelf, "experiment": experiment}),
        }
        for shelf, experiment in pairs
        if experiment
    ]


def experiment_plot_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    """The PNG of one shelf's and experiment's daily rates (``shelf``, ``experiment``, ``metric``)."""
    _check(request)
    form = _form(request)
    if not form.is_valid() or not form.cleaned_data.get("shelf"):
        return HttpResponse(_("Give a valid shelf and date range."), status=400, content_type="text/plain")
    report = experiment_stats.experiment_report(form.filters())
    try:
        png = experiment_plots.rate_plot_png(
            report,
            shelf=form.cleaned_data["shelf"],
            experiment=form.cleaned_data.get("experiment") or "",
            metric=request.GET.get("metric", "ctr"),
        )
    except experiment_plots.PlotUnavailable as exc:
        return HttpResponse(str(exc), status=501, content_type="text/plain")
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=60"
    return response
