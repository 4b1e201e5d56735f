"""HTML fragments of the shelves (for lazy loading), and a mixin that records product views."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.template import RequestContext, Template
from django.utils.cache import patch_cache_control, patch_vary_headers

from imgrec_app.hosts import get_product_model
from imgrec_app.services import history, recommend

_SIMILAR = Template("{% load imgrec_tags %}{% imgrec_similar_shelf product limit=limit %}")
_FOR_YOU = Template("{% load imgrec_tags %}{% imgrec_for_you_shelf limit=limit product=product %}")


def _limit(request: HttpRequest) -> int:
    return recommend.clamp_limit(request.GET.get("limit", 8))


def similar_fragment(request: HttpRequest, product_id: str) -> HttpResponse:
    model = get_product_model()
    try:
        product = model._default_manager.get(pk=model._meta.pk.to_python(product_id))
    except Exception:
        raise Http404("No such product.") from None
    return HttpResponse(_SIMILAR.render(RequestContext(request, {"product": product, "limit": _limit(request)})))


def for_you_fragment(request: HttpRequest) -> HttpResponse:
    """The for-you shelf; ``?product=<id>``: as on that product's page (no repeat of its similar shelf)."""
    product = None
    if request.GET.get("product"):
        model = get_product_model()
        try:
            product = model._default_manager.get(pk=model._meta.pk.to_python(request.GET["product"]))
        except Exception:
            raise Http404("No such product.") from None
    context = {"limit": _limit(request), "product": product}
    response = HttpResponse(_FOR_YOU.render(RequestContext(request, context)))
    patch_vary_headers(response, ["Cookie"])
    patch_cache_control(response, private=True, no_cache=True)
    return response


class RecordViewMixin:
    """For a host's product ``DetailView``: records the view of ``self.object`` (never fails the
    page).  Add ``kind = "view"`` to change the event kind."""

    record_kind = "view"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)  # type: ignore[misc]
        obj = getattr(self, "object", None)
        if obj is not None:
            record_view(request, obj, kind=self.record_kind)
        return response


def record_view(request: HttpRequest, product: Any, *, kind: str = "view") -> None:
    """Record a view from a host view; logs instead of raising."""
    import logging

    try:
        history.record(request, product, kind=kind)
    except Exception:
        logging.getLogger(__name__).exception("imgrec could not record a %s", kind)
