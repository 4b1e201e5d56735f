"""HTML fragments of the shelves (for lazy loading), and a mixin that records product views."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.template import RequestContext, Template
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_visible_product
from imgrec_app.services import history, recommend

logger = logging.getLogger(__name__)

_SIMILAR = Template("{% load imgrec_tags %}{% imgrec_similar_shelf product limit=limit %}")
_BOUGHT = Template("{% load imgrec_tags %}{% imgrec_bought_together_shelf product limit=limit %}")
_FOR_YOU = Template("{% load imgrec_tags %}{% imgrec_for_you_shelf limit=limit product=product %}")


def _limit(request: HttpRequest) -> int:
    return recommend.clamp_limit(request.GET.get("limit", 8))


def _shelf_fragment(
    request: HttpRequest, template: Template, what: str, product_id: str | None, *, private: bool = False
) -> HttpResponse:
    """One lazy shelf, rendered for ``product_id`` (``None``: no product, for-you only).

    A missing, malformed or hidden id is a 404 (the same for all three).  A database error is not
    "no such product": it is an empty 503 that no cache keeps (``no-store``), so caches and
    monitors see the outage and the lazy shelf shows nothing.  ``private``: the shelf depends on
    the visitor (``Vary: Cookie``, ``private, no-cache``); the others are the same for everyone,
    except with ``TRACKING`` on (their links carry the visitor's signed recommendation id).
    """
    product = None
    if product_id is not None:
        try:
            product = get_visible_product(product_id)
        except LookupError:
            raise Http404("No such product.") from None
        except DatabaseError:
            logger.exception("imgrec %s fragment: database error looking up product %r", what, product_id)
            return _unavailable()
    response = HttpResponse(template.render(RequestContext(request, {"product": product, "limit": _limit(request)})))
    # A fragment carries this visitor's recommendation ids when tracking is on: private then too.
    if private or imgrec_settings.TRACKING:
        patch_vary_headers(response, ["Cookie"])
        patch_cache_control(response, private=True, no_cache=True)
    return response


def _unavailable() -> HttpResponse:
    response = HttpResponse("", status=503)
    response["Retry-After"] = "30"
    patch_cache_control(response, no_store=True, no_cache=True, max_age=0)
    return response


def similar_fragment(request: HttpRequest, product_id: str) -> HttpResponse:
    """The similar shelf of a product the visitor may see."""
    return _shelf_fragment(request, _SIMILAR, "similar", product_id)


def bought_together_fragment(request: HttpRequest, product_id: str) -> HttpResponse:
    """The bought-together shelf of a product the visitor may see."""
    return _shelf_fragment(request, _BOUGHT, "bought-together", product_id)


def for_you_fragment(request: HttpRequest) -> HttpResponse:
    """The for-you shelf; ``?product=<id>``: as on that product's page (no repeat of its similar shelf)."""
    return _shelf_fragment(request, _FOR_YOU, "for-you", request.GET.get("product") or None, private=True)


class RecordViewMixin:
    """For a host's product ``DetailView``: records the view of ``self.object`` (never fails the
    page).  Set ``record_kind = "cart"`` (or ``"purchase"``) to change the event kind."""

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


# --- shopper controls (plain form posts; static/imgrec_app/controls.js makes them inline) -------


def _controls_done(request: HttpRequest) -> HttpResponse:
    """JSON for the script, else back to the page the form was on."""
    from django.http import JsonResponse
    from django.shortcuts import redirect
    from django.utils.http import url_has_allowed_host_and_scheme

    from imgrec_app.services import controls

    if "application/json" in request.headers.get("Accept", ""):
        response: HttpResponse = JsonResponse(
            {"paused": controls.is_paused(request), "not_interested": controls.dismissed_ids(request)}
        )
    else:
        target = request.POST.get("next") or request.headers.get("Referer") or "/"
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
            target = "/"
        response = redirect(target)
    patch_cache_control(response, private=True, no_cache=True)
    return response


@require_POST
def not_interested_control(request: HttpRequest) -> HttpResponse:
    """POST ``product_id`` (and ``undo=1`` to take it back)."""
    from imgrec_app.services import controls

    try:
        product = get_visible_product(request.POST.get("product_id", ""))
    except LookupError:
        raise Http404("No such product.") from None
    if request.POST.get("undo"):
        controls.undo_not_interested(request, product)
    else:
        controls.not_interested(request, product)
    return _controls_done(request)


@require_POST
def pause_control(request: HttpRequest) -> HttpResponse:
    """POST ``action=pause`` or ``action=resume``."""
    from imgrec_app.services import controls

    if request.POST.get("action") == "resume":
        controls.resume(request)
    else:
        controls.pause(request)
    return _controls_done(request)


@require_POST
def clear_history_control(request: HttpRequest) -> HttpResponse:
    history.clear(request)
    return _controls_done(request)


# --- measured shelves: the "seen" beacon of static/imgrec_app/track.js ------------------------------


@csrf_protect
@require_POST
def seen_beacon(request: HttpRequest) -> HttpResponse:
    """POST ``rec_id`` (repeatable, CSRF token in the body): the visitor's own shelves were seen.

    Always 204 for well-formed requests (another visitor's or an unknown id changes nothing, and
    says nothing); 429 over ``TRACKING_BEACON_RATE``.  CSRF is checked by Django's middleware.
    """
    from imgrec_app.services import tracking

    if not tracking.beacon_allowed(request):
        return HttpResponse(status=429)
    tracking.mark_seen(request, request.POST.getlist("rec_id"))
    response = HttpResponse(status=204)
    patch_cache_control(response, private=True, no_store=True)
    return response
