"""Template tags for shelves.  They never break a page: on any error they log and render a
labelled fallback or nothing.  ``{% load imgrec_tags %}``.

Every tag name starts with ``imgrec_``.  The unprefixed ``similar_products`` and
``recommended_for_you`` of 0.1 still work but emit a ``DeprecationWarning``; they go in 0.3.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any

from django import template
from django.template.loader import select_template
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from imgrec_app.conf import imgrec_settings
from imgrec_app.services import controls

logger = logging.getLogger(__name__)
register = template.Library()


def _request(context: template.Context) -> Any:
    return context.get("request")


# Shelf names of the tags as the measured-shelf rows and IMGREC["EXPERIMENTS"] spell them.
_SHELF_NAMES = {"similar": "similar", "for_you": "foryou", "bought_together": "bought_together"}


def _in_variant(request: Any, shelf: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a shelf function with the visitor's experiment variant settings for ``shelf``."""
    from imgrec_app.services import experiments

    with experiments.applied(request, shelf):
        return func(*args, **kwargs)


def _safely(what: str, func: Any, *args: Any, **kwargs: Any) -> list[Any]:
    from django.db import connection, transaction

    try:
        if connection.in_atomic_block and connection.settings_dict.get("ATOMIC_REQUESTS"):
            # The page runs in the request's transaction: a statement that fails in PostgreSQL
            # would abort it for the rest of the page, so the shelf gets a savepoint of its own.
            with transaction.atomic():
                return func(*args, **kwargs)
        return func(*args, **kwargs)
    except Exception:
        logger.exception("imgrec %s shelf failed; rendering without it", what)
        return []


_LINKED = "_imgrec_stylesheet_linked"


def _stylesheet_url(context: template.Context) -> str | None:
    """The URL of ``IMGREC["SHELF_STYLESHEET"]`` the first time a page asks for it, then None (one
    ``<link>`` per page; without a request in the context, every shelf links it)."""
    path = imgrec_settings.SHELF_STYLESHEET
    if not path:
        return None
    request = _request(context)
    if request is not None:
        if getattr(request, _LINKED, False):
            return None
        setattr(request, _LINKED, True)
    return static(path)


@register.simple_tag(takes_context=True)
def imgrec_stylesheet(context: template.Context) -> SafeString:
    """``{% imgrec_stylesheet %}`` in ``<head>``: the ``<link>`` of the shelf stylesheet, so that the
    shelves further down the page do not link it themselves.  Renders nothing when
    ``IMGREC["SHELF_STYLESHEET"]`` is None or the page has linked it already."""
    url = _stylesheet_url(context)
    return format_html('<link rel="stylesheet" href="{}">', url) if url else mark_safe("")


def _deprecated_alias(new: Callable[..., Any], old_name: str) -> Callable[..., Any]:
    """Register ``new`` under its pre-0.2 name as well, warning on each use."""

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"The template tag {{% {old_name} %}} is deprecated; use {{% {new.__name__} %}} (imgrec 0.2).",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    register.simple_tag(alias, takes_context=True, name=old_name)
    return alias


@register.simple_tag(takes_context=True)
def imgrec_similar_products(
    context: template.Context, product: Any, limit: int = 8, same_category: bool = False
) -> list[Any]:
    """``{% imgrec_similar_products product limit=8 as items %}``: items with ``.product``, ``.reason``."""
    from imgrec_app.services.foryou import similar_for_page

    if product is None:
        return []
    # Once per request: the page's for-you shelf reuses it to leave these items out.
    request = _request(context)
    return _safely(
        "similar",
        _in_variant,
        request,
        "similar",
        controls.shelf,
        request,
        lambda n: similar_for_page(request, product, limit=n, same_category=same_category),
        limit=limit,
    )


def _page_product(context: template.Context, product: Any) -> Any:
    """``product=`` if given, else the context's ``product`` when it is a shop product."""
    if product is not None:
        return product
    from imgrec_app.hosts import get_product_model

    candidate = context.get("product")
    try:
        return candidate if isinstance(candidate, get_product_model()) else None
    except Exception:
        return None


@register.simple_tag(takes_context=True)
def imgrec_recommended_for_you(context: template.Context, limit: int = 8, product: Any = None) -> list[Any]:
    """``{% imgrec_recommended_for_you limit=8 as items %}``: from the current visitor's own history.

    On a product page (``product=`` or a ``product`` in the context) the product itself and the
    items of its similar shelf are left out, and no reason names the product.  The visitor's
    shelf controls apply (paused: trending; "not interested" left out).
    """
    request = _request(context)
    if request is None:
        return []
    page_product = _page_product(context, product)
    return _safely(
        "for-you", _in_variant, request, "foryou", controls.for_you, request, limit=limit, product=page_product
    )


similar_products = _deprecated_alias(imgrec_similar_products, "similar_products")
recommended_for_you = _deprecated_alias(imgrec_recommended_for_you, "recommended_for_you")


def _render_shelf(context: template.Context, kind: str, title: str, items: list[Any], anchor: Any = None) -> SafeString:
    from imgrec_app.services import tracking
    from imgrec_app.services.presentation import image_urls

    try:
        images = image_urls(items)
        # One INSERT per rendered shelf; its id signs every item link (services/tracking.py).
        rec_id = tracking.record_impression(_request(context), shelf=_SHELF_NAMES[kind], items=items, anchor=anchor)
        entries = [
            {
                "item": i,
                "product": i.product,
                "url": tracking.tracked_url(
                    i.product.get_absolute_url() if hasattr(i.product, "get_absolute_url") else "",
                    rec_id,
                    position,
                    i.product_id,
                ),
                "image_url": images.get(i.product_id),
            }
            for position, i in enumerate(items, start=1)
        ]
        tpl = select_template([f"imgrec_app/shelf_{kind}.html", "imgrec_app/shelf.html"])
        ctx = {
            "kind": kind,
            "title": title,
            "entries": entries,
            "request": _request(context),
            **_controls(context),
            **_beacon(context, rec_id),
        }
        if entries:
            ctx["stylesheet"] = _stylesheet_url(context)
        return mark_safe(tpl.render(ctx))
    except Exception:
        logger.exception("imgrec could not render the %s shelf", kind)
        return mark_safe("")


def _beacon(context: template.Context, rec_id: Any) -> dict[str, Any]:
    """The recommendation id and the "seen" beacon URL of a tracked shelf (no URL if not mounted)."""
    from django.middleware.csrf import get_token

    if rec_id is None:
        return {}
    try:
        url = reverse("imgrec:seen")
    except NoReverseMatch:
        return {"rec_id": str(rec_id)}
    return {"rec_id": str(rec_id), "beacon_url": url, "csrf_token": get_token(_request(context))}


def _controls(context: template.Context) -> dict[str, Any]:
    """What a shelf needs for its "Not interested" buttons (none without a request or the URLs)."""
    from django.middleware.csrf import get_token

    from imgrec_app.conf import imgrec_settings

    request = _request(context)
    if request is None or not imgrec_settings.SHOPPER_CONTROLS:
        return {}
    try:
        url = reverse("imgrec:not_interested")
    except NoReverseMatch:
        return {}
    return {"controls_url": url, "csrf_token": get_token(request)}


@register.simple_tag(takes_context=True)
def imgrec_shopper_controls(context: template.Context, recent: int = 8) -> SafeString:
    """The visitor's own controls: pause/resume, clear history, "not interested" with undo, recent views."""
    from django.middleware.csrf import get_token

    from imgrec_app.hosts import get_product_model

    request = _request(context)
    if request is None:
        return mark_safe("")
    try:
        model = get_product_model()
        ids = controls.dismissed_ids(request)
        found = model._default_manager.in_bulk([model._meta.pk.to_python(i) for i in ids])
        dismissed = [found[k] for k in (model._meta.pk.to_python(i) for i in ids) if k in found]
        tpl = select_template(["imgrec_app/shopper_controls.html"])
        return mark_safe(
            tpl.render(
                {
                    "request": request,
                    "csrf_token": get_token(request),
                    "paused": controls.is_paused(request),
                    "dismissed": dismissed,
                    "recent": imgrec_recently_viewed(context, limit=recent),
                    "pause_url": reverse("imgrec:pause"),
                    "clear_url": reverse("imgrec:clear_history"),
                    "not_interested_url": reverse("imgrec:not_interested"),
                }
            )
        )
    except Exception:
        logger.exception("imgrec could not render the shopper controls")
        return mark_safe("")


@register.simple_tag(takes_context=True)
def imgrec_similar_shelf(
    context: template.Context,
    product: Any,
    limit: int = 8,
    title: str | None = None,
    same_category: bool = False,
) -> SafeString:
    """Render the similar-products shelf (template ``imgrec_app/shelf_similar.html`` or ``shelf.html``)."""
    items = imgrec_similar_products(context, product, limit, same_category)
    return _render_shelf(context, "similar", title or gettext("Similar products"), items, anchor=product)


@register.simple_tag(takes_context=True)
def imgrec_for_you_shelf(
    context: template.Context, limit: int = 8, title: str | None = None, product: Any = None
) -> SafeString:
    """Render the recommended-for-you shelf (on a product page: never repeating its similar shelf)."""
    items = imgrec_recommended_for_you(context, limit, product)
    anchor = _page_product(context, product)
    return _render_shelf(context, "for_you", title or gettext("Recommended for you"), items, anchor=anchor)


@register.simple_tag(takes_context=True)
def imgrec_lazy_shelf(context: template.Context, kind: str, product: Any = None, limit: int = 8) -> SafeString:
    """A placeholder that fetches the shelf's HTML fragment after the page loads, so a cached
    page can still show personal shelves.  ``kind``: "similar", "bought_together" or "for_you"."""
    try:
        if kind == "similar":
            url = reverse("imgrec:similar_fragment", args=[str(product.pk)])
        elif kind == "bought_together":
            url = reverse("imgrec:bought_together_fragment", args=[str(product.pk)])
        else:
            url = reverse("imgrec:for_you_fragment")
            if product is not None:  # on a product page: the fragment leaves its similar shelf out
                url = f"{url}?product={product.pk}"
    except (NoReverseMatch, AttributeError):
        logger.warning("imgrec_lazy_shelf needs imgrec_app.urls mounted (namespace 'imgrec')")
        return mark_safe("")
    tpl = select_template(["imgrec_app/lazy_shelf.html"])
    sep = "&" if "?" in url else "?"
    ctx = {"url": f"{url}{sep}limit={int(limit)}", "kind": kind, "stylesheet": _stylesheet_url(context)}
    return mark_safe(tpl.render(ctx))


@register.simple_tag(takes_context=True)
def imgrec_recently_viewed(context: template.Context, limit: int = 8) -> list[Any]:
    """``{% imgrec_recently_viewed limit=8 as products %}``: the visitor's own recent products."""
    from imgrec_app.hosts import get_product_model
    from imgrec_app.services import history

    request = _request(context)
    if request is None:
        return []
    try:
        ids: list[str] = []
        for obj in history.visible_history(request).values_list("object_id", flat=True)[: limit * 4]:
            if obj not in ids:
                ids.append(obj)
            if len(ids) >= limit:
                break
        model = get_product_model()
        objects = model._default_manager.in_bulk([model._meta.pk.to_python(i) for i in ids])
        return [objects[k] for k in (model._meta.pk.to_python(i) for i in ids) if k in objects]
    except Exception:
        logger.exception("imgrec recently-viewed failed")
        return []


@register.simple_tag(takes_context=True)
def imgrec_bought_together(context: template.Context, product: Any, limit: int = 8) -> list[Any]:
    """``{% imgrec_bought_together product limit=4 as items %}``: frequently bought together."""
    from imgrec_app.services.bought_together import bought_together as service

    if product is None:
        return []
    request = _request(context)
    return _safely(
        "bought-together",
        _in_variant,
        request,
        "bought_together",
        controls.shelf,
        request,
        lambda n: service(product, limit=n),
        limit=limit,
    )


@register.simple_tag(takes_context=True)
def imgrec_bought_together_shelf(
    context: template.Context, product: Any, limit: int = 4, title: str = "Frequently bought together"
) -> SafeString:
    """Render the frequently-bought-together shelf (``imgrec_app/shelf_bought_together.html`` or ``shelf.html``)."""
    items = imgrec_bought_together(context, product, limit)
    return _render_shelf(context, "bought_together", title, items, anchor=product)
