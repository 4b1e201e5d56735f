"""One throttle and one memory bound for every path that runs the model on a visitor's photo.

The API's search view and a host's own search page (the demo's ``/search/photo/``) both call
:func:`search_by_photo` here, so neither can run the model past ``SEARCH_THROTTLE_RATE``.
The budget is counted in Django's cache (``IMGREC["THROTTLE_CACHE"]``, a cache alias): with a
shared cache (Redis, Memcached, database) every web process and server counts against the same
budget; with a per-process one (local memory, dummy) each process has its own, which check
``imgrec_app.W030`` reports.

Counting is a fixed window per client (``cache.add`` then ``cache.incr``: atomic on Redis and
Memcached, so two processes never both take the last slot).

Memory: a photo is decoded only when its *decoded* size fits ``SEARCH_MAX_DECODE_PIXELS`` (JPEGs
are decoded at reduced size in draft mode, so their decoded size is the draft size), and at most
``SEARCH_CONCURRENCY`` searches decode and embed at once in one process; others wait up to
``SEARCH_QUEUE_SECONDS`` and are then answered "busy".  A web process's search memory is then
bounded by about ``SEARCH_CONCURRENCY × SEARCH_MAX_DECODE_PIXELS × 4`` bytes plus the model.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from imgrec_app.conf import imgrec_settings

# JPEG draft mode decodes at 1/1, 1/2, 1/4 or 1/8 scale; imgrec asks for a shorter side >= this.
_DRAFT_MIN_SIZE = 256
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Throttled(Exception):
    """Over the search budget; ``retry_after`` is the number of seconds until the next slot."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many searches; try again in {retry_after} s.")
        self.retry_after = retry_after


class Busy(Exception):
    """Every search slot of this process stayed taken for ``SEARCH_QUEUE_SECONDS``."""

    retry_after = 5


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(rate: Any) -> Rate | None:
    """``"10/min"`` → ``Rate(10, 60)``; None means unthrottled (as DRF's rate strings)."""
    if rate is None:
        return None
    num, period = str(rate).split("/")
    return Rate(int(num), _PERIODS[period.strip()[0]])


def client_ident(request: HttpRequest) -> str:
    """Per user, else per client address (``REMOTE_ADDR`` only: a forged ``X-Forwarded-For``
    cannot reset it; behind a proxy, set ``REMOTE_ADDR`` from the proxy's header there)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user-{user.pk}"
    return request.META.get("REMOTE_ADDR") or "unknown"


def take_search_slot(ident: str, *, now: float | None = None) -> None:
    """Count one search of ``ident``.

    Raises:
        Throttled: the client is over ``SEARCH_THROTTLE_RATE`` in the current window.
    """
    rate = parse_rate(imgrec_settings.SEARCH_THROTTLE_RATE)
    if rate is None:
        return
    now = time.time() if now is None else now
    window = int(now // rate.seconds)
    key = f"imgrec:throttle:search:{ident}:{window}"
    cache = caches[imgrec_settings.THROTTLE_CACHE]
    cache.add(key, 0, timeout=rate.seconds + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: this is the window's first search
        cache.add(key, 1, timeout=rate.seconds + 1)
        count = 1
    if count > rate.count:
        raise Throttled(max(1, math.ceil((window + 1) * rate.seconds - now)))


def decoded_pixels(info: Any) -> int:
    """Pixels the decoder allocates for an image of this header (JPEG: at its draft scale)."""
    pixels = info.width * info.height
    if info.format == "JPEG":
        scale = 1
        while scale < 8 and min(info.width, info.height) // (scale * 2) >= _DRAFT_MIN_SIZE:
            scale *= 2
        pixels = math.ceil(info.width / scale) * math.ceil(info.height / scale)
    return pixels


def check_decode_budget(file: Any) -> None:
    """Refuse a search photo whose decoded size is over ``SEARCH_MAX_DECODE_PIXELS`` (from its
    header, before any pixel is decoded).

    Raises:
        ValidationError: ``too_many_pixels`` (and anything :func:`validate_product_image` raises).
    """
    from imgrec_app.validators import validate_product_image

    info = validate_product_image(file)
    limit = int(imgrec_settings.SEARCH_MAX_DECODE_PIXELS)
    if decoded_pixels(info) > limit:
        raise ValidationError(
            f"The photo is {info.width}×{info.height} pixels; search takes photos of at most "
            f"{limit:,} pixels (a JPEG may be larger): make it smaller and try again.",
            code="too_many_pixels",
        )


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _semaphore() -> threading.BoundedSemaphore:
    size = int(imgrec_settings.SEARCH_CONCURRENCY)
    with _slots_lock:
        sem = _slots.get(size)
        if sem is None:
            sem = _slots[size] = threading.BoundedSemaphore(size)
        return sem


def search_by_photo(request: HttpRequest, file: Any, *, limit: int = 8) -> list[Any]:
    """:func:`imgrec_app.services.recommend.search_by_photo`, throttled and memory-bounded.

    Every view that lets a visitor search by photo calls this, not the recommend function.

    Raises:
        Throttled: over the rate (nothing decoded).
        Busy: no decode slot within ``SEARCH_QUEUE_SECONDS``.
        django.core.exceptions.ValidationError: not an acceptable photo, or too big to decode.
        LookupError: nothing is indexed yet.
    """
    from imgrec_app.services import recommend

    take_search_slot(client_ident(request))
    check_decode_budget(file)
    sem = _semaphore()
    if not sem.acquire(timeout=float(imgrec_settings.SEARCH_QUEUE_SECONDS)):
        raise Busy("Search is busy; try again in a few seconds.")
    try:
        return recommend.search_by_photo(file, limit=limit)
    finally:
        sem.release()
