"""Fixtures of the Oscar integration session: the shop's Celery app for the real worker, and a
small Oscar catalogue of real demo photos made with Oscar's own test factories.

The worker fixtures (``celery_worker``) come from ``tests/conftest.py``; this file only swaps in
the Oscar shop's Celery app, so nothing from shop_demo is imported.  The parts every host-shop
suite shares are in ``tests/integration/_base.py``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command

from tests.integration._base import (
    DATA_DIR,
    celery_app_fixture,
    collect_only_under,
    indexed_shop_fixture,
)

collect_ignore_glob = collect_only_under("tests.integration.oscar.settings")

# Three kinds of real catalogue photos; the first entries of a kind look alike (apples, guitars,
# cars), so the nearest neighbours of a product are mostly its own kind.
KINDS = {"fruit": "Fruit", "musical-instruments": "Music", "vehicles": "Vehicles"}
PER_KIND = 6
# Fruit entries 1-3 are apples like entry 0: the best neighbours of "Red Apple", made unsellable
# in three ways Oscar knows.  They must never reach a shelf.
UNSELLABLE = {1: "not public", 2: "out of stock", 3: "all stock allocated"}


def _oscar_app() -> Any:
    from tests.integration.oscar.celery_app import app

    return app


celery_app_real = celery_app_fixture(_oscar_app)


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


def _build_and_backfill() -> IndexedShop:
    catalogue = build_catalogue()
    files_before = media_files()
    output = backfill()
    return IndexedShop(catalogue, output, files_before, media_files())


# The Oscar catalogue, committed and indexed by ``imgrec_reindex --missing --wait`` with a real
# worker once per module.
indexed_shop = indexed_shop_fixture(_build_and_backfill)
