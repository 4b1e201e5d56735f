"""Template tags for shelves.  They never break a page: on any error they log and render a
labelled fallback or nothing.  ``{% load imgrec_tags %}``."""

from __future__ import annotations

import logging
from typing import Any

from django import template
from django.template.loader import select_template
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe

logger = logging.getLogger(__name__)
register = template.Library()


def _request(context: template.Context) -> Any:
    return context.get("request")


def _safely(what: str, func: Any, *args: Any, **kwargs: Any) -> list[Any]:
    try:
        return func(*args, **kwargs)
    except Exception:
        logger.exception("imgrec %s shelf failed; rendering without it", what)
        return []


@register.simple_tag(takes_context=True)
def similar_products(context: template.Context, product: Any, limit: int = 8, same_category: bool = False) -> list[Any]:
    """``{% similar_products product limit=8 as items %}``: items with ``.product``, ``.reason``."""
    from imgrec_app.services.recommend import similar_products as service

    if product is None:
        return []
    return _safely("similar", service, product, limit=limit, same_category=same_category)


@register.simple_tag(takes_context=True)
def recommended_for_you(context: template.Context, limit: int = 8) -> list[Any]:
    """``{% recommended_for_you limit=8 as items %}``: from the current visitor's own history."""
    from imgrec_app.services.recommend import recommended_for_you as service

    request = _request(context)
    if request is None:
        return []
    return _safely("for-you", service, request, limit=limit)


def _render_shelf(context: template.Context, kind: str, title: str, items: list[Any]) -> SafeString:
    from imgrec_app.services.presentation import image_urls

    try:
        images = image_urls(items)
        entries = [
            {
                "item": i,
                "product": i.product,
                "url": i.product.get_absolute_url() if hasattr(i.product, "get_absolute_url") else "",
                "image_url": images.get(i.product_id),
            }
            for i in items
        ]
        tpl = select_template([f"imgrec_app/shelf_{kind}.html", "imgrec_app/shelf.html"])
        return mark_safe(tpl.render({"kind": kind, "title": title, "entries": entries, "request": _request(context)}))
    except Exception:
        logger.exception("imgrec could not render the %s shelf", kind)
        return mark_safe("")


@register.simple_tag(takes_context=True)
def imgrec_similar_shelf(
    context: template.Context,
    product: Any,
    limit: int = 8,
    title: str = "Similar products",
    same_category: bool = False,
) -> SafeString:
    """Render the similar-products shelf (template ``imgrec_app/shelf_similar.html`` or ``shelf.html``)."""
    return _render_shelf(context, "similar", title, similar_products(context, product, limit, same_category))


@register.simple_tag(takes_context=True)
def imgrec_for_you_shelf(context: template.Context, limit: int = 8, title: str = "Recommended for you") -> SafeString:
    """Render the recommended-for-you shelf."""
    return _render_shelf(context, "for_you", title, recommended_for_you(context, limit))


@register.simple_tag(takes_context=True)
def imgrec_lazy_shelf(context: template.Context, kind: str, product: Any = None, limit: int = 8) -> SafeString:
    """A placeholder that fetches the shelf's HTML fragment after the page loads, so a cached
    page can still show personal shelves.  ``kind``: "similar" or "for_you"."""
    try:
        if kind == "similar":
            url = reverse("imgrec:similar_fragment", args=[str(product.pk)])
        else:
            url = reverse("imgrec:for_you_fragment")
    except (NoReverseMatch, AttributeError):
        logger.warning("imgrec_lazy_shelf needs imgrec_app.urls mounted (namespace 'imgrec')")
        return mark_safe("")
    tpl = select_template(["imgrec_app/lazy_shelf.html"])
    return mark_safe(tpl.render({"url": f"{url}?limit={int(limit)}", "kind": kind}))


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
        for obj in history.own_history(request).values_list("object_id", flat=True)[: limit * 4]:
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
