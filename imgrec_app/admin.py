"""Admin: product-image inline for host product admins, the image index with re-index actions,
and a status page with re-index buttons and live progress."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.contenttypes.admin import GenericTabularInline
from django.contrib.contenttypes.forms import BaseGenericInlineFormSet
from django.core.exceptions import PermissionDenied, ValidationError
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
    TuningRun,
)

REINDEX_PERMISSION = "imgrec_app.reindex"


class ProductImageInlineFormSet(BaseGenericInlineFormSet):
    """Refuses two primary images in one save (which one was meant is the editor's call)."""

    def clean(self) -> None:
        super().clean()
        primaries = [
            form
            for form in self.forms
            if getattr(form, "cleaned_data", None)
            and form.cleaned_data.get("is_primary")
            and not form.cleaned_data.get("DELETE")
        ]
        if len(primaries) > 1:
            raise ValidationError(
                _("Only one image can be primary; %(n)d are marked primary.") % {"n": len(primaries)},
                code="two_primaries",
            )


def _reindexing(total: int) -> str:
    return ngettext("Re-indexing %(n)d image.", "Re-indexing %(n)d images.", total) % {"n": total}


def _reindex_running(total: int, scope: str) -> str:
    return ngettext(
        "Re-index of %(n)d image (%(scope)s) is running.", "Re-index of %(n)d images (%(scope)s) is running.", total
    ) % {"n": total, "scope": scope}


class ProductImageInline(GenericTabularInline):
    """Add to a host ``ModelAdmin.inlines`` to upload product photos through imgrec."""

    model = ProductImage
    # django-stubs types ``formset`` from InlineModelAdmin, not GenericInlineModelAdmin's
    # BaseGenericInlineFormSet (which a generic inline needs).
    formset = ProductImageInlineFormSet  # type: ignore[assignment]
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
            path("health/", self.admin_site.admin_view(self.health_view), name="imgrec_app_health"),
            path("experiments/", self.admin_site.admin_view(self.experiments_view), name="imgrec_app_experiments"),
            path(
                "experiments/plot.png",
                self.admin_site.admin_view(self.experiments_plot_view),
                name="imgrec_app_experiments_plot",
            ),
        ]
        return urls + super().get_urls()

    def health_view(self, request: HttpRequest) -> HttpResponse:
        """Catalogue health: findings per section, CSV export, one-click category fixes."""
        from imgrec_app.admin_health import health_view

        if not self.has_view_permission(request):
            raise PermissionDenied
        return health_view(self, request)

    def experiments_view(self, request: HttpRequest) -> HttpResponse:
        """Shelf performance / experiments: rates with intervals, comparisons, plot, CSV."""
        from imgrec_app.admin_experiments import experiments_view

        return experiments_view(self, request)

    def experiments_plot_view(self, request: HttpRequest) -> HttpResponse:
        from imgrec_app.admin_experiments import experiment_plot_view

        return experiment_plot_view(self, request)

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
        # Training runs on a worker (scikit-learn, seconds to minutes): never inside the request.
        try:
            classifier.queue_training()
        except classifier.NotEnoughData as exc:
            messages.error(request, str(exc))
        except classifier.TrainingNotQueued as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                _(
                    "Training queued on a worker: the new classifier appears in this list, with its "
                    "cross-validated accuracy, when it finishes (reload the page)."
                ),
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


TUNE_PERMISSION = "imgrec_app.tune"


def _can_tune(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.is_staff and request.user.has_perm(TUNE_PERMISSION)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


@admin.register(TuningRun)
class TuningRunAdmin(admin.ModelAdmin):
    """Catalogue-tuning runs: "Learn the catalogue" and "Roll back" buttons, progress, and each
    run's held-out numbers (tuned vs untuned, k-fold by product)."""

    list_display = [
        "pk",
        "status",
        "progress_pct",
        "is_active",
        "heldout_untuned",
        "heldout_tuned",
        "sample_count",
        "model_id",
        "created_at",
    ]
    exclude = ["weights", "learned_weights", "config", "metrics", "categories"]
    readonly_fields = [
        "status",
        "progress_pct",
        "stage",
        "message",
        "is_active",
        "base_model_id",
        "model_id",
        "dimensions",
        "sample_count",
        "heldout_table",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    change_list_template = "admin/imgrec_app/tuningrun/change_list.html"
    change_form_template = "admin/imgrec_app/tuningrun/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Progress")
    def progress_pct(self, obj: TuningRun) -> str:
        return f"{100 * obj.progress:.0f} %"

    @admin.display(description="Held-out precision, untuned")
    def heldout_untuned(self, obj: TuningRun) -> str:
        return _pct((obj.metrics or {}).get("untuned", {}).get("precision"))

    @admin.display(description="Held-out precision, tuned")
    def heldout_tuned(self, obj: TuningRun) -> str:
        return _pct((obj.metrics or {}).get("tuned", {}).get("precision"))

    @admin.display(description="Held-out evaluation (k-fold by product)")
    def heldout_table(self, obj: TuningRun) -> str:
        m = obj.metrics or {}
        if not m.get("tuned"):
            return "–"
        return format_html(
            "<table><tr><th></th><th>untuned</th><th>tuned</th></tr>"
            "<tr><td>image-only precision@{}</td><td>{}</td><td>{}</td></tr>"
            "<tr><td>as configured (SIMILAR_WEIGHTS) precision@{}</td><td>{}</td><td>{}</td></tr>"
            "<tr><td>classifier accuracy</td><td>{}</td><td>{}</td></tr></table>"
            "<p>{} folds, {} products; only products a fold's head did not see are scored.</p>",
            m.get("k"),
            _pct(m["untuned"]["precision"]),
            _pct(m["tuned"]["precision"]),
            m.get("k"),
            _pct(m["untuned"].get("configured")),
            _pct(m["tuned"].get("configured")),
            _pct(m["untuned"]["classifier"]),
            _pct(m["tuned"]["classifier"]),
            m.get("folds"),
            m.get("products"),
        )

    def get_urls(self) -> list[Any]:
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="imgrec_app_tune"),
            path("rollback/", self.admin_site.admin_view(self.rollback_view), name="imgrec_app_tune_rollback"),
            path(
                "<int:run_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="imgrec_app_tune_progress",
            ),
        ] + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "can_tune": _can_tune(request)})

    def start_view(self, request: HttpRequest) -> HttpResponse:
        from imgrec_app.services import tuning

        if request.method != "POST" or not _can_tune(request):
            raise PermissionDenied
        try:
            started = tuning.start_and_queue(user=request.user)
        except tuning.TuningRefused as exc:
            messages.error(request, str(exc))
            return redirect(reverse("admin:imgrec_app_tuningrun_changelist"))
        if started.created:
            messages.success(request, f"Tuning run {started.run.pk} started; the shelves are served meanwhile.")
        else:
            messages.info(request, f"Tuning run {started.run.pk} is already {started.run.status}.")
        return redirect(reverse("admin:imgrec_app_tuningrun_change", args=[started.run.pk]))

    def rollback_view(self, request: HttpRequest) -> HttpResponse:
        from imgrec_app.services import tuning

        if request.method != "POST" or not _can_tune(request):
            raise PermissionDenied
        run = tuning.rollback()
        messages.success(request, f"Serving the base vectors{f' (run {run.pk} deactivated)' if run else ''}.")
        return redirect(reverse("admin:imgrec_app_tuningrun_changelist"))

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        from imgrec_app.services import tuning

        if not self.has_view_permission(request):
            raise PermissionDenied
        run = get_object_or_404(TuningRun.objects.defer("weights"), pk=run_id)
        return JsonResponse(tuning.run_progress(run))
