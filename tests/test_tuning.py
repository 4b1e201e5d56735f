"""Learning the shop's catalogue: the projection head, tuning runs, serving, rollback, refusals.

The catalogue tests use real demo photos embedded once per session with the real offline
EfficientNet-Lite0 weights (cached in memory, so each test only writes rows), the embedded
Postgres with pgvector, and the real services.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command

from imgrec_app.ml.head import HeadConfig, ProjectionHead, TrainingData, TrainingDataError, check_data, train_head
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector, ServingModel, TuningRun
from tests.conftest import wait_for, CATALOGUE_DIR

# Six demo categories, 10 products each: 7 teach the head, 3 arrive after tuning.
CATEGORIES = ["fruit", "musical-instruments", "vehicles", "tools", "clothing-accessories", "bird-prints"]
PER_CATEGORY = 10
LATE = 3
FAST = {"epochs": 15, "hidden": 0}  # small and quick; the default head is measured in bench/


# --- the head, without Django -------------------------------------------------------------------


def _blobs(n=240, classes=4, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, n)
    X = np.abs(rng.normal(size=(n, dim)) * 2 + centres[y]).astype(np.float32)
    return X, y


def test_numpy_serving_matches_torch_training():
    import torch

    X, y = _blobs()
    head = train_head(TrainingData(X, y), HeadConfig(dim=16, hidden=32, epochs=3))
    restored = ProjectionHead.from_bytes(head.to_bytes())
    out = restored.apply(X)
    # The same computation in torch (GELU tanh form), from the stored weights.
    x = torch.nn.functional.normalize(torch.from_numpy(X), dim=1) - torch.from_numpy(head.mean)
    h = torch.nn.functional.gelu(x @ torch.from_numpy(head.w1).T + torch.from_numpy(head.b1), approximate="tanh")
    ref = torch.nn.functional.normalize(h @ torch.from_numpy(head.w2).T + torch.from_numpy(head.b2), dim=1)
    assert out.shape == (len(X), 16)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ([-1] * 12, "no indexed product has a category"),
        ([0] * 12, "one category"),
        ([0, 0, 0, 0, 1, 1] + [-1] * 6, "only 1 category has 3+ products"),
    ],
)
def test_check_data_refuses_what_cannot_teach(labels, reason):
    X, _ = _blobs(n=12)
    with pytest.raises(TrainingDataError, match=re.escape(reason)):
        check_data(TrainingData(X, np.array(labels)), min_categories=2, min_per_category=3)
    with pytest.raises(TrainingDataError, match="No product vectors"):
        check_data(TrainingData(np.zeros((0, 0), dtype=np.float32), np.array([], dtype=int)))


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"TUNING_FOLDS": 1}, "imgrec_app.E046"),
        ({"TUNING_MIN_CATEGORIES": 1}, "imgrec_app.E046"),
        ({"TUNING_HEAD": {"layers": 3}}, "imgrec_app.E047"),
    ],
)
def test_tuning_settings_are_checked(overrides, check_id, settings):
    from imgrec_app.checks import check_settings

    assert check_id not in {m.id for m in check_settings()}
    settings.IMGREC = {**settings.IMGREC, **overrides}
    assert check_id in {m.id for m in check_settings()}


# --- a small real catalogue -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_vectors():
    """Base vectors of the chosen demo photos, made once with the real encoder (path -> vector)."""
    from imgrec_app.ml.preprocess import load_rgb
    from imgrec_app.services.indexing import load_encoder
    from imgrec_app.services.models import configured_model

    encoder = load_encoder(configured_model())
    paths = [p for cat in CATEGORIES for p in sorted((CATALOGUE_DIR / "images" / cat).glob("*.png"))[:PER_CATEGORY]]
    from imgrec_app.conf import imgrec_settings

    options = {"allowed_formats": imgrec_settings.ALLOWED_FORMATS, "max_pixels": imgrec_settings.MAX_IMAGE_PIXELS}
    arrays = [encoder.preprocess(load_rgb(p.read_bytes(), min_size=encoder.spec.resize_size, **options)) for p in paths]
    vectors = encoder.encode_arrays(np.stack(arrays)).vectors
    return {p: np.asarray(v, dtype=np.float32) for p, v in zip(paths, vectors)}


def _add_products(make_product, paths, demo_vectors, *, embed=True):
    """Products with these photos, indexed as the worker would (vectors from the session cache)."""
    from imgrec_app.services.models import configured_model, sync_serving_model
    from imgrec_app.services.vectors import ensure_hnsw_index, refresh_product_vectors

    ref = configured_model()
    products = []
    for path in paths:
        product = make_product(
            path.stem, category=path.parent.name, photo=ContentFile(path.read_bytes(), name=path.name)
        )
        products.append(product)
        if not embed:
            continue
        image = IndexedImage.objects.get(source="catalog.product.photo", source_id=str(product.pk))
        ImageEmbedding.objects.create(
            image=image, model_id=ref.model_id, vector=demo_vectors[path].tolist(), file_hash=path.stem
        )
        IndexedImage.objects.filter(pk=image.pk).update(status=IndexedImage.Status.READY)
    if embed:
        ensure_hnsw_index(ref.model_id, ref.dim)
        refresh_product_vectors(
            {(IndexedImage.objects.get(source_id=str(p.pk)).content_type_id, str(p.pk)) for p in products}, ref.model_id
        )
        sync_serving_model()
    return products


def _split(demo_vectors):
    early, late = [], []
    for cat in CATEGORIES:
        paths = [p for p in demo_vectors if p.parent.name == cat]
        early += paths[: PER_CATEGORY - LATE]
        late += paths[PER_CATEGORY - LATE :]
    return early, late


def _image_only_precision(products, k=5):
    """Share of each product's image-only similar shelf (the real service) in its category."""
    from django.test.utils import override_settings

    from imgrec_app.conf import imgrec_settings
    from imgrec_app.services.recommend import similar_products

    scores = []
    weights = {"image": 1.0, "text": 0.0, "coview": 0.0}
    with override_settings(IMGREC={**imgrec_settings.user_settings, "SIMILAR_WEIGHTS": weights}):
        for product in products:
            items = similar_products(product, limit=k, attach=True)
            scores.append(sum(1 for i in items if i.product and i.product.category_id == product.category_id) / k)
    return float(np.mean(scores))


def _tune_sync(**config):
    out = io.StringIO()
    call_command("imgrec_tune", "--sync", "--config", __import__("json").dumps({**FAST, **config}), stdout=out)
    return TuningRun.objects.first(), out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_tuning_improves_held_out_shelves_and_new_uploads_get_tuned_vectors(make_product, demo_vectors, settings):
    """Products added AFTER the run (the head never saw them) are embedded by the real worker
    path; their image-only shelves from the real service beat the untuned ones."""
    from imgrec_app.services import indexing

    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None, "NEAR_DUPLICATE_SIMILARITY": 1.01, "TUNING_FOLDS": 2}
    early, late = _split(demo_vectors)
    _add_products(make_product, early, demo_vectors)
    base = ServingModel.objects.get(modality="image").model_id

    run, output = _tune_sync()
    assert run.status == TuningRun.Status.READY and run.is_active, output
    assert run.model_id == f"{base}:head{run.pk}"
    assert run.metrics["tuned"]["precision"] > run.metrics["untuned"]["precision"]
    assert ServingModel.objects.get(modality="image").model_id == run.model_id
    assert ImageEmbedding.objects.filter(model_id=run.model_id).count() == len(early)

    # New uploads: embedded by process_images (real encoder), which writes the tuned vector too.
    newcomers = _add_products(make_product, late, demo_vectors, embed=False)
    ids = list(IndexedImage.objects.filter(source_id__in=[str(p.pk) for p in newcomers]).values_list("pk", flat=True))
    summary = indexing.process_images(ids, greedy=False)
    # The test's Celery worker may take some of them first (their upload queued a task): either
    # way each one ends with its tuned vector.
    assert summary.ready + summary.skipped == len(late) and summary.ready > 0
    wait_for(lambda: ImageEmbedding.objects.filter(image_id__in=ids, model_id=run.model_id).count() == len(late))
    assert ProductVector.objects.filter(
        object_id__in=[str(p.pk) for p in newcomers], model_id=run.model_id
    ).count() == len(late)

    tuned = _image_only_precision(newcomers)
    call_command("imgrec_tune", "--rollback", stdout=io.StringIO())
    assert ServingModel.objects.get(modality="image").model_id == base
    untuned = _image_only_precision(newcomers)
    assert tuned >= untuned + 0.1, (tuned, untuned)


@pytest.mark.django_db(transaction=True)
def test_switch_and_rollback_keep_shelves_served(make_product, demo_vectors, settings):
    from imgrec_app.services import tuning
    from imgrec_app.services.models import sync_serving_model
    from imgrec_app.services.recommend import similar_products

    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None, "MODEL_SWITCH": "manual", "TUNING_FOLDS": 0}
    early, _ = _split(demo_vectors)
    products = _add_products(make_product, early, demo_vectors)
    base = ServingModel.objects.get(modality="image").model_id

    def served():
        for product in products[::7]:
            items = similar_products(product, limit=5)
            assert len(items) == 5 and all(i.source.startswith("similar") for i in items), items

    served()
    run, _ = _tune_sync()
    # Manual switching: the run is active, its vectors are complete, the base still serves.
    assert run.is_active and ServingModel.objects.get(modality="image").model_id == base
    served()
    call_command("imgrec_switch_model", stdout=io.StringIO())
    assert ServingModel.objects.get(modality="image").model_id == run.model_id
    served()
    # Rollback by setting: TUNING_SERVE off, the sweeper's sync serves the base vectors again.
    settings.IMGREC = {**settings.IMGREC, "MODEL_SWITCH": "auto", "TUNING_SERVE": False}
    sync_serving_model()
    assert ServingModel.objects.get(modality="image").model_id == base
    served()
    settings.IMGREC = {**settings.IMGREC, "TUNING_SERVE": True}
    sync_serving_model()
    assert ServingModel.objects.get(modality="image").model_id == run.model_id
    # Rollback by command.
    tuning.rollback()
    assert ServingModel.objects.get(modality="image").model_id == base
    assert not TuningRun.objects.filter(is_active=True).exists()
    served()
    # And back again: activate the ready run.
    call_command("imgrec_tune", "--activate", str(run.pk), stdout=io.StringIO())
    assert ServingModel.objects.get(modality="image").model_id == run.model_id
    served()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ["no_images", "one_category", "too_few_per_category"])
def test_bad_runs_refuse_and_change_nothing(case, make_product, demo_vectors, settings):
    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None}
    early, _ = _split(demo_vectors)
    if case == "one_category":
        _add_products(make_product, [p for p in early if p.parent.name == "fruit"], demo_vectors)
    elif case == "too_few_per_category":
        by_cat = {}
        for p in early:
            by_cat.setdefault(p.parent.name, []).append(p)
        _add_products(make_product, by_cat["fruit"] + by_cat["tools"][:2] + by_cat["vehicles"][:2], demo_vectors)
    serving_before = list(ServingModel.objects.values_list("modality", "model_id"))
    vectors_before = ImageEmbedding.objects.count(), ProductVector.objects.count()
    with pytest.raises(CommandError, match="Cannot learn the catalogue|No product vectors"):
        call_command("imgrec_tune", "--sync", stdout=io.StringIO())
    assert not TuningRun.objects.exists()
    assert list(ServingModel.objects.values_list("modality", "model_id")) == serving_before
    assert (ImageEmbedding.objects.count(), ProductVector.objects.count()) == vectors_before


@pytest.mark.django_db(transaction=True)
def test_a_run_that_does_not_help_is_not_activated(make_product, demo_vectors, settings):
    """A head that cannot help (1-d output: every vector is +1 or -1) loses held-out and must
    not take over the shelves."""
    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None, "TUNING_FOLDS": 2}
    early, _ = _split(demo_vectors)
    _add_products(make_product, early, demo_vectors)
    base = ServingModel.objects.get(modality="image").model_id
    run, output = _tune_sync(dim=1)
    assert run.status == TuningRun.Status.READY and not run.is_active
    assert run.metrics["gain"] < 0 and "Not activated" in run.message
    assert ServingModel.objects.get(modality="image").model_id == base


def test_demo_catalogue_paths_exist():
    assert all((CATALOGUE_DIR / "images" / c).is_dir() for c in CATEGORIES)
    assert isinstance(CATALOGUE_DIR, Path)


@pytest.mark.django_db
def test_admin_button_needs_permission_and_a_refused_run_says_why(client):
    from django.contrib.auth.models import Permission, User

    url = "/admin/imgrec_app/tuningrun/"
    user = User.objects.create_user("merchant", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_tuningrun"))
    client.force_login(user)
    assert "Learn the catalogue" not in client.get(url).content.decode()
    assert client.post(f"{url}start/").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="tune"))
    client.force_login(User.objects.get(pk=user.pk))
    assert "Learn the catalogue" in client.get(url).content.decode()
    page = client.post(f"{url}start/", follow=True).content.decode()
    assert "No product vectors to learn from" in page
    assert not TuningRun.objects.exists()
    run = TuningRun.objects.create(base_model_id="m", status=TuningRun.Status.TRAINING, progress=0.4, stage="fold 2")
    state = client.get(f"{url}{run.pk}/progress/").json()
    assert state["progress"] == 0.4 and state["stage"] == "fold 2" and state["finished"] is False
    assert "imgrec-tune-progress" in client.get(f"{url}{run.pk}/change/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_classifier_learns_from_the_base_vectors_while_a_head_serves(make_product, demo_vectors, settings):
    """The head saw every product's category: a classifier on its vectors would read that back
    (in-sample); it learns from the base vectors instead and classifies a newcomer from its own."""
    from imgrec_app.models import CategoryClassifier
    from imgrec_app.services import classifier

    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None, "NEAR_DUPLICATE_SIMILARITY": 1.01, "TUNING_FOLDS": 2}
    early, late = _split(demo_vectors)
    _add_products(make_product, early, demo_vectors)
    base = ServingModel.objects.get(modality="image").model_id
    run, output = _tune_sync()
    assert run.is_active and ServingModel.objects.get(modality="image").model_id == run.model_id, output

    report = classifier.train(folds=2)
    assert CategoryClassifier.objects.get(pk=report.classifier_id).model_id == base
    assert report.samples == len(early)
    newcomer = _add_products(make_product, late[:1], demo_vectors)[0]
    predicted = classifier.predict(newcomer)
    assert predicted is not None and 0 < predicted[1] <= 1


EVALUATE = "--output= --k=5 --folds=2 --simulated-shoppers=4 --events-per-shopper=3".split()


def _evaluate(*args):
    out = io.StringIO()
    call_command("imgrec_evaluate", *EVALUATE, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_imgrec_evaluate_measures_similar_products_on_base_vectors_while_a_head_serves(
    make_product, demo_vectors, settings
):
    """The head learned every product's category: its shelves measured on those same products
    are in-sample (~1.0).  imgrec_evaluate's similar rows use the base vectors instead (the same
    numbers as before tuning), leave what serves alone, and say so; without base vectors they
    are flagged in-sample, in the text and in the JSON."""
    import json
    import threading

    from imgrec_app.services.models import cached_serving_model, reading_model

    settings.IMGREC = {**settings.IMGREC, "TEXT_MODEL": None, "NEAR_DUPLICATE_SIMILARITY": 1.01, "TUNING_FOLDS": 2}
    early, _ = _split(demo_vectors)
    products = _add_products(make_product, early, demo_vectors)
    base = ServingModel.objects.get(modality="image").model_id
    before = json.loads(_evaluate("--json", "--no-tuning"))["similar"]
    assert before["vectors"] == {**before["vectors"], "model_id": base, "tuned_head": False, "in_sample": False}

    run, output = _tune_sync()
    assert run.is_active and ServingModel.objects.get(modality="image").model_id == run.model_id, output
    in_sample = _image_only_precision(products)  # the head's shelves on the products it learned
    assert in_sample > 0.95, in_sample

    after = json.loads(_evaluate("--json", "--no-tuning"))["similar"]
    assert after["vectors"]["model_id"] == base and after["vectors"]["serving_model_id"] == run.model_id
    assert after["vectors"]["tuned_head"] and not after["vectors"]["in_sample"]
    for method in ("image_only", "configured"):
        assert after["methods"][method]["precision"] == pytest.approx(before["methods"][method]["precision"])
    assert before["methods"]["image_only"]["precision"] < in_sample - 0.1, (before, in_sample)
    assert ServingModel.objects.get(modality="image").model_id == run.model_id  # nothing switched
    text = _evaluate()
    assert f"base vectors {base}; the serving head {run.model_id} is evaluated held-out below" in text
    assert "rows above are measured on its base vectors (untuned)" in text

    # The override is this context's only: another thread and the code after the block see the serving head.
    seen = []
    with reading_model(base, 1280):
        assert cached_serving_model() == (base, 1280)
        thread = threading.Thread(target=lambda: seen.append(cached_serving_model()))
        thread.start()
        thread.join()
    assert seen == [(run.model_id, run.dimensions)]
    assert cached_serving_model() == (run.model_id, run.dimensions)

    # Base vectors gone: the rows are the head's, in-sample, and both outputs say so.
    ProductVector.objects.filter(model_id=base).delete()
    gone = json.loads(_evaluate("--json", "--no-tuning"))["similar"]
    assert gone["vectors"]["in_sample"] and gone["vectors"]["model_id"] == run.model_id
    assert gone["vectors"]["note"].startswith("IN-SAMPLE")
    assert gone["methods"]["image_only"]["precision"] > 0.95
    text = _evaluate()
    assert "IN-SAMPLE: the serving tuned head" in text
