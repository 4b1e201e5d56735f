"""Fixtures of the uuidshop session: the shop's Celery app for the real worker, and a catalogue of
real demo photos that exists before imgrec is configured (then backfilled as the README says)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

SETTINGS_MODULE = "tests.integration.uuidshop.settings"
DATA_DIR = Path(__file__).resolve().parents[3] / "shop_demo" / "catalog" / "data"

# pytest-django takes one settings module per session: elsewhere these tests are not collected.
if os.environ.get("DJANGO_SETTINGS_MODULE") != SETTINGS_MODULE:
    collect_ignore_glob = ["test_*.py"]

KINDS = ("fruit", "musical-instruments", "vehicles")
PER_KIND = 4


@pytest.fixture(scope="session")
def celery_app_real() -> Any:
    """The shop's Celery app (replaces tests/conftest.py's demo one) on the test Redis."""
    from tests.integration.uuidshop.celery_app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, timeout=2)
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {app.conf.broker_url}: {exc}. Run `make redis`.")
    return app


@dataclass
class Shop:
    """Products by slug, the kind of each (by pk), and what the backfill printed."""

    products: dict[str, Any] = field(default_factory=dict)
    kind_of: dict[str, str] = field(default_factory=dict)
    backfill_output: str = ""


def build_catalogue() -> Shop:
    """Products with photos on the shop's ProductImage, made while imgrec's IMAGE_SOURCES is
    empty: the photos exist before imgrec is installed.  Each product is in its kind's category;
    the first fruit and the first vehicle are also in "sale" (several categories per product); one
    more fruit is unpublished (never on a shelf)."""
    from django.core.files import File
    from django.test import override_settings

    from tests.integration.uuidshop.shop.models import Category, Product, ProductImage

    data = json.loads((DATA_DIR / "catalogue.json").read_text())
    shop = Shop()
    sale = Category.objects.create(slug="sale", name="Sale")
    with override_settings(IMGREC={**settings.IMGREC, "IMAGE_SOURCES": []}):
        for kind in KINDS:
            category = Category.objects.create(slug=kind, name=kind.title())
            entries = [e for e in data if e["category"] == kind][: PER_KIND + (kind == "fruit")]
            for index, entry in enumerate(entries):
                product = Product.objects.create(
                    name=entry["name"], description=entry["description"], published=index < PER_KIND
                )
                product.categories.add(category)
                if index == 0 and kind in ("fruit", "vehicles"):
                    product.categories.add(sale)
                with open(DATA_DIR / entry["image"], "rb") as fh:
                    ProductImage.objects.create(product=product, original=File(fh, name=Path(entry["image"]).name))
                shop.products[entry["slug"]] = product
                shop.kind_of[str(product.pk)] = kind
    return shop


@pytest.fixture(scope="module")
def indexed_shop(django_db_setup: Any, django_db_blocker: Any, _session_worker: Any) -> Iterator[Shop]:
    """The catalogue, committed and backfilled by ``imgrec_reindex --missing --wait`` with a real
    worker once per module; tests read it inside their own rolled-back transactions."""
    with django_db_blocker.unblock():
        _flush()
        try:
            shop = build_catalogue()
            out = io.StringIO()
            call_command("imgrec_reindex", "--missing", "--wait", "--timeout", "240", stdout=out, verbosity=0)
            shop.backfill_output = out.getvalue()
        except BaseException:
            _flush()
            raise
    yield shop
    with django_db_blocker.unblock():
        _flush()


def _flush() -> None:
    from django.contrib.contenttypes.models import ContentType

    call_command("flush", interactive=False, verbosity=0)
    ContentType.objects.clear_cache()
