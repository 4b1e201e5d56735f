"""The similar-products shelf cache: never a product the rules exclude now, invalidated by a model
switch and by the product's own vectors, bounded statements; shelf reads on a replica alias."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from imgrec_app.models import ProductVector, ServingModel
from imgrec_app.services import recommend
from imgrec_app.services.vectors import ensure_hnsw_index
from tests.test_recommend import DIM, MODEL_ID, _unit, catalogue  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def _ids(items):
    return [i.product_id for i in items]


def _fresh(product, **kw):
    """The shelf computed without the cache, for comparison."""
    from django.conf import settings
    from django.test import override_settings

    with override_settings(IMGREC={**settings.IMGREC, "SHELF_CACHE": False}):
        return _ids(recommend.similar_products(product, **kw))


def test_second_shelf_comes_from_the_cache_in_one_query(catalogue):  # noqa: F811
    products, _ = catalogue
    first = recommend.similar_products(products[0], limit=8)
    with CaptureQueriesContext(connection) as q:
        again = recommend.similar_products(products[0], limit=8)
    assert len(q) == 1
    assert _ids(again) == _ids(first) and all(i.product is not None for i in again)
    assert [i.reason for i in again] == [i.reason for i in first]


@pytest.mark.parametrize(
    "change",
    [{"stock": 0}, {"published": False}, "delete"],
    ids=["sold out", "unpublished", "deleted"],
)
def test_cache_never_serves_a_product_the_rules_now_exclude(catalogue, change):  # noqa: F811
    from shop_demo.catalog.models import Product

    products, _ = catalogue
    cached = _ids(recommend.similar_products(products[0], limit=8))
    gone = cached[2]
    rows = Product.objects.filter(pk=int(gone))
    if change == "delete":
        ProductVector.objects.filter(object_id=gone).delete()
        rows.delete()
    else:
        rows.update(**change)  # a queryset update: no signal fires
    served = _ids(recommend.similar_products(products[0], limit=8))
    assert gone not in served
    assert len(served) == 8
    assert served == _fresh(products[0], limit=8)


def test_model_switch_by_another_process_invalidates_the_cache(catalogue):  # noqa: F811
    products, vectors = catalogue
    # A second model, backfilled before the shelf is cached (so the product's vector stamp does
    # not change at the switch); its geometry differs from the first.
    rng = np.random.default_rng(7)
    other = _unit(rng.normal(size=(len(products), DIM)))
    ct = ContentType.objects.get_for_model(products[0])
    ProductVector.objects.bulk_create(
        [ProductVector(content_type=ct, object_id=str(p.pk), model_id="test-model:v2:p1", vector=v.tolist()) for p, v in zip(products, other)]
    )
    ensure_hnsw_index("test-model:v2:p1", DIM)
    before = _ids(recommend.similar_products(products[0], limit=8))
    # Another process switches: this process's cached serving model is now stale.
    ServingModel.objects.filter(modality="image").update(model_id="test-model:v2:p1")
    after = _ids(recommend.similar_products(products[0], limit=8))
    sims = other @ other[0]
    sims[0] = -np.inf
    expected = [str(products[j].pk) for j in np.argsort(-sims)[:8]]
    assert after == expected and after != before


def test_a_change_of_the_products_own_vector_invalidates_the_cache(catalogue):  # noqa: F811
    products, vectors = catalogue
    before = _ids(recommend.similar_products(products[0], limit=8))
    # Product 0 now looks like a toy (cluster of product 2).
    ProductVector.objects.filter(object_id=str(products[0].pk)).update(vector=vectors[2].tolist())
    from django.utils import timezone

    ProductVector.objects.filter(object_id=str(products[0].pk)).update(updated_at=timezone.now())
    after = recommend.similar_products(products[0], limit=8)
    assert _ids(after) != before
    assert {i.product.category.slug for i in after} == {"toys"}
    assert _ids(after) == _fresh(products[0], limit=8)


def test_settings_and_arguments_are_part_of_the_key(catalogue, settings):  # noqa: F811
    products, _ = catalogue
    recommend.similar_products(products[0], limit=8)
    same = recommend.similar_products(products[0], limit=8, same_category=True)
    assert {i.product.category.slug for i in same} == {"shoes"}
    settings.IMGREC = {**settings.IMGREC, "SHELF_CACHE": False}
    with CaptureQueriesContext(connection) as q:
        recommend.similar_products(products[0], limit=8)
    assert len(q) == 1  # off: computed every time (one statement: k-NN, rules and the products' columns)


def test_a_product_without_vector_gets_fallback_and_the_cache_sees_its_first_vector(catalogue, make_product):  # noqa: F811
    products, vectors = catalogue
    lonely = make_product("new shoe", category="shoes")
    assert {i.source for i in recommend.similar_products(lonely, limit=5)} <= {"fallback:category", "fallback:trending", "fallback:new"}
    ct = ContentType.objects.get_for_model(lonely)
    ProductVector.objects.create(content_type=ct, object_id=str(lonely.pk), model_id=MODEL_ID, vector=vectors[1].tolist())
    items = recommend.similar_products(lonely, limit=5)
    assert {i.source for i in items} == {"similar:image"}


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_shelves_read_from_the_replica_alias(make_product, settings):
    """``SHELF_DATABASE`` sends every shelf query to that alias (here a test mirror of default)."""
    rng = np.random.default_rng(0)
    settings.IMGREC = {**settings.IMGREC, "SIMILAR_WEIGHTS": {"image": 1.0, "text": 0.0, "coview": 0.0}, "SHELF_DATABASE": "replica"}
    products = [make_product(f"thing {i}", category="toys") for i in range(12)]
    ct = ContentType.objects.get_for_model(products[0])
    vecs = _unit(rng.normal(size=(12, DIM)))
    ProductVector.objects.bulk_create(
        [ProductVector(content_type=ct, object_id=str(p.pk), model_id=MODEL_ID, vector=v.tolist()) for p, v in zip(products, vecs)]
    )
    ServingModel.objects.create(modality="image", model_id=MODEL_ID, dimensions=DIM)
    ensure_hnsw_index(MODEL_ID, DIM)
    with CaptureQueriesContext(connection) as primary, CaptureQueriesContext(connections["replica"]) as replica:
        cold = recommend.similar_products(products[0], limit=5)
        cached = recommend.similar_products(products[0], limit=5)
    assert len(primary) == 0
    assert len(replica) == 3  # serving model (once per process), the shelf statement; cached: the check
    sims = vecs @ vecs[0]
    sims[0] = -np.inf
    assert _ids(cold) == _ids(cached) == [str(products[j].pk) for j in np.argsort(-sims)[:5]]
    # A product without a vector gets its labelled fallback (trending reads the default database).
    lonely = make_product("no vector yet", category="fruit")  # alone in its category: trending, then new
    fallback = recommend.similar_products(lonely, limit=3)
    assert len(fallback) == 3 and {i.source for i in fallback} <= {"fallback:category", "fallback:trending", "fallback:new"}


def test_near_duplicate_photos_are_collapsed_in_sql(catalogue):  # noqa: F811
    """Pairs of candidates closer than NEAR_DUPLICATE_SIMILARITY come from the statement itself."""
    products, vectors = catalogue
    top = _ids(recommend.similar_products(products[0], limit=8))
    x = top[0]
    twin_of_x, twin_of_self = products[1], products[2]  # other categories: far from product 0
    ProductVector.objects.filter(object_id=str(twin_of_x.pk)).update(vector=vectors[[str(p.pk) for p in products].index(x)].tolist())
    ProductVector.objects.filter(object_id=str(twin_of_self.pk)).update(vector=vectors[0].tolist())
    shelf = _fresh(products[0], limit=8)
    assert str(twin_of_self.pk) not in shelf  # the same photo as the product itself
    assert (x in shelf) != (str(twin_of_x.pk) in shelf)  # one of the two twins, not both
    assert len(shelf) == 8


def test_checks_name_bad_serving_settings(settings):
    from imgrec_app.checks import check_settings

    settings.IMGREC = {
        **settings.IMGREC,
        "SHELF_CACHE_TIMEOUT": 0,
        "SHELF_CACHE_ALIAS": "nope",
        "SHELF_DATABASE": "nowhere",
        "VECTOR_STORAGE": "float8",
    }
    ids = {e.id for e in check_settings()}
    assert {"imgrec_app.E041", "imgrec_app.E042", "imgrec_app.E043", "imgrec_app.E044"} <= ids
    settings.IMGREC = {**settings.IMGREC, "SHELF_CACHE_TIMEOUT": 30, "SHELF_CACHE_ALIAS": "default", "SHELF_DATABASE": "replica", "VECTOR_STORAGE": "halfvec"}
    assert not {e.id for e in check_settings()} & {"imgrec_app.E041", "imgrec_app.E042", "imgrec_app.E043", "imgrec_app.E044"}


def test_fused_image_and_text_scores_are_exact_for_every_candidate(catalogue, settings):  # noqa: F811
    """Image + text k-NN in one statement: a candidate found by one modality gets the other
    modality's similarity computed next to it, so every fused score is the exact sum."""
    from imgrec_app.ml.text import TEXT_MODELS

    products, vectors = catalogue
    text_id, text_dim = TEXT_MODELS["all-MiniLM-L6-v2"]
    rng = np.random.default_rng(3)
    text = _unit(rng.normal(size=(len(products), text_dim)))
    ct = ContentType.objects.get_for_model(products[0])
    ProductVector.objects.bulk_create(
        [ProductVector(content_type=ct, object_id=str(p.pk), modality="text", model_id=text_id, vector=v.tolist()) for p, v in zip(products, text)]
    )
    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": "all-MiniLM-L6-v2", "SIMILAR_WEIGHTS": {"image": 1.0, "text": 1.0, "coview": 0.0}}
    items = recommend.similar_products(products[0], limit=8)
    index = {str(p.pk): i for i, p in enumerate(products)}
    fused = vectors @ vectors[0] + text @ text[0]
    for item in items:
        j = index[item.product_id]
        assert abs(item.score - fused[j]) < 1e-4
    assert [i.score for i in items] == sorted((i.score for i in items), reverse=True)
    fused[0] = -np.inf
    assert items[0].product_id == str(products[int(np.argmax(fused))].pk)
