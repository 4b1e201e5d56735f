"""``manage.py seed_demo``: load the demo catalogue, or import any folder tree of images."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils.text import slugify
from tqdm import tqdm

from shop_demo.catalog.models import Category, Product

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


class Command(BaseCommand):
    help = (
        "Load the bundled public-domain demo catalogue, or with --images DIR import a folder tree "
        "(each sub-folder a category, each image a product). Existing products are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--images", type=Path, default=None, help="A folder of category sub-folders of images.")
        parser.add_argument("--limit", type=int, default=None, help="Import at most this many products (default: all).")
        parser.add_argument("--per-category", type=int, default=None, help="At most this many products per category.")

    def handle(self, *args: Any, **options: Any) -> None:
        entries = self._folder(options["images"]) if options["images"] else self._catalogue()
        if options["per_category"]:
            seen: dict[str, int] = {}
            kept = []
            for e in entries:
                seen[e["category"]] = seen.get(e["category"], 0) + 1
                if seen[e["category"]] <= options["per_category"]:
                    kept.append(e)
            entries = kept
        if options["limit"]:
            entries = entries[: options["limit"]]
        categories = {c["slug"]: c for c in self._categories()}
        created = 0
        for entry in tqdm(entries, unit="product", disable=options["verbosity"] == 0):
            created += self._create(entry, categories)
        self.stdout.write(self.style.SUCCESS(f"Created {created} product(s); {Product.objects.count()} in the shop."))
        from django.core.management import call_command

        call_command("imgrec_status", stdout=self.stdout)

    def _catalogue(self) -> list[dict[str, Any]]:
        path = DATA_DIR / "catalogue.json"
        if not path.exists():
            raise CommandError(f"The demo catalogue is missing: {path}")
        entries = json.loads(path.read_text())
        for e in entries:
            e["image_path"] = DATA_DIR / e["image"]
        return entries

    def _categories(self) -> list[dict[str, Any]]:
        path = DATA_DIR / "categories.json"
        return json.loads(path.read_text()) if path.exists() else []

    def _folder(self, root: Path) -> list[dict[str, Any]]:
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder.")
        rng = random.Random(42)
        entries = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for image in sorted(folder.iterdir()):
                if image.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                name = image.stem.replace("_", " ").replace("-", " ").strip().title() or "Product"
                entries.append(
                    {
                        "slug": slugify(f"{folder.name}-{image.stem}")[:110],
                        "name": name,
                        "category": slugify(folder.name),
                        "category_name": folder.name.replace("_", " ").replace("-", " ").title(),
                        "description": f"{name} from our {folder.name} range.",
                        "price": f"{rng.uniform(3, 120):.2f}",
                        "stock": rng.choice([0] + [rng.randint(1, 40)] * 9),
                        "published": True,
                        "image_path": image,
                    }
                )
        if not entries:
            raise CommandError(f"No images found in sub-folders of {root}.")
        return entries

    @transaction.atomic
    def _create(self, entry: dict[str, Any], categories: dict[str, Any]) -> int:
        if Product.objects.filter(slug=entry["slug"]).exists():
            return 0
        meta = categories.get(entry["category"], {})
        category, _ = Category.objects.get_or_create(
            slug=entry["category"],
            defaults={
                "name": meta.get("name") or entry.get("category_name") or entry["category"].title(),
                "description": meta.get("description", ""),
            },
        )
        product = Product(
            slug=entry["slug"],
            name=entry["name"],
            description=entry.get("description", ""),
            price=Decimal(str(entry["price"])),
            stock=int(entry.get("stock", 10)),
            published=bool(entry.get("published", True)),
            category=category,
        )
        path = Path(entry["image_path"])
        with path.open("rb") as fh:
            product.photo.save(f"{entry['slug']}{path.suffix.lower()}", File(fh), save=False)
        product.save()
        return 1
