"""Shopper controls: "not interested" in a product (with undo) and pausing personalisation.

A dismissed product disappears from every shelf of that visitor at once, and products that look
very like it (image similarity of at least ``NOT_INTERESTED_SIMILARITY``) move to the end of the
shelf.  While personalisation is paused, "recommended for you" ignores the history (it is kept)
and no new views are recorded.  Both are owned like the history (user, or the anonymous visitor id
of the session) and given to the user at login.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import product_content_type, product_key
from imgrec_app.models import ShopperControl
from imgrec_app.services import history, search
from imgrec_app.services.models import serving_model

Kind = ShopperControl.Kind


def _own(request: HttpRequest) -> QuerySet[ShopperControl]:
    owner = history.owner_fields(request, create=False)
    return ShopperControl.objects.none() if owner is None else ShopperControl.objects.filter(**owner)


_CACHE_ATTR = "_imgrec_controls"


def _state(request: HttpRequest) -> tuple[bool, list[str]]:
    """``(paused, dismissed ids newest first)`` in one query, kept on the request."""
    cached = getattr(request, _CACHE_ATTR, None)
    if cached is None:
        paused, dismissed = False, []
        for kind, obj in _own(request).order_by("-created_at", "-pk").values_list("kind", "object_id"):
            if kind == Kind.PAUSED:
                paused = True
            else:
                dismissed.append(obj)
        cached = (paused, dismissed)
        setattr(request, _CACHE_ATTR, cached)
    return cached


def _changed(request: HttpRequest) -> None:
    if hasattr(request, _CACHE_ATTR):
        delattr(request, _CACHE_ATTR)


def _add(request: HttpRequest, kind: str, object_id: str = "") -> bool:
    _changed(request)
    owner = history.owner_fields(request, create=True)
    if owner is None:
        return False
    owner.pop("user__isnull", None)
    ct = product_content_type() if object_id else None
    try:
        with transaction.atomic():
            _, created = ShopperControl.objects.get_or_create(
                kind=kind, object_id=object_id, **owner, defaults={"content_type": ct}
            )
    except IntegrityError:  # the same click twice at once: the other request stored it
        return False
    return created


def not_interested(request: HttpRequest, product: Any) -> bool:
    """Hide ``product`` from this visitor's shelves; True if it was not hidden already."""
    return _add(request, Kind.NOT_INTERESTED, product_key(product))


def undo_not_interested(request: HttpRequest, product: Any) -> bool:
    """Show a dismissed product again; True if it was dismissed."""
    _changed(request)
    deleted, _ = _own(request).filter(kind=Kind.NOT_INTERESTED, object_id=product_key(product)).delete()
    return bool(deleted)


def dismissed_ids(request: HttpRequest) -> list[str]:
    """Product ids this visitor said "not interested" to, newest first."""
    return list(_state(request)[1])


def pause(request: HttpRequest) -> bool:
    """Stop using (and recording) this visitor's history for their shelves; True if it was running."""
    return _add(request, Kind.PAUSED)


def resume(request: HttpRequest) -> bool:
    """Use the history again; True if personalisation was paused."""
    _changed(request)
    deleted, _ = _own(request).filter(kind=Kind.PAUSED).delete()
    return bool(deleted)


def is_paused(request: HttpRequest) -> bool:
    return _state(request)[0]


def merge_on_login(request: HttpRequest, user: Any) -> int:
    """Give the session's anonymous controls to ``user`` (before the history merge drops the id)."""
    vid = history.visitor_id(request)
    if vid is None:
        return 0
    moved = 0
    for row in ShopperControl.objects.filter(visitor_id=vid, user__isnull=True):
        if ShopperControl.objects.filter(user=user, kind=row.kind, object_id=row.object_id).exists():
            row.delete()  # the user already had the same control
        else:
            ShopperControl.objects.filter(pk=row.pk).update(user=user, visitor_id=None)
            moved += 1
    return moved


def apply(request: HttpRequest | None, items: list[Any]) -> list[Any]:
    """Leave this visitor's dismissed products out of ``items``; move look-alikes to the end.

    ``items`` are shelf items with a ``product_id`` (any shelf).  One query when the visitor has
    dismissed nothing, two more (their vectors) when they have.
    """
    if request is None or not items:
        return items
    dismissed = set(dismissed_ids(request))
    if not dismissed:
        return items
    kept = [i for i in items if i.product_id not in dismissed]
    serving = serving_model()
    if serving is None or not kept:
        return kept
    vectors = search.vectors_of({i.product_id for i in kept} | dismissed, model_id=serving.model_id)
    refused = [vectors[d] for d in dismissed if d in vectors]
    if not refused:
        return kept
    refused_matrix = np.stack(refused)
    threshold = float(imgrec_settings.NOT_INTERESTED_SIMILARITY)

    def looks_dismissed(item: Any) -> bool:
        vec = vectors.get(item.product_id)
        return vec is not None and float((refused_matrix @ vec).max()) >= threshold

    alike = [looks_dismissed(i) for i in kept]
    return [i for i, a in zip(kept, alike) if not a] + [i for i, a in zip(kept, alike) if a]


def for_you(request: HttpRequest, *, limit: int = 8, product: Any = None) -> list[Any]:
    """ "Recommended for you" with the visitor's controls: trending while paused, dismissed left out.

    ``product``: the product page it is shown on (the product and its similar shelf left out).
    """
    from imgrec_app.services import foryou, recommend

    limit = recommend.clamp_limit(limit)
    extra = len(dismissed_ids(request))
    if is_paused(request):
        items = recommend.trending(limit=limit + extra + (1 if product is not None else 0))
        if product is not None:
            items = [i for i in items if i.product_id != product_key(product)]
    elif product is not None:
        items = foryou.for_product_page(request, product, limit=limit + extra)
    else:
        items = foryou.recommended_for_you(request, limit=limit + extra)
    return apply(request, items)[:limit]


def shelf(request: HttpRequest | None, items_for: Any, *, limit: int) -> list[Any]:
    """Run a shelf function asking for enough items that ``limit`` remain after :func:`apply`."""
    extra = len(dismissed_ids(request)) if request is not None else 0
    return apply(request, items_for(limit + extra))[:limit]
