"""The learned image + text head of a tuning run: trained, measured held-out, served, kept current.

Real parts: demo photos through the real EfficientNet-Lite0 weights (``demo_vectors`` of
tests/test_tuning.py), texts through the real all-MiniLM-L6-v2, the embedded Postgres with
pgvector and the real services.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.test.utils import override_settings

from imgrec_app.ml.head import HeadConfig, TrainingData, learned_input, train_learned_head
from imgrec_app.models import ProductVector, TuningRun
from tests import test_tuning
from tests.conftest import CATALOGUE_DIR
from tests.test_tuning import FAST, _add_products, _split

demo_vectors = test_tuning.demo_vectors  # the session fixture: demo photos through the real weights

LEARNED_ONLY = {"image": 0.0, "text": 0.0, "coview": 0.0, "learned": 1.0}


def _precision(vectors: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    V = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = V @ V.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(np.mean(y[top] == y[:, None]))


def test_the_learned_head_uses_both_the_image_and_the_text_half():
    """Four categories: the image vectors tell {0, 1} from {2, 3}, the texts {0, 2} from {1, 3};
    only a head that reads both halves separates all four."""
    rng = np.random.default_rng(0)
    n, dim = 320, 32
    y = rng.integers(0, 4, n)
    a, b = rng.normal(size=(2, dim)) * 3
    image = np.where((y < 2)[:, None], a, -a) + rng.normal(size=(n, dim))
    text = np.where((y % 2 == 0)[:, None], b, -b) + rng.normal(size=(n, dim))
    train, test = np.arange(240), np.arange(240, n)
    data = TrainingData(image[train].astype(np.float32), y[train], text[train].astype(np.float32))
    head = train_learned_head(data, HeadConfig(dim=16, hidden=0, pca=0, epochs=30))
    joint = head.apply(learned_input(image[test], text[test]))
    assert _precision(image[test], y[test]) < 0.6 and _precision(text[test], y[test]) < 0.6
    assert _precision(joint, y[test]) > 0.9


def _catalogue_texts() -> dict[str, tuple[str, str]]:
    rows = json.loads((CATALOGUE_DIR / "catalogue.json").read_text())
    return {r["slug"]: (r["name"], r["description"]) for r in rows}


def _with_texts(products, paths):
    from imgrec_app.services import text

    texts = _catalogue_texts()
    for product, path in zip(products, paths):
        product.name, product.description = texts[path.stem]
        product.save()
    text.embed_products([p.pk for p in products])


def _learned(run, products) -> dict[str, list[float]]:
    rows = ProductVector.objects.filter(
        model_id=f"{run.model_id}:learned", object_id__in=[str(p.pk) for p in products]
    ).values_list("object_id", "vector", "modality")
    assert all(m == "learned" for _, _, m in rows)
    return {o: list(v) for o, v, _ in rows}


def _learned_shelf(product) -> list:
    from imgrec_app.conf import imgrec_settings
    from imgrec_app.services.recommend import similar_products

    with override_settings(IMGREC={**imgrec_settings.user_settings, "SIMILAR_WEIGHTS": LEARNED_ONLY}):
        return similar_products(product, limit=5, attach=True)


@pytest.mark.django_db(transaction=True)
def test_learned_vectors_are_served_and_follow_texts_images_and_rollback(make_product, demo_vectors, settings):
    from imgrec_app.services import indexing, text, tuning
    from imgrec_app.services.similar_sql import modalities

    settings.IMGREC = {
        **settings.IMGREC,
        "TEXT_MODEL": "all-MiniLM-L6-v2",
        "NEAR_DUPLICATE_SIMILARITY": 1.01,
        "TUNING_FOLDS": 2,
    }
    early, late = _split(demo_vectors)
    products = _add_products(make_product, early, demo_vectors)
    _with_texts(products, early)

    out = io.StringIO()
    call_command("imgrec_tune", "--sync", "--config", json.dumps(FAST), stdout=out)
    run = TuningRun.objects.first()
    assert run.is_active and run.learned_weights is not None, out.getvalue()
    # Held-out, as configured: both rows measured, and the command prints them.
    assert run.metrics["tuned"]["configured"] is not None and run.metrics["untuned"]["configured"] is not None
    assert "as configured" in out.getvalue()
    assert len(_learned(run, products)) == len(products)
    assert [m.name for m in modalities((run.model_id, run.dimensions))] == ["image", "text", "learned"]

    # The shelf fuses them: learned weight alone still gives a full, mostly in-category shelf.
    hits = []
    for product in products[::5]:
        items = _learned_shelf(product)
        assert len(items) == 5 and all(i.source == "similar:learned" for i in items), items
        hits += [i.product.category_id == product.category_id for i in items]
    assert np.mean(hits) >= 0.8, np.mean(hits)

    # A new text: the product's learned vector follows it.
    before = _learned(run, products[:1])
    products[0].description = "A completely different text about garden tools and hammers."
    products[0].save()
    text.embed_products([products[0].pk])
    after = _learned(run, products[:1])
    assert after.keys() == before.keys() and not np.allclose(after[str(products[0].pk)], before[str(products[0].pk)])

    # A new upload: learned once it has both its image vector and its text.
    newcomer = _add_products(make_product, late[:1], demo_vectors, embed=False)[0]
    from imgrec_app.models import IndexedImage

    ids = list(IndexedImage.objects.filter(source_id=str(newcomer.pk)).values_list("pk", flat=True))
    indexing.process_images(ids, greedy=False)
    _with_texts([newcomer], late[:1])
    assert str(newcomer.pk) in _learned(run, [newcomer])

    # The photo removed: no image vector, so no learned vector either.
    newcomer.photo = None
    newcomer.save()
    assert _learned(run, [newcomer]) == {}

    # Pruning keeps the serving run's learned vectors.
    from imgrec_app.services.reindex import prune_vectors

    prune_vectors()
    assert len(_learned(run, products)) == len(products)

    # Rolled back: the base vectors serve and the learned modality is not fused any more; a prune
    # then drops the learned vectors with the head's (an --activate writes them again).
    tuning.rollback()
    assert not any(i.source == "similar:learned" for i in _learned_shelf(products[0]))
    prune_vectors()
    assert _learned(run, products) == {}
    call_command("imgrec_tune", "--activate", str(run.pk), stdout=io.StringIO())
    assert len(_learned(run, products)) == len(products)
    assert all(i.source == "similar:learned" for i in _learned_shelf(products[0]))


@pytest.mark.django_db(transaction=True)
def test_a_failing_learned_refresh_loses_no_text_or_image_vector(
    make_product, demo_vectors, settings, monkeypatch, caplog
):
    """The learned vectors are derived: if computing them fails, the text vector (and the image
    vectors) the caller writes are still stored, and the failure is logged."""
    from imgrec_app.ml.text import TEXT_MODELS
    from imgrec_app.services import learned, text

    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": "all-MiniLM-L6-v2", "TUNING_FOLDS": 0}
    early, late = _split(demo_vectors)
    products = _add_products(make_product, early, demo_vectors)
    _with_texts(products, early)
    call_command("imgrec_tune", "--sync", "--config", json.dumps(FAST), stdout=io.StringIO())
    run = TuningRun.objects.first()
    assert run.is_active and run.learned_weights is not None

    def broken(*args, **kwargs):
        raise FloatingPointError("head exploded")

    monkeypatch.setattr(learned, "learned_input", broken)
    products[0].description = "Another text, so that a new text vector is written."
    products[0].save()
    assert text.embed_products([products[0].pk]) == 1
    stored = ProductVector.objects.get(object_id=str(products[0].pk), model_id=TEXT_MODELS["all-MiniLM-L6-v2"][0])
    assert stored.source_hash == text.text_hash(text.product_text(products[0]))
    assert "learned vectors of 1 product(s) not refreshed" in caplog.text
    # A new photo: its image vectors are stored all the same.
    newcomer = _add_products(make_product, late[:1], demo_vectors)[0]
    assert ProductVector.objects.filter(object_id=str(newcomer.pk), model_id=run.base_model_id).exists()
