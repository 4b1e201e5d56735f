"""Fixtures of the Oscar integration session: the shop's Celery app for the real worker, and a
small Oscar catalogue of real demo photos made with Oscar's own test factories.

The worker fixtures (``celery_worker``) come from ``tests/conftest.py``; this file only swaps in
the Oscar shop's Celery app, so nothing from shop_demo is imported.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

SETTINGS_MODULE = "tests.integration.oscar.settings"
DATA_DIR = Path(__file__).resolve().parents[3] / "shop_demo" / "catalog" / "data"

# pytest-django takes one settings module per session: in a session with other settings (the
# main suite) these tests cannot run, so they are not collected there.
if os.environ.get("DJANGO_SETTINGS_MODULE") != SETTINGS_MODULE:
    collect_ignore_glob = ["test_*.py"]

# Three kinds of real catalogue photos; the first entries of a kind look alike (apples, guitars,
# cars), so the nearest neighbours of a product are mostly its own kind.
KINDS = {"fruit": "Fruit", "musical-instruments": "Music", "vehicles": "Vehicles"}
PER_KIND = 6
# Fruit entries 1-3 are apples like entry 0: the best neighbours of "Red Apple", made unsellable
# in three ways Oscar knows.  They must never reach a shelf.
UNSELLABLE = {1: "not public", 2: "out of stock", 3: "all stock allocated"}


@pytest.fixture(scope="session")
def celery_app_real() -> Any:
    """The Oscar shop's Celery app (replaces tests/conftest.py's demo one) on the test Redis."""
    from tests.integration.oscar.celery_app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, timeout=2)
    except Exception as exc:  # any reason: there is no usable broker
        pytest.fail(f"Redis is not reachable at {app.conf.broker_url}: {exc}. Run `make redis`.")
    return app


@dataclass
class Catalogue:
    """An Oscar catalogue: products by catalogue slug, the kind of each (by pk), and why the
    unsellable ones are (by pk)."""

    products: dict[str, Any] = field(default_factory=dict)
    kind_of: dict[int, str] = field(default_factory=dict)
    unsellable: dict[int, str] = field(default_factory=dict)


def _entries() -> dict[str, list[dict[str, Any]]]:
    data = json.loads((DATA_DIR / "catalogue.json").read_text())
    return {kind: [e for e in data if e["category"] == kind] for kind in KINDS}


def add_oscar_image(product: Any, image_path: Path) -> Any:
    """Attach a photo the way an Oscar shop's tests do: Oscar's ProductImageFactory."""
    from oscar.test.factories import ProductImageFactory

    return ProductImageFactory(product=product, original__from_path=str(image_path), display_order=0)


def create_oscar_product(entry: dict[str, Any], category: Any, *, num_in_stock: int = 20, **kwargs: Any) -> Any:
    """An Oscar product with a stock record and a category, made with Oscar's own helpers."""
    from oscar.test.factories import ProductCategoryFactory, create_product

    product = create_product(
        title=entry["name"],
        description=entry["description"],
        product_class="Goods",
        partner_name="Frobshop",
        price=Decimal(entry["price"]),
        num_in_stock=num_in_stock,
        **kwargs,
    )
    ProductCategoryFactory(product=product, category=category)
    add_oscar_image(product, DATA_DIR / entry["image"])
    return product


def build_catalogue() -> Catalogue:
    """Oscar products and images that exist before imgrec is configured: imgrec's image sources
    are empty while they are created, so imgrec sees none of them."""
    from django.test import override_settings
    from oscar.apps.catalogue.categories import create_from_breadcrumbs

    from imgrec_app.models import IndexedImage

    catalogue = Catalogue()
    with override_settings(IMGREC={**settings.IMGREC, "IMAGE_SOURCES": []}):
        for kind, entries in _entries().items():
            category = create_from_breadcrumbs(KINDS[kind])
            count = PER_KIND + (len(UNSELLABLE) if kind == "fruit" else 0)
            for index, entry in enumerate(entries[:count]):
                why = UNSELLABLE.get(index) if kind == "fruit" else None
                product = create_oscar_product(
                    entry,
                    category,
                    num_in_stock=0 if why == "out of stock" else 20,
                    is_public=why != "not public",
                )
                if why == "all stock allocated":
                    product.stockrecords.update(num_allocated=20)
                catalogue.products[entry["slug"]] = product
                catalogue.kind_of[product.pk] = kind
                if why:
                    catalogue.unsellable[product.pk] = why
    assert not IndexedImage.objects.exists()
    return catalogue


def backfill() -> str:
    """What an Oscar shop runs once after installing imgrec; returns the command's output."""
    out = io.StringIO()
    call_command("imgrec_reindex", "--missing", "--wait", "--timeout", "180", stdout=out, verbosity=0)
    return out.getvalue()


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@dataclass
class IndexedShop:
    """The catalogue after the backfill, what the backfill printed, and the media files that
    existed just before and just after it ran."""

    catalogue: Catalogue
    backfill_output: str
    files_before: set[str]
    files_after: set[str]


@pytest.fixture(scope="module")
def indexed_shop(django_db_setup: Any, django_db_blocker: Any, _session_worker: Any) -> Iterator[IndexedShop]:
    """The Oscar catalogue, committed and indexed by ``imgrec_reindex --missing --wait`` with a
    real worker once per module; tests read it inside their own rolled-back transactions."""
    with django_db_blocker.unblock():
        _flush()
        try:
            catalogue = build_catalogue()
            files_before = media_files()
            output = backfill()
            shop = IndexedShop(catalogue, output, files_before, media_files())
        except BaseException:
            _flush()
            raise
    yield shop
    with django_db_blocker.unblock():
        _flush()


def _flush() -> None:
    """Empty the test database, as a transactional test does after itself."""
    from django.contrib.contenttypes.models import ContentType

    call_command("flush", interactive=False, verbosity=0)
    ContentType.objects.clear_cache()
