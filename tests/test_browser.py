"""The demo shop in a real browser (headless Chromium): shelves with loaded images, "recommended
for you" following a visitor's browsing, history merged at login, search by photo, and the admin's
index status page with a re-index followed live.

A real catalogue (public-domain images of five categories) is seeded with ``seed_demo --images``
and indexed by a real Celery worker; ``live_server`` serves the pages.  Set
``IMGREC_SCREENSHOTS=1`` to refresh docs/screenshots/ (product-page.png, search-results.png,
shopper-controls.png, admin-status.png, catalogue-health.png).  The pages run with the demo's
queue names (``DEMO_QUEUES``, which the test worker consumes too), so the admin's status page
shows what a shop shows.  Skips only where Chromium or chromedriver cannot be found
(``scripts/install-browser`` installs Debian's).
"""

from __future__ import annotations

import io
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    ConsoleWatch,
    find_chromium,
    horizontal_overflow,
    loaded_images,
    path_of,
    provoke_csp_violation,
    save_screenshot,
    shelf_layout,
    start_chromium,
    wait_until,
)
from tests.conftest import CATALOGUE_DIR, DEMO_QUEUES, wait_for

pytestmark = [pytest.mark.worker]

BY_CSS = "css selector"
FOCUS = "fruit"
# Category -> how many of its catalogue images are seeded.  More fruit, so that fruit shelves can
# still be all fruit after the visitor has seen four of them.
SEEDED = {
    FOCUS: 14,
    "musical-instruments": 7,
    "vehicles": 7,
    "computer-hardware": 7,
    "clothing-accessories": 7,
}
VIEWED = 4
PASSWORD = "browse-demo-42"
STATUS_PATH = "/admin/imgrec_app/indexedimage/status/"
HEALTH_PATH = "/admin/imgrec_app/indexedimage/health/"
BECAUSE = "Because you viewed "

_CHROMIUM = find_chromium()


@pytest.fixture
def browser() -> Iterator[Any]:
    if _CHROMIUM is None:
        pytest.skip(
            "Chromium or chromedriver not found on PATH: run scripts/install-browser "
            "(Debian: apt-get install chromium chromium-driver) to run the browser test."
        )
    session = start_chromium(*_CHROMIUM)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture
def demo_queues(settings: Any) -> dict[str, str]:
    """The demo's queue names for the whole story (tasks, status page), not the test suite's."""
    settings.IMGREC = {**settings.IMGREC, "QUEUES": DEMO_QUEUES}
    return DEMO_QUEUES


@pytest.fixture
def catalogue(celery_worker: Any, demo_queues: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A small real shop: catalogue images of five categories, seeded with ``seed_demo --images``
    and indexed (image and text vectors) by the real worker.  Returns product slug -> category."""
    from django.core.management import call_command

    from imgrec_app.models import IndexedImage
    from imgrec_app.services import text
    from shop_demo.catalog.models import Product

    for category, count in SEEDED.items():
        (tmp_path / category).mkdir()
        for image in sorted((CATALOGUE_DIR / "images" / category).glob("*.png"))[:count]:
            shutil.copy(image, tmp_path / category / image.name)
    call_command("seed_demo", images=tmp_path, stdout=io.StringIO(), verbosity=0)
    assert Product.objects.count() == sum(SEEDED.values())
    busy = ["pending", "processing"]
    wait_for(lambda: not IndexedImage.objects.filter(status__in=busy).exists(), timeout=300)
    assert set(IndexedImage.objects.values_list("status", flat=True)) == {"ready"}
    # The text model loads on the first text task: over 2 min on a busy 2-core machine (2026-12-02).
    wait_for(lambda: not text.missing_text_ids(), timeout=300)
    return dict(Product.objects.values_list("slug", "category__slug"))


# --- page helpers ---------------------------------------------------------------------------------


def _slug(href: str) -> str:
    match = re.fullmatch(r"/p/([^/]+)/", path_of(href))
    assert match, f"not a product link: {href}"
    return match.group(1)


def _shelf(browser: Any, kind: str) -> list[dict[str, str]]:
    """The items of a shelf on the current page: product slug, name and reason."""
    return [
        {
            "slug": _slug(li.find_element(BY_CSS, "a").get_attribute("href")),
            "name": li.find_element(BY_CSS, ".imgrec-shelf__name").text,
            "reason": li.find_element(BY_CSS, ".imgrec-shelf__reason").text,
        }
        for li in browser.find_elements(BY_CSS, f".imgrec-shelf--{kind} .imgrec-shelf__item")
    ]


def _share(items: list[dict[str, str]], kinds: dict[str, str], category: str) -> float:
    return sum(kinds[i["slug"]] == category for i in items) / len(items) if items else 0.0


def _assert_images_loaded(browser: Any, selector: str) -> None:
    images = loaded_images(browser, selector)
    assert images, f"no images match {selector!r}"
    broken = [src for width, src in images if width == 0]
    assert not broken, f"broken images: {broken}"


def _assert_one_row_of_cards(browser: Any, kind: str, count: int) -> None:
    """imgrec's default stylesheet, linked once: the shelf's cards side by side on one row at a
    desktop width (no scrolling needed), images fitted into square boxes, not stretched."""
    links = browser.find_elements(BY_CSS, 'link[rel=stylesheet][href$="imgrec_app/shelf.css"]')
    assert len(links) == 1, [link.get_attribute("href") for link in links]
    layout = shelf_layout(browser, f".imgrec-shelf--{kind} .imgrec-shelf__item")
    boxes = layout["boxes"]
    assert len(boxes) == count, layout
    tops = {round(top) for _, top, _, _ in boxes}
    assert len(tops) == 1, f"the cards are not on one row: {boxes}"
    for (left, _, width, _), (next_left, _, _, _) in zip(boxes, boxes[1:]):
        assert next_left >= left + width, f"cards overlap or are out of order: {boxes}"
    assert 120 <= boxes[0][2] <= 220, f"card width {boxes[0][2]} px"
    scroll_width, client_width = layout["scroll"]
    assert scroll_width <= client_width, "the row should fit a desktop-wide page without scrolling"
    for fit, width, height, natural_w, natural_h in layout["images"]:
        assert fit == "contain" and abs(width - height) <= 1, layout["images"]
        assert natural_w and natural_h  # loaded; contain keeps their own proportions in the box


def _wait_loaded(browser: Any, path: str) -> None:
    wait_until(lambda: path_of(browser.current_url) == path, what=f"the page {path}")
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete",
        what=f"{path} to finish loading",
    )


def _wait_lazy_shelves(browser: Any) -> None:
    """Lazy shelves (``imgrec_lazy_shelf``) are filled by imgrec's static script after the load."""
    script = "return Array.from(document.querySelectorAll('.imgrec-lazy')).map(e => e.dataset.imgrecState || '')"
    states = wait_until(
        lambda: (lambda s: s if s and all(x in ("loaded", "failed") for x in s) else None)(
            browser.execute_script(script)
        ),
        what="the lazy shelves to load",
    )
    assert set(states) == {"loaded"}, states


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    _wait_loaded(browser, path_of(url))


def _log_in(browser: Any, login_url: str, username: str, submit: str, then: str) -> None:
    _open(browser, login_url)
    browser.find_element(BY_CSS, "#id_username").send_keys(username)
    browser.find_element(BY_CSS, "#id_password").send_keys(PASSWORD)
    browser.find_element(BY_CSS, submit).click()
    _wait_loaded(browser, then)


# --- the story ------------------------------------------------------------------------------------


def _browse_fruit(browser: Any, base: str, catalogue: dict[str, str]) -> list[str]:
    """Steps 1-2: a fruit page's similar shelf, then click through fruit from that shelf until
    "Recommended for you" follows the browsing.  Returns the viewed slugs."""
    from imgrec_app.models import Interaction
    from shop_demo.catalog.models import Product

    first = Product.objects.filter(category__slug=FOCUS, stock__gt=0).order_by("slug").first()
    _open(browser, base + first.get_absolute_url())
    assert browser.find_element(BY_CSS, ".product h1").text == first.name
    _assert_images_loaded(browser, ".product img")
    similar = _shelf(browser, "similar")
    assert len(similar) == 8, similar
    _assert_images_loaded(browser, ".imgrec-shelf--similar img")
    _assert_one_row_of_cards(browser, "similar", 8)
    assert first.slug not in {i["slug"] for i in similar}
    assert catalogue[similar[0]["slug"]] == FOCUS, similar
    assert _share(similar, catalogue, FOCUS) >= 0.75, similar
    assert horizontal_overflow(browser, 390) == 0, "the product page must fit a phone's width"

    viewed = [first.slug]
    while len(viewed) < VIEWED:
        slug = next(
            i["slug"] for i in _shelf(browser, "similar") if catalogue[i["slug"]] == FOCUS and i["slug"] not in viewed
        )
        link = browser.find_element(BY_CSS, f'.imgrec-shelf--similar a[href*="/p/{slug}/"]')
        browser.execute_script("arguments[0].scrollIntoView()", link)
        link.click()
        _wait_loaded(browser, f"/p/{slug}/")
        viewed.append(slug)

    for_you = _shelf(browser, "for_you")
    assert len(for_you) == 8, for_you
    _assert_images_loaded(browser, ".imgrec-shelf--for_you img")
    assert not {i["slug"] for i in for_you} & set(viewed), "seen products are not recommended"
    # On a product page the personal shelf never repeats the similar shelf (issue 11 §3), so with
    # 14 fruit, 4 seen and most of the rest on the similar shelf, it shows the fruit that is left.
    similar_now = {i["slug"] for i in _shelf(browser, "similar")}
    assert not {i["slug"] for i in for_you} & similar_now, (for_you, similar_now)
    fruit_left = sum(1 for s, c in catalogue.items() if c == FOCUS and s not in viewed and s not in similar_now)
    # Measured 2026-12-02: 3 of the 5 fruit left (the other slots go to look-alikes such as a top
    # hat "because you viewed Banana"; issue 11 §3 keeps this open).  At least half must show.
    assert 2 * sum(catalogue[i["slug"]] == FOCUS for i in for_you) >= min(fruit_left, 8), for_you
    because = [i["reason"][len(BECAUSE) :] for i in for_you if i["reason"].startswith(BECAUSE)]
    assert len(because) >= 4, for_you
    viewed_names = Product.objects.filter(slug__in=viewed).values_list("name", flat=True)
    assert set(because) <= set(viewed_names), (because, viewed_names)
    assert Interaction.objects.filter(user__isnull=True, kind="view").count() == VIEWED
    return viewed


def _log_in_and_check_merge(browser: Any, base: str, catalogue: dict[str, str], viewed: list[str]) -> None:
    """Step 3: log in; the anonymous history is now the user's and still drives the shelves."""
    from django.contrib.auth import get_user_model

    from imgrec_app.models import Interaction

    user = get_user_model().objects.create_user("carol", password=PASSWORD)
    submit = "main form button[type=submit]"
    _log_in(browser, base + "/accounts/login/?next=/", "carol", submit, "/")
    _wait_lazy_shelves(browser)
    assert browser.find_element(BY_CSS, ".who").text == "Hi, carol"
    assert Interaction.objects.filter(user=user, kind="view").count() == VIEWED
    assert not Interaction.objects.filter(user__isnull=True).exists()
    recent = [_slug(a.get_attribute("href")) for a in browser.find_elements(BY_CSS, ".strip a")]
    assert recent == viewed[::-1]
    _assert_images_loaded(browser, ".strip img")
    for_you = _shelf(browser, "for_you")
    assert _share(for_you, catalogue, FOCUS) >= 0.6, for_you
    assert all(i["reason"].startswith(BECAUSE) for i in for_you[:4]), for_you


def _search_by_photo(browser: Any, base: str, catalogue: dict[str, str]) -> None:
    """Step 4: a fruit picture the shop does not sell finds fruit."""
    photo = sorted((CATALOGUE_DIR / "images" / FOCUS).glob("*.png"))[SEEDED[FOCUS] + 2]
    _open(browser, base + "/search/photo/")
    browser.find_element(BY_CSS, "input[type=file]").send_keys(str(photo))
    browser.find_element(BY_CSS, "main form button[type=submit]").click()
    wait_until(lambda: browser.find_elements(BY_CSS, ".imgrec-shelf__item"), what="results")
    assert not browser.find_elements(BY_CSS, ".error")
    links = browser.find_elements(BY_CSS, ".imgrec-shelf__item > a")
    results = [_slug(a.get_attribute("href")) for a in links]
    assert len(results) >= 8, results
    _assert_images_loaded(browser, ".imgrec-shelf__item img")
    _assert_images_loaded(browser, ".query-photo img")  # the visitor's photo, shown back
    top = [catalogue[slug] for slug in results[:8]]
    assert top[0] == FOCUS and Counter(top)[FOCUS] >= 6, list(zip(results[:8], top, strict=True))


def _shopper_controls(browser: Any, base: str, viewed: list[str]) -> None:
    """Step 5: "Not interested" on a for-you item hides it in place (imgrec's static script, with
    an undo) and takes it off the visitor's shelves; the visitor's own page lists it with "Show
    again", and pausing personalisation (a plain form post) says what it does."""
    from imgrec_app.models import ShopperControl

    page = f"/p/{viewed[0]}/"
    _open(browser, base + page)
    item = browser.find_elements(BY_CSS, ".imgrec-shelf--for_you .imgrec-shelf__item")[0]
    dismissed = item.get_attribute("data-product-id")
    button = item.find_element(BY_CSS, ".imgrec-shelf__dismiss")
    browser.execute_script("arguments[0].scrollIntoView()", button)
    button.click()
    wait_until(lambda: "imgrec-shelf__item--dismissed" in item.get_attribute("class"), what="the item hidden in place")
    assert item.find_element(BY_CSS, ".imgrec-shelf__undo").is_displayed()
    assert path_of(browser.current_url) == page  # the script answered it: no page load
    mine = ShopperControl.objects.filter(user__username="carol", kind="not_interested")
    assert list(mine.values_list("object_id", flat=True)) == [dismissed]
    _open(browser, base + page)
    on_page = {li.get_attribute("data-product-id") for li in browser.find_elements(BY_CSS, ".imgrec-shelf__item")}
    assert on_page and dismissed not in on_page

    _open(browser, base + "/history/")
    controls = browser.find_element(BY_CSS, ".imgrec-controls")
    listed = controls.find_elements(BY_CSS, ".imgrec-controls__dismissed li")
    assert [li.get_attribute("data-product-id") for li in listed] == [dismissed]
    assert listed[0].find_element(BY_CSS, "button").text == "Show again"
    assert len(controls.find_elements(BY_CSS, ".imgrec-controls__recent li")) == VIEWED
    controls.find_element(BY_CSS, 'button[name=action][value="pause"]').click()
    _wait_loaded(browser, "/history/")
    state = wait_until(lambda: browser.find_elements(BY_CSS, ".imgrec-controls__state"), what="the paused state")
    assert state[0].text.startswith("Personalisation is paused"), state[0].text
    assert ShopperControl.objects.filter(user__username="carol", kind="paused").exists()
    buttons = [b.text for b in browser.find_elements(BY_CSS, ".imgrec-controls button")]
    assert buttons == ["Resume personalisation", "Clear my history", "Show again"], buttons
    save_screenshot(browser, "shopper-controls.png")


def _admin_status(browser: Any, base: str) -> None:
    """The index status page as a superuser: "Re-index all" (after its confirmation) runs on the
    worker while the page's progress bar follows it to the end."""
    from django.contrib.auth import get_user_model

    total = sum(SEEDED.values())
    get_user_model().objects.create_superuser("boss", "boss@example.com", PASSWORD)
    browser.delete_all_cookies()
    login = f"{base}/admin/login/?next={STATUS_PATH}"
    _log_in(browser, login, "boss", "#login-form [type=submit]", STATUS_PATH)
    assert f"ready {total}" in browser.find_element(BY_CSS, "#content-main").text
    browser.find_element(BY_CSS, 'button[name=scope][value="all"]').click()
    browser.switch_to.alert.accept()

    def finished() -> str | None:  # the POST redirects back here, then the script polls
        found = browser.find_elements(BY_CSS, "#imgrec-text")
        return found[0].text if found and "finished" in found[0].text else None

    progress = wait_until(finished, timeout=180, what="the re-index run to finish on the page")
    assert progress.startswith(f"{total} ready, 0 failed, 0 left of {total}"), progress
    assert browser.find_element(BY_CSS, "#imgrec-bar").get_attribute("value") == str(total)
    _open(browser, base + STATUS_PATH)
    content = browser.find_element(BY_CSS, "#content-main").text
    assert f"ready {total}" in content and "Latest run #" in content, content
    # The shop's own queue names, each reachable and drained (a depth, not "unreachable").
    queues = browser.find_elements(BY_CSS, "#imgrec-queues tr")
    assert {row.find_element(BY_CSS, "th").text: row.find_element(BY_CSS, "td").text for row in queues} == {
        name: "0" for name in DEMO_QUEUES.values()
    }


def _catalogue_health(browser: Any, base: str) -> None:
    """Step 7: a second listing of a fruit (a copy of its photo, indexed by the worker) and a
    product without a photo, added now, are findings of the catalogue health page, linked to
    their products' admin pages."""
    from django.core.files.base import ContentFile

    from imgrec_app.models import IndexedImage
    from shop_demo.catalog.models import Product

    original = Product.objects.filter(category__slug=FOCUS).order_by("slug").first()
    with original.photo.open("rb") as fh:
        photo = ContentFile(fh.read(), name="second-listing.png")
    copy = Product.objects.create(
        slug=f"{original.slug}-again",
        name=f"{original.name} (second listing)",
        price=original.price,
        stock=3,
        category=original.category,
        photo=photo,
    )
    bare = Product.objects.create(slug="gift-card", name="Gift card", price=10, stock=50, category=original.category)
    wait_for(lambda: IndexedImage.objects.filter(object_id=str(copy.pk), status="ready").exists(), timeout=120)

    _open(browser, base + HEALTH_PATH)
    assert browser.find_element(BY_CSS, "#content h1").text == "Catalogue health"

    def rows(key: str) -> list[str]:
        return [tr.text for tr in browser.find_elements(BY_CSS, f'table[data-section="{key}"] tr')]

    duplicates = rows("duplicate_listings")
    assert any(original.name in row and copy.name in row for row in duplicates), duplicates
    assert any(bare.name in row for row in rows("no_image")), rows("no_image")
    link = browser.find_element(BY_CSS, f'table[data-section="no_image"] a[href$="/catalog/product/{bare.pk}/change/"]')
    assert link.text == bare.name
    save_screenshot(browser, "catalogue-health.png")


def test_shop_in_a_browser(browser: Any, live_server: Any, catalogue: dict[str, str]) -> None:
    """The whole story runs under the demo's strict Content-Security-Policy (shop_demo/csp.py: no
    inline scripts or styles); the browser must not report a single violation."""
    base = live_server.url
    console = ConsoleWatch(browser)

    # A new visitor: the shop's listing; the for-you shelf is only a labelled fallback.
    _open(browser, base + "/")
    _wait_lazy_shelves(browser)
    provoke_csp_violation(browser)  # the policy is on, and its violations reach the console
    wait_until(console.csp_violations, what="the provoked CSP violation in the console")
    console.forget()
    assert len(browser.find_elements(BY_CSS, ".grid .card")) == 24  # first page of the listing
    fallback = _shelf(browser, "for_you")
    assert fallback and not [i for i in fallback if i["reason"].startswith(BECAUSE)], fallback
    assert not browser.find_elements(BY_CSS, ".strip")

    viewed = _browse_fruit(browser, base, catalogue)
    save_screenshot(browser, "product-page.png")
    _log_in_and_check_merge(browser, base, catalogue, viewed)
    _search_by_photo(browser, base, catalogue)
    save_screenshot(browser, "search-results.png")
    _shopper_controls(browser, base, viewed)
    _admin_status(browser, base)
    save_screenshot(browser, "admin-status.png")
    _catalogue_health(browser, base)
    assert console.csp_violations() == []
