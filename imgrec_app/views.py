"""HTML fragments of the shelves (for lazy loading), and a mixin that records product views."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.template import RequestContext, Template
from django.utils.cache import patch_cache_control, patch_vary_headers

from imgrec_app.hosts import get_visible_product
from imgrec_app.services import history, recommend

logger = logging.getLogger(__name__)

_SIMILAR = Template("{% load imgrec_tags %}{% imgrec_similar_shelf product limit=limit %}")
_FOR_YOU = Template("{% load imgrec_tags %}{% imgrec_for_you_shelf limit=limit %}")


def _limit(request: HttpRequest) -> int:
    return recommend.clamp_limit(request.GET.get("limit", 8))


def similar_fragment(request: HttpRequest, product_id: str) -> HttpResponse:
    """The similar shelf of a product the visitor may see.

    A missing, malformed or hidden id is a 404 (the same for all three).  A database error is not
    "no such product": it is an empty 503 that no cache keeps (``no-store``), so caches and
    monitors see the outage and the lazy shelf shows nothing.
    """
    try:
        product = get_visible_product(product_id)
    except LookupError:
        raise Http404("No such product.") from None
    except DatabaseError:
        logger.exception("imgrec similar fragment: database error looking up product %r", product_id)
        return _unavailable()
    return HttpResponse(_SIMILAR.render(RequestContext(request, {"product": product, "limit": _limit(request)})))


def _unavailable() -> HttpResponse:
    response = HttpResponse("", status=503)
    response["Retry-After"] = "30"
    patch_cache_control(response, no_store=True, no_cache=True, max_age=0)
    return response


def for_you_fragment(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(_FOR_YOU.render(RequestContext(request, {"limit": _limit(request)})))
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
    try:
        history.record(request, product, kind=kind)
    except Exception:
        logger.exception("imgrec could not record a %s", kind)
