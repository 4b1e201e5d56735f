"""The admin's catalogue health page (thin over :mod:`imgrec_app.services.health`)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from imgrec_app.models import CategoryPrediction
from imgrec_app.services import health


def health_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    """GET: the report (``?format=csv`` downloads it); POST ``apply=<prediction id>``: fix a category."""
    if request.method == "POST":
        return _apply(request)
    report = health.catalogue_health(check_files=request.GET.get("files") != "0")
    if request.GET.get("format") == "csv":
        response = HttpResponse(health.to_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="imgrec-catalogue-health.csv"'
        return response
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Catalogue health"),
        "opts": model_admin.model._meta,
        "report": report,
        "sections": report.sections(),
        "can_apply": request.user.has_perm("imgrec_app.change_categoryprediction"),
    }
    return TemplateResponse(request, "admin/imgrec_app/health.html", context)


def _apply(request: HttpRequest) -> HttpResponse:
    from imgrec_app.services import classifier

    if not request.user.has_perm("imgrec_app.change_categoryprediction"):
        raise PermissionDenied
    prediction = get_object_or_404(CategoryPrediction, pk=request.POST.get("apply"))
    if classifier.apply_suggestion(prediction):
        messages.success(
            request,
            _("Category of %(product)s set to %(category)s.")
            % {"product": prediction.product or prediction.object_id, "category": prediction.category},
        )
    else:
        messages.warning(
            request,
            _(
                "Nothing applied: categories can be applied only when IMGREC['PRODUCT_CATEGORY'] names a field "
                "of the product model."
            ),
        )
    return redirect(reverse("admin:imgrec_app_health"))
