"""Simulated shoppers browsing a shop through real requests, to feed the measured shelves and their
A/B tests (the demo runs it; see ``manage.py imgrec_simulate_shoppers``).

The shoppers are the evaluation's (:func:`imgrec_app.services.evaluation.simulate_shoppers`: each
prefers one or two categories, with a long-tailed taste within them).  Each one is a
:class:`django.test.Client` of its own (its own session, so its own visitor id and experiment
variant) that opens product pages of the shop, reads the shelves in the HTML imgrec rendered
(every rendered shelf is an impression), clicks a shelf link the way a shopper with those tastes
might (more likely for a product of a preferred category, less further along the shelf), and adds
clicked products to the cart / buys them through imgrec's events API.  Nothing is written
directly: impressions, clicks and attributed conversions are recorded by imgrec's own code on
those requests.  So a variant whose shelves show more of what the shopper likes gets more clicks.

Only for demos and staging copies: the visitors are fake and their browsing becomes history.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from django.db.models import F
from django.urls import NoReverseMatch, reverse

USER_AGENT = "Mozilla/5.0 (imgrec simulated shopper)"


class SimulationError(RuntimeError):
    """The shop cannot be browsed by simulated shoppers (nothing indexed, no API mounted...)."""


@dataclass(frozen=True)
class Behaviour:
    """How a simulated shopper reacts to a shelf.

    A shelf's items are looked at in order; the item at position ``i`` (1-based) is clicked with
    probability ``click * decay**(i-1)``, where ``click`` is ``click_preferred`` for a product of
    one of the shopper's categories and ``click_other`` otherwise; at most one click per page.
    A clicked product is added to the cart with ``cart_preferred`` / ``cart_other`` and a cart
    is bought with ``purchase``.
    """

    click_preferred: float = 0.35
    click_other: float = 0.03
    decay: float = 0.85
    cart_preferred: float = 0.35
    cart_other: float = 0.05
    purchase: float = 0.5


@dataclass(frozen=True)
class ShelfLink:
    """One item link of a rendered shelf."""

    shelf: str
    position: int
    product_id: str
    href: str


@dataclass
class SimulationResult:
    """What the simulated visitors did (the requests' outcome, as counted by this module)."""

    visitors: int = 0
    pages: int = 0
    shelves_seen: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    seconds: float = 0.0
    by_shelf: dict[str, int] = field(default_factory=dict)


class _ShelfParser(HTMLParser):
    """Collects the item links of imgrec's shelves (``section.imgrec-shelf--<kind>`` > li > a)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[ShelfLink] = []
        self.shelves = 0
        self._shelf: str | None = None
        self._position = 0
        self._product: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "section" and "imgrec-shelf" in classes:
            kinds = [c.removeprefix("imgrec-shelf--") for c in classes if c.startswith("imgrec-shelf--")]
            self._shelf, self._position = (kinds[0] if kinds else "shelf"), 0
            self.shelves += 1
        elif self._shelf and tag == "li" and a.get("data-product-id"):
            self._product = a["data-product-id"]
            self._position += 1
        elif self._shelf and self._product and tag == "a" and a.get("href"):
            self.links.append(ShelfLink(self._shelf, self._position, self._product, str(a["href"])))
            self._product = None  # one link per item (the card's)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._shelf = None


def shelf_links(html: str) -> tuple[int, list[ShelfLink]]:
    """``(number of shelves, their item links in page order)`` of a rendered page."""
    parser = _ShelfParser()
    parser.feed(html)
    return parser.shelves, parser.links


def choose_click(
    links: list[ShelfLink],
    preferred: set[str | None],
    category: dict[str, str | None],
    behaviour: Behaviour,
    rng: random.Random,
    *,
    visited: frozenset[str] | set[str] = frozenset(),
) -> ShelfLink | None:
    """The link this shopper clicks on a page, or None (see :class:`Behaviour`); products already
    opened in this visit are passed over."""
    for link in links:
        if link.product_id in visited:
            continue
        base = behaviour.click_preferred if category.get(link.product_id) in preferred else behaviour.click_other
        if rng.random() < base * behaviour.decay ** (link.position - 1):
            return link
    return None


class _Shopper:
    """One simulated visitor: a test client with its own session, cookies and experiment variant."""

    def __init__(self, events_url: str) -> None:
        from django.conf import settings
        from django.test import Client

        # A host the shop accepts; CSRF checked as for a browser (the events API gets the token
        # from the page's cookie).
        host = next((h for h in settings.ALLOWED_HOSTS if h and h != "*" and not h.startswith(".")), "testserver")
        self.client = Client(enforce_csrf_checks=True, HTTP_USER_AGENT=USER_AGENT, HTTP_HOST=host)
        self.events_url = events_url

    def open(self, url: str) -> str:
        response = self.client.get(url)
        if response.status_code != 200:
            raise SimulationError(f"GET {url} answered {response.status_code}")
        return response.content.decode()

    def event(self, product_id: str, kind: str) -> None:
        token = self.client.cookies.get("csrftoken")
        if token is None:
            raise SimulationError("The product page set no CSRF cookie: the shopper cannot post events.")
        response = self.client.post(
            self.events_url, {"product_id": product_id, "kind": kind}, HTTP_X_CSRFTOKEN=token.value
        )
        if response.status_code not in (201, 204):
            raise SimulationError(f"POST {self.events_url} ({kind}) answered {response.status_code}")

    def visitor_id(self) -> Any:
        from imgrec_app.services.history import VISITOR_SESSION_KEY

        return self.client.session.get(VISITOR_SESSION_KEY)


def _backdate(visitor: Any, offset: dt.timedelta) -> None:
    """Move one simulated visitor's rows back in time by ``offset`` (all of them alike, so each
    click stays inside its impression's attribution window)."""
    from imgrec_app.models import Interaction, ShelfClick, ShelfConversion, ShelfImpression

    if not visitor or not offset:
        return
    moved = F("created_at") - offset
    Interaction.objects.filter(visitor_id=visitor).update(created_at=moved)
    ShelfConversion.objects.filter(click__impression__visitor_id=visitor).update(created_at=moved)
    ShelfClick.objects.filter(impression__visitor_id=visitor).update(created_at=moved)
    ShelfImpression.objects.filter(visitor_id=visitor).update(created_at=moved)


def _product_urls(ids: set[str]) -> dict[str, str]:
    from imgrec_app.hosts import get_product_model, product_key

    products = get_product_model()._default_manager.filter(pk__in=list(ids))
    return {product_key(p): p.get_absolute_url() for p in products if hasattr(p, "get_absolute_url")}


def simulate(
    *,
    visitors: int,
    pages: int = 8,
    days: int = 7,
    seed: int = 0,
    behaviour: Behaviour | None = None,
    progress: Callable[[int, SimulationResult], None] | None = None,
) -> SimulationResult:
    """Let ``visitors`` simulated shoppers browse the shop, ``pages`` product pages each.

    Args:
        visitors: how many shoppers.
        pages: product pages each opens (their browsing list, or the product a shelf click led to).
        days: spread the visitors over the last ``days`` days (each visitor's rows are moved back
            by a random whole number of days, so the report's plot has a time axis); 0: now.
        seed: seed of every random choice (who likes what, what is clicked).
        behaviour: click/cart/purchase probabilities.
        progress: called after each visitor with its number and the running totals.

    Raises:
        SimulationError: when the catalogue cannot be evaluated (nothing indexed, no categories)
            or the shop does not answer as expected (a page that is not a 200, no events API).
    """
    from imgrec_app.services import evaluation

    behaviour = behaviour or Behaviour()
    rng = random.Random(seed)
    try:
        catalogue = evaluation.load_catalogue()
    except evaluation.EvaluationError as exc:
        raise SimulationError(str(exc)) from exc
    try:
        events_url = reverse("imgrec_api:events")
    except NoReverseMatch as exc:
        raise SimulationError("imgrec's API is not mounted (imgrec_app.api.urls): carts are posted to it.") from exc
    sessions = evaluation.simulate_shoppers(catalogue, count=visitors, events=pages, rng=rng)
    urls = _product_urls({p for _, browsed in sessions for p in browsed})
    result = SimulationResult()
    started = time.perf_counter()
    for number, (preferred, browsed) in enumerate(sessions, start=1):
        shopper = _Shopper(events_url)
        planned = [(p, urls[p]) for p in browsed if p in urls]
        _browse(shopper, planned, set(preferred), catalogue.category, behaviour, rng, result)
        if days > 0:
            _backdate(shopper.visitor_id(), dt.timedelta(days=rng.randrange(days), seconds=rng.randrange(86_400)))
        result.visitors += 1
        if progress is not None:
            progress(number, result)
    result.seconds = time.perf_counter() - started
    return result


def _browse(
    shopper: _Shopper,
    planned: list[tuple[str, str]],
    preferred: set[str | None],
    category: dict[str, str | None],
    behaviour: Behaviour,
    rng: random.Random,
    result: SimulationResult,
) -> None:
    """One visit of at most ``len(planned)`` pages: the planned pages in order, except that a
    shelf click opens the clicked product (through its signed link) as the next page."""
    if not planned:
        return
    queue = list(planned)
    visited: set[str] = set()

    def visit(product_id: str, url: str) -> list[ShelfLink]:
        visited.add(product_id)
        shelves, links = shelf_links(shopper.open(url))
        result.pages += 1
        result.shelves_seen += shelves
        return links

    links = visit(*queue.pop(0))
    for _ in range(len(planned) - 1):
        link = choose_click(links, preferred, category, behaviour, rng, visited=visited)
        if link is not None:
            links = visit(link.product_id, link.href)  # the click: imgrec records it on this request
            result.clicks += 1
            result.by_shelf[link.shelf] = result.by_shelf.get(link.shelf, 0) + 1
            liked = category.get(link.product_id) in preferred
            if rng.random() < (behaviour.cart_preferred if liked else behaviour.cart_other):
                shopper.event(link.product_id, "cart")
                result.carts += 1
                if rng.random() < behaviour.purchase:
                    shopper.event(link.product_id, "purchase")
                    result.purchases += 1
        elif queue:
            links = visit(*queue.pop(0))
        else:
            return
