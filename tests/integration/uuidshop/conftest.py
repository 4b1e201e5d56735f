"""Fixtures of the uuidshop session: the shop's Celery app for the real worker, and a catalogue of
real demo photos that exists before imgrec is configured (then backfilled as the README says).
The parts every host-shop suite shares are in ``tests/integration/_base.py``."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
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

collect_ignore_glob = collect_only_under("tests.integration.uuidshop.settings")

KINDS = ("fruit", "musical-instruments", "vehicles")
PER_KIND = 4


def _shop_app() -> Any:
    from tests.integration.uuidshop.celery_app import app

    return app


celery_app_real = celery_app_fixture(_shop_app)


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


def _build_and_backfill() -> Shop:
    shop = build_catalogue()
    out = io.StringIO()
    call_command("imgrec_reindex", "--missing", "--wait", "--timeout", "240", stdout=out, verbosity=0)
    shop.backfill_output = out.getvalue()
    return shop


# The catalogue, committed and backfilled by ``imgrec_reindex --missing --wait`` with a real
# worker once per module.
indexed_shop = indexed_shop_fixture(_build_and_backfill)
