"""Issue 14, point 1: the README's way of moving an existing SQLite shop to PostgreSQL works:
``dumpdata`` (the README's exact options) from a shop without imgrec, ``loaddata`` into the
migrated PostgreSQL database, and imgrec then finds every existing photo to index."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

REPO = Path(__file__).resolve().parent.parent

SEED = """
import django; django.setup()
from django.core.management import call_command
from django.core.files.base import ContentFile
from decimal import Decimal
call_command("migrate", verbosity=0)
from shop_demo.catalog.models import Category, Product
fruit = Category.objects.create(slug="fruit", name="Fruit")
for i in range(3):
    Product.objects.create(slug=f"p{i}", name=f"Pear {i}", price=Decimal("1.50"), stock=3, category=fruit,
                           photo=ContentFile(open(sys.argv[1], "rb").read(), name=f"p{i}.png"))
"""

# README, "Install into an existing shop", Database: the dumpdata line.
DUMP = [
    "dumpdata",
    "--natural-foreign",
    "--natural-primary",
    "-e",
    "contenttypes",
    "-e",
    "auth.permission",
    "-e",
    "admin.logentry",
    "-e",
    "sessions",
    "--indent",
    "2",
    "-o",
]


@pytest.mark.django_db
def test_a_sqlite_shop_moves_over_with_dumpdata_and_loaddata(tmp_path: Path) -> None:
    from imgrec_app.models import IndexedImage
    from imgrec_app.services import reindex
    from shop_demo.catalog.models import Product
    from tests.conftest import make_image_bytes

    photo = tmp_path / "photo.png"
    photo.write_bytes(make_image_bytes("PNG"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_sqlite_shop",
        "IMGREC_SQLITE_PATH": str(tmp_path / "shop.sqlite3"),
        "DATABASE_URL": "postgres://unused@127.0.0.1:9/x",
    }
    dump = tmp_path / "shop.json"
    for args in (["-c", "import sys\n" + SEED, str(photo)], ["manage.py", *DUMP, str(dump)]):
        proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    call_command("loaddata", str(dump), verbosity=0)
    assert Product.objects.filter(name__startswith="Pear").count() == 3
    assert Product.objects.get(slug="p0").price == Decimal("1.50")
    assert not IndexedImage.objects.exists()  # fixture loads are raw saves: nothing queued twice
    assert reindex.discover_untracked() == 3  # what imgrec_reindex --missing finds and queues
