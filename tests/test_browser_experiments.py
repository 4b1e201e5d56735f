"""The admin's "Shelf performance / experiments" page in a real browser (headless Chromium), after
simulated shoppers fed the demo's A/B test through real requests.

The catalogue is the browser test's (tests/test_browser.py: public-domain images of five
categories, indexed with image and text vectors by the real Celery worker).  The simulated
shoppers (imgrec_app.contrib.shopper_simulation) browse it under the demo's experiment
"similar-text-weight" (control: the default SIMILAR_WEIGHTS; "image-only": text weight 0); the
page must show both variants with their rates, intervals, the plot (a loaded PNG) and the CSV
link, under the demo's strict Content-Security-Policy.  ``IMGREC_SCREENSHOTS=1`` refreshes
docs/screenshots/admin-experiments.png.
"""

from __future__ import annotations

from typing import Any

import pytest

from shop_demo import settings as demo_settings
from tests.browser_support import ConsoleWatch, loaded_images, save_screenshot
from tests.test_browser import BY_CSS, PASSWORD, _log_in, browser, catalogue, demo_queues  # noqa: F401  (fixtures)

# The shoppers' requests are real page renders: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.worker, pytest.mark.timeout(1800)]

PAGE = "/admin/imgrec_app/indexedimage/experiments/"
EXPERIMENT = "similar-text-weight"


def test_experiments_page_in_a_browser(
    browser: Any,  # noqa: F811  (the fixture imported above)
    live_server: Any,
    catalogue: dict[str, str],  # noqa: F811
    settings: Any,
) -> None:
    from django.contrib.auth import get_user_model

    from imgrec_app.contrib import shopper_simulation
    from imgrec_app.models import ShelfClick, ShelfImpression

    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": demo_settings.IMGREC["EXPERIMENTS"]}
    result = shopper_simulation.simulate(visitors=14, pages=5, days=5, seed=4)
    assert result.clicks > 0
    variants = set(ShelfImpression.objects.filter(experiment=EXPERIMENT).values_list("variant", flat=True))
    assert variants == {"control", "image-only"}
    assert ShelfClick.objects.filter(impression__experiment=EXPERIMENT).exists()

    get_user_model().objects.create_superuser("analyst", "analyst@example.com", PASSWORD)
    console = ConsoleWatch(browser)
    base = live_server.url
    _log_in(browser, f"{base}/admin/login/?next={PAGE}", "analyst", "#login-form [type=submit]", PAGE)
    table = browser.find_element(BY_CSS, "#imgrec-experiments")
    totals = {
        row.get_attribute("data-variant"): row.text
        for row in table.find_elements(BY_CSS, "tr.imgrec-total-row")
        if row.get_attribute("data-shelf") == "similar" and row.get_attribute("data-experiment") == EXPERIMENT
    }
    assert set(totals) == {"control", "image-only"}, totals
    assert "(control)" in totals["control"] and "%" in totals["image-only"]
    assert "pts, p = " in totals["image-only"]  # compared with the control
    plots = [img for img in loaded_images(browser, "img.imgrec-experiment-plot") if "similar" in img[1]]
    assert plots and all(width > 0 for width, _ in plots), plots
    assert browser.find_elements(BY_CSS, "a.imgrec-experiments-csv")
    save_screenshot(browser, "admin-experiments.png", width=2000)  # the whole table
    assert console.csp_violations() == []
