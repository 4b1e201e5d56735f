"""Measured shelves: an impression per rendered shelf, signed shelf links, clicks and attribution.

- **Impression at render**: a server-rendered shelf (template tags, lazy fragments) is one
  ``INSERT`` of a :class:`~imgrec_app.models.ShelfImpression` with a new recommendation id
  (``rec_id``) and the ids it shows; the static ``track.js`` later marks it ``seen`` with a beacon
  when it scrolls into view (:func:`mark_seen`: one ``UPDATE``, the visitor's own rows only).
- **Signed links**: each item's link carries ``?imgrec=<token>``, a ``TimestampSigner`` signature
  of ``rec_id.position.product_id`` (:func:`click_token`), so a click cannot be forged for a shelf
  that did not show that product at that position.
- **Click**: when the product page is opened through such a link, :func:`record_click_from_request`
  (called from ``history.record(kind="view")``, so ``RecordViewMixin``, ``record_view`` and Oscar's
  ``product_viewed`` receiver all do it) stores one :class:`~imgrec_app.models.ShelfClick` per
  impression and product.  A tampered, expired or another visitor's token is ignored silently.
- **Attribution**: a cart/purchase ``history.record`` of a product this visitor clicked on a shelf
  within ``ATTRIBUTION_WINDOW`` seconds creates one :class:`~imgrec_app.models.ShelfConversion`
  for the last such click (:func:`attribute`; once per click and kind).

Nothing is recorded for bots, for visitors who paused personalisation (they asked not to have
their behaviour used) or while ``IMGREC["TRACKING"]`` is False.  Rows are purged with the history
(:func:`purge`), given to the user at login and made anonymous when the visitor clears their
history (:func:`forget`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.core import signing
from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import product_content_type, product_key
from imgrec_app.models import Interaction, ShelfClick, ShelfConversion, ShelfImpression
from imgrec_app.services import controls, experiments, history

logger = logging.getLogger(__name__)

PARAM = "imgrec"
SALT = "imgrec.shelf-link"
# A link older than this no longer counts a click (a page left open for a week, a bookmark).
LINK_MAX_AGE = 7 * 24 * 3600
# Beacons carry at most this many recommendation ids.
MAX_BEACON_IDS = 20
_CLICK_DONE = "_imgrec_click_done"
CONVERSION_KINDS = (Interaction.Kind.CART, Interaction.Kind.PURCHASE)


def counted(request: HttpRequest | None) -> bool:
    """Whether this request's visitor is measured: tracking on, a request, not a bot, not paused."""
    return (
        bool(imgrec_settings.TRACKING)
        and request is not None
        and not history.is_bot(request)
        and not controls.is_paused(request)
    )


def shelf_source(items: Sequence[Any]) -> str:
    """The shelf's main source: its most common item source (the first such in shelf order)."""
    sources = [str(getattr(i, "source", "") or "") for i in items]
    if not sources:
        return ""
    counts = Counter(sources)
    best = max(counts.values())
    return next(s for s in sources if counts[s] == best)[:40]


def record_impression(
    request: HttpRequest | None,
    *,
    shelf: str,
    items: Sequence[Any],
    source: str | None = None,
    anchor: Any = None,
) -> uuid.UUID | None:
    """Record one rendered shelf (one ``INSERT``) and return its recommendation id.

    Args:
        request: the visitor's request (None: nothing recorded).
        shelf: "similar", "foryou", "bought_together", "recently_viewed", "search" or "popular".
        items: the shelf items in order, each with ``product_id`` and ``source``.
        source: the shelf's source; default :func:`shelf_source` of the items.
        anchor: the product the shelf is for (a product or its id), if any.

    Returns:
        The ``rec_id`` to sign the item links with (:func:`click_token`), or None when nothing
        was recorded (tracking off, no items, a bot, a paused visitor).  The impression records
        the visitor's experiment and variant on this shelf (:func:`experiments.for_shelf`).
    """
    if not items or not counted(request):
        return None
    assert request is not None
    owner = history.owner_fields(request, create=True)
    if owner is None:  # no session: nobody to attribute clicks to
        return None
    owner.pop("user__isnull", None)
    assigned = experiments.for_shelf(request, shelf)
    anchor_id = "" if anchor is None else (anchor if isinstance(anchor, str) else product_key(anchor))
    row = ShelfImpression.objects.create(
        rec_id=uuid.uuid4(),
        shelf=shelf[:24],
        source=(source if source is not None else shelf_source(items))[:40],
        experiment=assigned.experiment if assigned else "",
        variant=assigned.variant if assigned else "",
        anchor_id=str(anchor_id)[:64],
        item_ids=[str(i.product_id) for i in items],
        item_sources=[str(getattr(i, "source", "") or "") for i in items],
        **owner,
    )
    return row.rec_id


def click_token(rec_id: uuid.UUID | str, position: int, product_id: Any) -> str:
    """The signed value of a shelf link: recommendation id, 1-based position and product id."""
    rec = rec_id.hex if isinstance(rec_id, uuid.UUID) else uuid.UUID(str(rec_id)).hex
    return signing.TimestampSigner(salt=SALT).sign(f"{rec}.{int(position)}.{product_id}")


def parse_token(token: str) -> tuple[uuid.UUID, int, str] | None:
    """``(rec_id, position, product id)`` of a valid, unexpired token, else None (never raises)."""
    try:
        value = signing.TimestampSigner(salt=SALT).unsign(str(token)[:300], max_age=LINK_MAX_AGE)
        rec, position, product_id = value.split(".", 2)
        return uuid.UUID(hex=rec), int(position), product_id
    except (signing.BadSignature, ValueError, TypeError):
        return None


def tracked_url(url: str, rec_id: uuid.UUID | None, position: int, product_id: Any) -> str:
    """``url`` with the signed ``?imgrec=`` parameter appended (unchanged when ``rec_id`` is None)."""
    if not url or rec_id is None:
        return url
    parts = urlsplit(url)
    query = urlencode({PARAM: click_token(rec_id, position, product_id)})
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def record_click_from_request(request: HttpRequest, product: Any) -> ShelfClick | None:
    """Record a click when this product page was opened through one of the visitor's shelf links.

    Reads ``request.GET["imgrec"]``; a missing, tampered, expired or foreign token (another
    visitor's shelf, another product, a position the shelf did not have) records nothing and
    never raises.  A reload is not a second click (one row per impression and product).

    Returns:
        The click (new or the one recorded before), or None.
    """
    token = getattr(request, "GET", {}).get(PARAM)
    if not token or getattr(request, _CLICK_DONE, False) or not counted(request):
        return None
    setattr(request, _CLICK_DONE, True)
    parsed = parse_token(token)
    owner = history.owner_fields(request, create=False)
    if parsed is None or owner is None:
        return None
    rec_id, position, product_id = parsed
    key = product_key(product)
    if product_id != key:
        return None
    impression = ShelfImpression.objects.filter(rec_id=rec_id, **owner).first()
    if impression is None or not 1 <= position <= len(impression.item_ids):
        return None
    if impression.item_ids[position - 1] != key:
        return None
    sources = impression.item_sources or []
    source = sources[position - 1] if len(sources) >= position else ""
    try:
        with transaction.atomic():
            found, _ = ShelfClick.objects.get_or_create(
                impression=impression,
                object_id=key,
                defaults={"content_type": product_content_type(), "position": position, "source": source[:40]},
            )
    except IntegrityError:  # the same link opened twice at once
        return ShelfClick.objects.filter(impression=impression, object_id=key).first()
    return found


def attribute(interaction: Interaction) -> ShelfConversion | None:
    """Attribute a cart/purchase to the owner's last shelf click on that product within the window.

    Returns:
        The conversion (new, or the one this click and kind had already), or None when the event
        is not a cart/purchase or no click of the same visitor is recent enough.
    """
    if interaction.kind not in CONVERSION_KINDS or not imgrec_settings.TRACKING:
        return None
    if interaction.user_id is not None:
        owner = Q(impression__user_id=interaction.user_id)
    elif interaction.visitor_id is not None:
        owner = Q(impression__visitor_id=interaction.visitor_id, impression__user__isnull=True)
    else:
        return None
    since = interaction.created_at - timedelta(seconds=float(imgrec_settings.ATTRIBUTION_WINDOW))
    click = (
        ShelfClick.objects.filter(
            owner,
            content_type_id=interaction.content_type_id,
            object_id=interaction.object_id,
            created_at__gte=since,
            created_at__lte=interaction.created_at,
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    if click is None:
        return None
    try:
        with transaction.atomic():
            made, _ = ShelfConversion.objects.get_or_create(
                click=click, kind=interaction.kind, defaults={"interaction": interaction}
            )
    except IntegrityError:
        return ShelfConversion.objects.filter(click=click, kind=interaction.kind).first()
    return made


def beacon_allowed(request: HttpRequest, *, now: float | None = None) -> bool:
    """Count one beacon of this visitor against ``TRACKING_BEACON_RATE`` (fixed window, shared cache)."""
    from imgrec_app.services.throttle import client_ident, parse_rate

    rate = parse_rate(imgrec_settings.TRACKING_BEACON_RATE)
    if rate is None:
        return True
    vid = history.visitor_id(request)
    ident = f"visitor-{vid}" if vid is not None and history._user(request) is None else client_ident(request)
    window = int((now if now is not None else time.time()) // rate.seconds)
    key = f"imgrec:beacon:{ident}:{window}"
    cache = caches[imgrec_settings.THROTTLE_CACHE]
    if cache.add(key, 1, timeout=rate.seconds + 1):
        return True
    try:
        return cache.incr(key) <= rate.count
    except ValueError:  # expired between add and incr
        return True


def mark_seen(request: HttpRequest, rec_ids: Iterable[Any]) -> int:
    """Mark the visitor's own shelves with these ids as seen (one ``UPDATE``); returns how many.

    Ids that are malformed, already seen or another visitor's are skipped silently.
    """
    if not counted(request):
        return 0
    owner = history.owner_fields(request, create=False)
    if owner is None:
        return 0
    ids = []
    for raw in list(rec_ids)[:MAX_BEACON_IDS]:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    if not ids:
        return 0
    return ShelfImpression.objects.filter(rec_id__in=ids, seen=False, **owner).update(seen=True)


def merge_on_login(request: HttpRequest, user: Any) -> int:
    """Give the anonymous visitor's impressions (and so their clicks) to ``user``; returns how many."""
    vid = history.visitor_id(request)
    if vid is None:
        return 0
    return ShelfImpression.objects.filter(visitor_id=vid, user__isnull=True).update(user=user, visitor_id=None)


def forget(request: HttpRequest) -> int:
    """Detach the visitor from their impressions (when they clear their history): the counts stay,
    nothing points at them any more."""
    q = history.owner_filter(request)
    if q is None:
        return 0
    return ShelfImpression.objects.filter(q).update(user=None, visitor_id=None)


def purge(*, older_than_days: int | None = None) -> int:
    """Delete impressions (with their clicks and conversions) older than the history's retention."""
    days = older_than_days if older_than_days is not None else imgrec_settings.HISTORY_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = ShelfImpression.objects.filter(created_at__lt=cutoff).delete()
    return deleted
