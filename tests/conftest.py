"""Shared fixtures: a real Celery worker on the real Redis, catalogue factories, images made
with Pillow."""

from __future__ import annotations

import io
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw

from imgrec_app.conf import DEFAULTS, imgrec_settings

CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "shop_demo" / "catalog" / "data"
# The demo's queue names (imgrec's defaults).  The session worker consumes them besides the test
# suite's, so the browser test can serve its pages with them and its screenshots show what a
# shop shows; the test Redis database (IMGREC_TEST_REDIS_URL) keeps them apart from a demo's.
DEMO_QUEUES: dict[str, str] = dict(DEFAULTS["QUEUES"])


# --- broker and worker ---------------------------------------------------------------------------


def _purge(app: Any) -> None:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        for queue in {*imgrec_settings.QUEUES.values(), *DEMO_QUEUES.values()}:
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:
                pass


@pytest.fixture(scope="session")
def celery_app_real() -> Any:
    """The demo shop's Celery app, pointed at the test Redis database; fails loudly without Redis."""
    from shop_demo.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, timeout=2)
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis is not reachable at {app.conf.broker_url}: {exc}. Run `make redis`.")
    return app


# The session worker's app once it runs (see _settle_worker_before_flush).
_RUNNING: dict[str, Any] = {}


def _settle(app: Any, timeout: float = 60) -> None:
    """Purge imgrec's queues and let the worker finish what it already took."""
    from celery.worker import state

    _purge(app)
    deadline = time.monotonic() + timeout
    while (state.active_requests or state.reserved_requests) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _settle_worker_before_flush(request: Any) -> Iterator[None]:
    """A transactional test's own tasks must not run while its tables are truncated.

    A test that saves products in a real transaction publishes tasks after commit (text vectors,
    image indexing) even when it does not ask for ``celery_worker``; once the session worker runs
    (an earlier test started it), it takes them at once. Left running into the test's teardown,
    such a task (``FOR UPDATE`` on its claim rows) deadlocks with the flush's ``TRUNCATE``
    (measured: ``DeadlockDetected`` in ``test_shelves_read_from_the_replica_alias``'s teardown).
    This fixture is set up after the database fixture, so it tears down before the flush.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if transactional:
        request.getfixturevalue("_django_db_helper")
    yield
    if transactional and "app" in _RUNNING:
        _settle(_RUNNING["app"])


@pytest.fixture(scope="session")
def _session_worker(celery_app_real: Any, django_db_blocker: Any) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker

    _purge(celery_app_real)
    _RUNNING["app"] = celery_app_real
    with start_worker(
        celery_app_real,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=[*imgrec_settings.QUEUES.values(), *DEMO_QUEUES.values()],
        shutdown_timeout=30,
    ) as worker:
        yield worker


@pytest.fixture
def celery_worker(_session_worker: Any, celery_app_real: Any, transactional_db: Any) -> Iterator[Any]:
    """A real in-process Celery worker consuming imgrec's queues on the real Redis."""
    from celery.worker import state
    from django.contrib.contenttypes.models import ContentType

    # Each transactional test recreates content types: forget ids cached by an earlier test.
    ContentType.objects.clear_cache()
    _purge(celery_app_real)
    yield _session_worker
    # Let the task in flight finish so it cannot leak into the next test's database.
    _purge(celery_app_real)
    deadline = time.monotonic() + 60
    while state.active_requests and time.monotonic() < deadline:
        time.sleep(0.1)
    ContentType.objects.clear_cache()


def wait_for(predicate: Callable[[], Any], *, timeout: float = 120, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy; fail with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting; last value: {value!r}")


# --- images ---------------------------------------------------------------------------------------


def make_image_bytes(
    fmt: str = "JPEG",
    size: tuple[int, int] = (320, 240),
    color: tuple[int, int, int] = (200, 40, 40),
    mode: str = "RGB",
    shape: str = "circle",
) -> bytes:
    """A small picture (a shape on a background) encoded in memory."""
    img = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        draw.rectangle(box, fill=color)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def catalogue_image(category: str, index: int = 0) -> Path:
    """A real photo-like image from the committed demo catalogue."""
    files = sorted((CATALOGUE_DIR / "images" / category).glob("*.png"))
    if len(files) <= index:
        pytest.skip(f"demo catalogue has no image {index} in {category}")
    return files[index]


# --- catalogue factories --------------------------------------------------------------------------


@pytest.fixture
def make_category(db: Any) -> Callable[..., Any]:
    from shop_demo.catalog.models import Category

    def make(slug: str = "fruit", name: str | None = None) -> Category:
        return Category.objects.get_or_create(slug=slug, defaults={"name": name or slug.title()})[0]

    return make


@pytest.fixture
def make_product(db: Any, make_category: Callable[..., Any]) -> Callable[..., Any]:
    from shop_demo.catalog.models import Product

    counter = {"n": 0}

    def make(
        name: str | None = None,
        *,
        category: str = "fruit",
        photo: SimpleUploadedFile | None = None,
        stock: int = 5,
        published: bool = True,
        price: str = "9.90",
    ) -> Product:
        counter["n"] += 1
        n = counter["n"]
        return Product.objects.create(
            slug=f"product-{n}-{time.monotonic_ns()}",
            name=name or f"Product {n}",
            price=Decimal(price),
            stock=stock,
            published=published,
            category=make_category(category),
            photo=photo,
        )

    return make


@pytest.fixture
def add_image(db: Any) -> Callable[..., Any]:
    """Attach an uploaded image to a product through imgrec's own ProductImage model."""
    from django.contrib.contenttypes.models import ContentType

    from imgrec_app.models import ProductImage

    def add(product: Any, data: bytes | None = None, name: str = "photo.jpg", **kwargs: Any) -> ProductImage:
        return ProductImage.objects.create(
            content_type=ContentType.objects.get_for_model(product),
            object_id=str(product.pk),
            image=upload(name, data if data is not None else make_image_bytes()),
            **kwargs,
        )

    return add


@pytest.fixture(autouse=True)
def _fresh_shelf_cache() -> Iterator[None]:
    """Every test starts with an empty cache (the shelf cache lives in it) and forgets the
    serving model this process cached: ids and rows of earlier tests' databases mean nothing."""
    from django.core.cache import caches

    from imgrec_app.services.models import forget_serving_models

    for cache in caches.all(initialized_only=True):
        cache.clear()
    forget_serving_models()
    yield


# --- which tests need torch (deselected by scripts/ci-torch-free with -m "not torch") ------------

# Whole modules: model inference, the embedding pipeline and worker, training (scikit-learn).
_TORCH_MODULES = {
    "test_ml_encoder",
    "test_pipeline",
    "test_end_to_end",
    "test_browser",
    "test_reliability_faults",
    "test_evaluation",
    "test_ml_finetune",  # fine-tunes EfficientNet-Lite's last blocks (torch)
    "test_tuning_learned",  # trains heads; demo_vectors and MiniLM embed
}
# Single tests elsewhere that embed (search by photo, --sync re-index) or train a classifier.
_TORCH_TESTS = {
    "test_search_by_photo_finds_the_product_and_stores_nothing",
    "test_a_catalogue_photo_searched_again_finds_itself_with_the_same_vector",  # embeds in-process
    "test_retrain_and_apply_a_suggestion",
    "test_unusual_but_valid_images_are_accepted_and_embedded_like_the_picture",
    "test_truncated_jpeg_uploaded_through_the_api_fails_once_in_the_worker",
    # tests/test_ml_variants.py: each builds an encoder and embeds (the model-id tests do not)
    "test_the_encoder_reports_the_specs_model_id",
    "test_the_encoder_preprocesses_by_its_recipe",
    "test_pooling_variants_give_unit_vectors_of_the_backbones_size",
    "test_gem_differs_from_average_pooling_but_keeps_the_labels",
    "test_flip_averaging_makes_a_picture_and_its_mirror_image_one_vector",
    "test_lite1_and_lite2_load_offline_and_embed_at_their_own_size",
    # tests/test_tuning.py: torch training itself, and the runs over the demo catalogue's vectors
    # (its demo_vectors fixture embeds them); the data and settings checks do not
    "test_numpy_serving_matches_torch_training",
    "test_tuning_improves_held_out_shelves_and_new_uploads_get_tuned_vectors",
    "test_switch_and_rollback_keep_shelves_served",
    "test_bad_runs_refuse_and_change_nothing",
    "test_a_run_that_does_not_help_is_not_activated",
    "test_imgrec_evaluate_measures_similar_products_on_base_vectors_while_a_head_serves",
    "test_the_classifier_learns_from_the_base_vectors_while_a_head_serves",  # demo_vectors embeds
    # tests/test_ml_variants.py: the multi-layer encoder's own forward pass
    "test_multi_layer_vectors_are_the_pooled_vector_and_the_tapped_blocks_inputs",
    "test_lite2_multi_layer_vectors_have_the_declared_size",
    # tests/test_taste_simulation.py: the evaluation catalogue fixture (tests/test_evaluation.py) embeds
    "test_evaluation_runs_on_taste_shoppers_with_background_traffic",
    "test_command_takes_the_shopper_model_and_refuses_an_unknown_one",
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if (
            module in _TORCH_MODULES
            or item.originalname in _TORCH_TESTS
            or item.get_closest_marker("worker") is not None
        ):
            item.add_marker(pytest.mark.torch)
