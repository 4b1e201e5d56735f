"""Catalogue health on the real pgvector: duplicates, placeholders, tiny/blank files, missing
images/vectors, category disagreements with the one-click fix, mix-ups; admin page, CSV, command."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from PIL import Image

from imgrec_app.models import CategoryClassifier, CategoryPrediction, IndexedImage, ProductVector, ServingModel
from imgrec_app.services import health
from imgrec_app.services.vectors import ensure_hnsw_index
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

MODEL_ID = "test-health:v1"
DIM = 16
HEALTH = "/admin/imgrec_app/indexedimage/health/"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _vectors(products, vectors) -> None:
    ct = ContentType.objects.get_for_model(products[0])
    ProductVector.objects.bulk_create(
        [
            ProductVector(content_type=ct, object_id=str(p.pk), model_id=MODEL_ID, vector=v.tolist())
            for p, v in zip(products, vectors)
        ]
    )
    ServingModel.objects.update_or_create(modality="image", defaults={"model_id": MODEL_ID, "dimensions": DIM})
    ensure_hnsw_index(MODEL_ID, DIM)


@pytest.fixture
def clustered(make_product):
    """24 products in 3 categories with clustered vectors; fruit 0's vector is a copy of fruit 3's."""
    rng = np.random.default_rng(1)
    centers = _unit(rng.normal(size=(3, DIM)))
    products, vectors = [], []
    for i in range(24):
        cat = ["shoes", "fruit", "toys"][i % 3]
        products.append(make_product(f"{cat} {i}", category=cat))
        vectors.append(_unit(centers[i % 3] + 0.3 * rng.normal(size=DIM)))
    vectors[1] = _unit(vectors[4] + 0.001 * rng.normal(size=DIM))  # fruit 1 ≈ fruit 4
    _vectors(products, vectors)
    return products


def _items(report, section):
    return report.items[section]


def test_near_duplicate_photos_on_different_products_are_listed(clustered, settings):
    report = health.catalogue_health(check_files=False)
    pairs = {(i.product_id, i.other_product_id) for i in _items(report, "duplicate_listings")}
    a, b = sorted([str(clustered[1].pk), str(clustered[4].pk)])
    assert pairs == {(a, b)}  # once, not once per direction
    item = _items(report, "duplicate_listings")[0]
    assert item.product in {"fruit 1", "fruit 4"} and item.score > 0.99
    # The threshold is the shelves' near-duplicate setting: raising it past the pair empties the list.
    settings.IMGREC = {**settings.IMGREC, "NEAR_DUPLICATE_SIMILARITY": 0.9999999}
    assert _items(health.catalogue_health(check_files=False), "duplicate_listings") == []


def test_categories_mixed_up_by_neighbours(make_product):
    rng = np.random.default_rng(2)
    centers = _unit(rng.normal(size=(2, DIM)))
    products, vectors = [], []
    for i in range(12):  # "hats" products look like shoes
        cat = "shoes" if i < 6 else "hats"
        products.append(make_product(f"{cat} {i}", category=cat))
        vectors.append(_unit(centers[0] + 0.05 * rng.normal(size=DIM)))
    for i in range(6):
        products.append(make_product(f"fruit {i}", category="fruit"))
        vectors.append(_unit(centers[1] + 0.05 * rng.normal(size=DIM)))
    _vectors(products, vectors)
    mixed = _items(health.catalogue_health(check_files=False, neighbours=5), "mixed_categories")
    # Category names as the merchant reads them; every mix-up is between shoes and hats.
    assert mixed and {i.product for i in mixed} <= {"Shoes → Hats", "Hats → Shoes"}
    assert mixed[0].score >= 0.3 and " are " in mixed[0].detail


def test_shared_files_placeholders_and_identical_listings(make_product, add_image):
    ps = [make_product(f"p{i}") for i in range(6)]
    for p in ps:
        add_image(p)
    # Three products share a placeholder; two others share one identical photo; one is unique.
    for p in ps[:3]:
        IndexedImage.objects.filter(object_id=str(p.pk)).update(file_hash="placeholder")
    for p in ps[3:5]:
        IndexedImage.objects.filter(object_id=str(p.pk)).update(file_hash="same-photo")
    IndexedImage.objects.filter(object_id=str(ps[5].pk)).update(file_hash="unique")
    report = health.catalogue_health(check_files=False)
    assert {i.product_id for i in _items(report, "placeholders")} == {str(p.pk) for p in ps[:3]}
    dupes = _items(report, "duplicate_listings")
    assert [(i.product_id, i.other_product_id, i.score) for i in dupes] == [
        (*sorted([str(ps[3].pk), str(ps[4].pk)]), 1.0)
    ]


def test_tiny_and_blank_images_from_the_files(make_product, add_image):
    normal, tiny, blank = make_product("normal"), make_product("tiny"), make_product("blank")
    add_image(normal, make_image_bytes(size=(320, 240)))
    add_image(tiny, make_image_bytes(size=(60, 40)), name="tiny.jpg")
    white = io.BytesIO()
    Image.new("RGB", (300, 300), (250, 250, 250)).save(white, "PNG")
    add_image(blank, white.getvalue(), name="blank.png")
    report = health.catalogue_health()
    assert report.files_checked == report.files_total == 3
    assert [i.product_id for i in _items(report, "tiny_images")] == [str(tiny.pk)]
    assert [i.product_id for i in _items(report, "blank_images")] == [str(blank.pk)]
    assert "60×40" in _items(report, "tiny_images")[0].detail


def test_blank_share_sees_transparent_and_plain_pictures():
    empty = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert health.blank_share(empty) == 1.0
    product = Image.new("RGBA", (64, 64), (255, 255, 255, 255))
    product.paste((200, 30, 30, 255), (8, 8, 56, 56))
    assert health.blank_share(product) < 0.5


def test_products_without_image_or_vector(make_product, add_image):
    bare, pending, indexed = make_product("bare"), make_product("pending"), make_product("indexed")
    add_image(pending)
    add_image(indexed, make_image_bytes(color=(0, 0, 200)), name="b.jpg")
    IndexedImage.objects.filter(object_id=str(indexed.pk)).update(status=IndexedImage.Status.READY)
    _vectors([indexed], [_unit(np.ones(DIM))])
    IndexedImage.objects.filter(object_id=str(pending.pk)).update(
        status=IndexedImage.Status.FAILED, failure_reason="corrupt"
    )
    report = health.catalogue_health(check_files=False)
    assert [i.product_id for i in _items(report, "no_image")] == [str(bare.pk)]
    no_vector = _items(report, "no_vector")
    assert [i.product_id for i in no_vector] == [str(pending.pk)]
    assert no_vector[0].detail == "1 failed: corrupt"


@pytest.fixture
def disagreement(make_product, make_category):
    product = make_product("banana", category="shoes")
    fruit = make_category("fruit")
    ct = ContentType.objects.get_for_model(product)
    clf = CategoryClassifier.objects.create(model_id=MODEL_ID, categories=[], coef=[], intercept=[])
    pred = CategoryPrediction.objects.create(
        content_type=ct,
        object_id=str(product.pk),
        classifier=clf,
        category=str(fruit.pk),
        confidence=0.93,
        assigned_category=str(product.category_id),
    )
    agreeing = make_product("apple", category="fruit")
    CategoryPrediction.objects.create(
        content_type=ct, object_id=str(agreeing.pk), classifier=clf, category=str(fruit.pk), confidence=0.9,
        assigned_category=str(fruit.pk),
    )
    return product, fruit, pred


def test_category_disagreements_listed(disagreement):
    product, _fruit, pred = disagreement
    items = _items(health.catalogue_health(check_files=False), "category_disagreements")
    assert [(i.product_id, i.prediction_id, i.product) for i in items] == [(str(product.pk), pred.pk, "banana")]
    assert items[0].detail == "set: Shoes · predicted: Fruit"


@pytest.fixture
def merchant(client):
    user = User.objects.create_user("merchant", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_indexedimage"))
    client.force_login(user)
    return user


def test_admin_page_csv_and_one_click_fix(client, merchant, disagreement, make_product):
    product, fruit, pred = disagreement
    make_product("no photo")
    r = client.get(HEALTH)
    assert r.status_code == 200
    html = r.content.decode()
    assert "Catalogue health" in html and "banana" in html and "no photo" in html
    assert f'value="{pred.pk}"' not in html  # no apply button without the permission
    assert client.post(HEALTH, {"apply": pred.pk}).status_code == 403

    merchant.user_permissions.add(Permission.objects.get(codename="change_categoryprediction"))
    client.force_login(User.objects.get(pk=merchant.pk))
    assert f'value="{pred.pk}"' in client.get(HEALTH).content.decode()
    assert client.post(HEALTH, {"apply": pred.pk}).status_code == 302
    product.refresh_from_db()
    assert product.category_id == fruit.pk
    assert _items(health.catalogue_health(check_files=False), "category_disagreements") == []

    r = client.get(HEALTH, {"format": "csv"})
    assert r["Content-Type"].startswith("text/csv") and "attachment" in r["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert {row["section"] for row in rows} >= {"no_image"}
    assert any(row["product"] == "no photo" for row in rows)


def test_admin_page_needs_staff(client, make_product):
    user = User.objects.create_user("shopper", password="pw")
    client.force_login(user)
    assert client.get(HEALTH).status_code == 302  # the admin's login page


def test_command_summary_json_csv_and_exit_status(tmp_path, disagreement, make_product):
    make_product("no photo")
    out = io.StringIO()
    call_command("imgrec_health", "--no-files", stdout=out)
    text = out.getvalue()
    assert "Products with no image: 3" in text and "no photo" in text
    out = io.StringIO()
    path = tmp_path / "health.csv"
    call_command("imgrec_health", "--no-files", "--json", "--csv", str(path), stdout=out)
    data = json.loads(out.getvalue())
    assert data["counts"]["category_disagreements"] == 1 and data["counts"]["no_image"] == 3
    assert "banana" in path.read_text()
    with pytest.raises(SystemExit) as exc:
        call_command("imgrec_health", "--no-files", "--fail-on-findings", stdout=io.StringIO())
    assert exc.value.code == 1
