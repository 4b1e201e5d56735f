"""Admin: product-image inline for host product admins, the image index with re-index actions,
and a status page with re-index buttons and live progress."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.contenttypes.admin import GenericTabularInline
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from imgrec_app.models import (
    CategoryClassifier,
    CategoryPrediction,
    IndexedImage,
    ProductImage,
    ReindexRun,
)

REINDEX_PERMISSION = "imgrec_app.reindex"


def _reindexing(total: int) -> str:
    return ngettext("Re-indexing %(n)d image.", "Re-indexing %(n)d images.", total) % {"n": total}


def _reindex_running(total: int, scope: str) -> str:
    return ngettext(
        "Re-index of %(n)d image (%(scope)s) is running.", "Re-index of %(n)d images (%(scope)s) is running.", total
    ) % {"n": total, "scope": scope}


class ProductImageInline(GenericTabularInline):
    """Add to a host ``ModelAdmin.inlines`` to upload product photos through imgrec."""

    model = ProductImage
    ct_field = "content_type"
    ct_fk_field = "object_id"
    extra = 1
    fields = ["image", "thumbnail", "alt_text", "position", "is_primary"]
    readonly_fields = ["thumbnail"]

    @admin.display(description=_("Preview"))
    def thumbnail(self, obj: ProductImage) -> str:
        if not obj or not obj.image:
            return "-"
        return format_html('<img src="{}" style="max-height:60px;max-width:90px">', obj.image.url)


def _can_reindex(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.is_staff and request.user.has_perm(REINDEX_PERMISSION)


def _start(request: HttpRequest, scope: str, product_ids: list[Any] | None = None) -> ReindexRun:
    from imgrec_app.services import reindex

    started = reindex.start_and_queue(scope, product_ids=product_ids, user=request.user)
    if not started.created:
        messages.info(
            request,
            gettext("A re-index of %(scope)s (run %(run)s) is already running.")
            % {"scope": scope, "run": started.run.pk},
        )
    return started.run


@admin.action(description=_("Re-index images of selected products"))
def reindex_products_action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """An action for the host's product admin (needs the ``imgrec_app.reindex`` permission)."""
    if not _can_reindex(request):
        modeladmin.message_user(request, gettext("You do not have permission to start a re-index."), messages.ERROR)
        return
    run = _start(request, "all", product_ids=list(queryset.values_list("pk", flat=True)))
    modeladmin.message_user(request, _reindexing(run.total), messages.SUCCESS)


@admin.register(IndexedImage)
class IndexedImageAdmin(admin.ModelAdmin):
    """The index: every image imgrec knows, its status and failure reason."""

    list_display = ["thumbnail", "object_id", "source", "status", "failure_reason", "attempts", "indexed_at"]
    list_filter = ["status", "failure_reason", "source", "model_id"]
    search_fields = ["object_id", "file_name", "failure_detail"]
    readonly_fields = [f.name for f in IndexedImage._meta.fields]
    actions = ["reindex_selected"]
    change_list_template = "admin/imgrec_app/indexedimage/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_imgrec_reindex_permission(self, request: HttpRequest) -> bool:
        return _can_reindex(request)

    @admin.display(description=_("Image"))
    def thumbnail(self, obj: IndexedImage) -> str:
        try:
            from imgrec_app.hosts import get_image_source

            source = get_image_source(obj.source)
            storage = source.model._meta.get_field(source.field).storage  # type: ignore[union-attr]
            return format_html('<img src="{}" style="max-height:48px;max-width:72px">', storage.url(obj.file_name))
        except Exception:
            return obj.file_name

    @admin.action(description=_("Re-index selected images"), permissions=["imgrec_reindex"])
    def reindex_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        run = _start(request, "all", product_ids=list(queryset.values_list("object_id", flat=True)))
        self.message_user(request, _reindexing(run.total), messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        urls = [
            path("status/", self.admin_site.admin_view(self.status_view), name="imgrec_app_status"),
            path(
                "status/run/<int:run_id>/",
                self.admin_site.admin_view(self.progress_view),
                name="imgrec_app_run_progress",
            ),
        ]
        return urls + super().get_urls()

    def status_view(self, request: HttpRequest) -> HttpResponse:
        from imgrec_app.services import reindex

        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not _can_reindex(request):
                raise PermissionDenied
            scope = request.POST.get("scope", "")
            if scope not in ("all", "missing", "failed", "stale"):
                messages.error(request, gettext("Unknown re-index scope %(scope)r.") % {"scope": scope})
            else:
                run = _start(request, scope)
                messages.success(request, _reindex_running(run.total, scope))
            return redirect(reverse("admin:imgrec_app_status"))
        latest = ReindexRun.objects.first()
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Image index status"),
            "opts": self.model._meta,
            "status": reindex.index_status(),
            "run": reindex.run_progress(latest) if latest else None,
            "can_reindex": _can_reindex(request),
        }
        return TemplateResponse(request, "admin/imgrec_app/status.html", context)

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        from imgrec_app.services import reindex

        if not self.has_view_permission(request):
            raise PermissionDenied
        run = get_object_or_404(ReindexRun, pk=run_id)
        return JsonResponse(reindex.run_progress(run).as_dict())


@admin.register(ReindexRun)
class ReindexRunAdmin(admin.ModelAdmin):
    list_display = ["pk", "scope", "model_id", "total", "requested_by", "created_at", "finished_at"]
    readonly_fields = [f.name for f in ReindexRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CategoryClassifier)
class CategoryClassifierAdmin(admin.ModelAdmin):
    """Trained classifiers with their cross-validated accuracy; "Retrain" on the list page."""

    list_display = ["pk", "model_id", "sample_count", "cv_accuracy", "baseline_accuracy", "is_active", "created_at"]
    exclude = ["coef", "intercept"]
    readonly_fields = ["model_id", "categories", "cv_accuracy", "baseline_accuracy", "sample_count", "created_at"]
    change_list_template = "admin/imgrec_app/categoryclassifier/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path("retrain/", self.admin_site.admin_view(self.retrain_view), name="imgrec_app_retrain"),
        ] + super().get_urls()

    def retrain_view(self, request: HttpRequest) -> HttpResponse:
        from imgrec_app.services import classifier

        if request.method != "POST" or not _can_reindex(request):
            raise PermissionDenied
        try:
            report = classifier.train()
        except classifier.NotEnoughData as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                f"Trained on {report.samples} products in {report.categories} categories: "
                f"{report.cv_accuracy:.1%} cross-validated accuracy ({report.folds}-fold; "
                f"majority baseline {report.baseline_accuracy:.1%}); "
                f"{report.disagreements} disagreement(s) to review.",
            )
        return redirect(reverse("admin:imgrec_app_categoryclassifier_changelist"))


class DisagreementFilter(admin.SimpleListFilter):
    title = _("agreement")
    parameter_name = "disagrees"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", gettext("Predicted category differs")), ("no", gettext("Agrees"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        from django.db.models import F

        differs = queryset.exclude(assigned_category="").exclude(assigned_category=F("category"))
        if self.value() == "yes":
            return differs
        if self.value() == "no":
            return queryset.exclude(pk__in=differs.values("pk"))
        return queryset


@admin.register(CategoryPrediction)
class CategoryPredictionAdmin(admin.ModelAdmin):
    """Products whose predicted category differs from the assigned one, with "apply"."""

    list_display = ["product_link", "assigned_category", "category", "confidence", "disagrees_flag"]
    list_filter = [DisagreementFilter, "category"]
    search_fields = ["object_id"]
    ordering = ["-confidence"]
    actions = ["apply_suggestions"]

    @admin.display(description=_("Product"))
    def product_link(self, obj: CategoryPrediction) -> str:
        product = obj.product
        return str(product) if product is not None else obj.object_id

    @admin.display(boolean=True, description=_("Disagrees"))
    def disagrees_flag(self, obj: CategoryPrediction) -> bool:
        return obj.disagrees

    @admin.action(description=_("Apply the predicted category to selected products"))
    def apply_suggestions(self, request: HttpRequest, queryset: QuerySet) -> None:
        from imgrec_app.services import classifier

        if not request.user.has_perm("imgrec_app.change_categoryprediction"):
            raise PermissionDenied
        applied = sum(classifier.apply_suggestion(p) for p in queryset)
        if applied:
            message = ngettext("Applied %(n)d suggestion.", "Applied %(n)d suggestions.", applied) % {"n": applied}
            self.message_user(request, message, messages.SUCCESS)
        else:
            self.message_user(
                request,
                gettext(
                    "Nothing applied: categories can be applied only when IMGREC['PRODUCT_CATEGORY'] "
                    "names a field of the product model."
                ),
                messages.WARNING,
            )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
