"""Browsing history: record views/cart/purchases for users and anonymous visitors.

Anonymous visitors get a random id kept in their session (not the session key, which Django
rotates at login).  On login their anonymous rows are given to the user exactly once (the rows
then belong to the user; the session's visitor id is dropped).  Logout flushes the session, so a
new anonymous history starts.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import product_content_type, product_key, visible_rule
from imgrec_app.models import Interaction, ShopperControl

VISITOR_SESSION_KEY = "_imgrec_visitor"
Kind = Interaction.Kind
KIND_WEIGHTS: dict[str, float] = {Kind.VIEW: 1.0, Kind.CART: 3.0, Kind.PURCHASE: 5.0}


def visitor_id(request: HttpRequest, *, create: bool = False) -> uuid.UUID | None:
    """The anonymous visitor's id from the session, created on demand."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    value = session.get(VISITOR_SESSION_KEY)
    if value:
        try:
            return uuid.UUID(str(value))
        except ValueError:
            pass
    if not create:
        return None
    new = uuid.uuid4()
    session[VISITOR_SESSION_KEY] = str(new)
    return new


def _user(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def owner_fields(request: HttpRequest, *, create: bool) -> dict[str, Any] | None:
    """The current visitor's owner fields as filter keywords (``user``, or ``visitor_id`` with no
    user), ``None`` when an anonymous visitor has no id yet (``create=True`` gives them one).
    Shared by every per-visitor table (shopper controls, shelf impressions)."""
    user = _user(request)
    if user is not None:
        return {"user": user}
    vid = visitor_id(request, create=create)
    return None if vid is None else {"visitor_id": vid, "user__isnull": True}


def owner_filter(request: HttpRequest) -> Q | None:
    """A filter selecting the current visitor's own rows, or None when they have none."""
    user = _user(request)
    if user is not None:
        return Q(user=user)
    vid = visitor_id(request)
    if vid is None:
        return None
    return Q(visitor_id=vid, user__isnull=True)


def own_history(request: HttpRequest) -> QuerySet[Interaction]:
    """The current visitor's interactions, newest first (empty for a new visitor)."""
    q = owner_filter(request)
    if q is None:
        return Interaction.objects.none()
    return Interaction.objects.filter(q).order_by("-created_at", "-pk")


def visible_history(request: HttpRequest) -> QuerySet[Interaction]:
    """The visitor's own interactions with products they may still see, newest first.

    What names products back to the visitor ("recently viewed", the for-you reasons) reads this,
    not :func:`own_history`: a product unpublished since (or an event recorded for a hidden one)
    is never named.
    """
    return own_history(request).filter(visible_rule(), content_type=product_content_type())


_bot_re_cache: dict[str, re.Pattern[str]] = {}


def is_bot(request: HttpRequest) -> bool:
    pattern = imgrec_settings.BOT_USER_AGENTS
    if not pattern:
        return False
    compiled = _bot_re_cache.get(pattern)
    if compiled is None:
        compiled = _bot_re_cache[pattern] = re.compile(pattern, re.IGNORECASE)
    return bool(compiled.search(request.META.get("HTTP_USER_AGENT", "")))


def personalisation_paused(request: HttpRequest) -> bool:
    """True while the visitor has paused personalisation (see :mod:`imgrec_app.services.controls`)."""
    q = owner_filter(request)
    return q is not None and ShopperControl.objects.filter(q, kind=ShopperControl.Kind.PAUSED).exists()


def record(request: HttpRequest, product: Any, *, kind: str = Kind.VIEW) -> Interaction | None:
    """Record an interaction of the current visitor with a product.

    Repeated events of the same kind within ``IMGREC["DEDUPE_SECONDS"]`` count once; bot user
    agents are ignored when ``IMGREC["BOT_USER_AGENTS"]`` matches.

    Returns:
        The new row, or None when nothing was recorded (a duplicate, a bot, or a visitor who
        paused personalisation).
    """
    if kind not in Kind.values:
        raise ValueError(f"Unknown interaction kind {kind!r}; use one of {Kind.values}")
    if is_bot(request) or personalisation_paused(request):
        return None
    # Measured shelves (services/tracking.py): a page opened through a signed shelf link is a
    # click, even when the view itself is a duplicate; a new cart/purchase may be attributed.
    from imgrec_app.services import tracking

    if kind == Kind.VIEW:
        tracking.record_click_from_request(request, product)
    user = _user(request)
    vid = None if user is not None else visitor_id(request, create=True)
    ct = product_content_type()
    key = product_key(product)
    owner = Q(user=user) if user is not None else Q(visitor_id=vid, user__isnull=True)
    window = timezone.now() - timedelta(seconds=imgrec_settings.DEDUPE_SECONDS)
    if Interaction.objects.filter(owner, content_type=ct, object_id=key, kind=kind, created_at__gte=window).exists():
        return None
    row = Interaction.objects.create(user=user, visitor_id=vid, content_type=ct, object_id=key, kind=kind)
    if kind != Kind.VIEW:
        tracking.attribute(row)
    return row


def merge_on_login(request: HttpRequest, user: Any) -> int:
    """Give the session's anonymous history to ``user``; returns how many rows moved."""
    vid = visitor_id(request)
    if vid is None:
        return 0
    moved = Interaction.objects.filter(visitor_id=vid, user__isnull=True).update(user=user, visitor_id=None)
    request.session.pop(VISITOR_SESSION_KEY, None)
    return moved


def export(request: HttpRequest) -> list[dict[str, Any]]:
    """The visitor's own history as plain data (for download)."""
    return [
        {"product_id": obj, "kind": kind, "created_at": created.isoformat()}
        for obj, kind, created in own_history(request).values_list("object_id", "kind", "created_at")
    ]


def clear(request: HttpRequest) -> int:
    """Delete the visitor's own history; returns how many rows went."""
    q = owner_filter(request)
    if q is None:
        return 0
    deleted, _ = Interaction.objects.filter(q).delete()
    from imgrec_app.services import tracking

    tracking.forget(request)  # their shelf impressions stay counted, no longer theirs
    return deleted


def purge(*, older_than_days: int | None = None) -> int:
    """Delete interactions older than the retention period; returns how many.

    Shelf impressions, clicks and conversions of the same age go too (``tracking.purge``).
    """
    from imgrec_app.services import tracking

    days = older_than_days if older_than_days is not None else imgrec_settings.HISTORY_RETENTION_DAYS
    deleted, _ = Interaction.objects.filter(created_at__lt=timezone.now() - timedelta(days=days)).delete()
    tracking.purge(older_than_days=days)
    return deleted
