"""The loop, end to end: save an image → after commit a task → a real worker → a pgvector row."""

from __future__ import annotations

import numpy as np
import pytest

from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector, ServingModel
from imgrec_app.services.models import configured_model
from tests.conftest import make_image_bytes, upload, wait_for

pytestmark = [pytest.mark.worker]


def _ready(image_id: int) -> bool:
    return IndexedImage.objects.get(pk=image_id).status in ("ready", "failed")


def test_saved_image_is_embedded_by_a_real_worker(celery_worker, make_product, add_image):
    product = make_product("Red ball")
    pimg = add_image(product, make_image_bytes("JPEG", (640, 480)))
    tracked = IndexedImage.objects.get(source="imgrec_app.productimage.image", source_id=str(pimg.pk))
    assert tracked.object_id == str(product.pk)

    wait_for(lambda: _ready(tracked.pk))
    tracked.refresh_from_db()
    assert tracked.status == "ready", tracked.failure_detail

    ref = configured_model()
    assert ref.model_id.startswith("efficientnet_lite0:")
    emb = ImageEmbedding.objects.get(image=tracked, model_id=ref.model_id)
    vec = np.asarray(emb.vector)
    assert vec.shape == (1280,)
    assert np.all(np.isfinite(vec))
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-4)
    assert emb.file_hash == pimg.file_hash
    assert len(emb.labels) == 5

    pv = ProductVector.objects.get(object_id=str(product.pk), model_id=ref.model_id)
    assert np.linalg.norm(np.asarray(pv.vector)) == pytest.approx(1.0, abs=1e-4)
    assert ServingModel.objects.get(modality="image").model_id == ref.model_id


def test_host_image_field_is_indexed_too(celery_worker, make_product):
    """The demo's own Product.photo field is an image source: saving the product indexes it."""
    product = make_product("Green box", photo=upload("box.png", make_image_bytes("PNG", shape="box", color=(30, 160, 60))))
    tracked = IndexedImage.objects.get(source="catalog.product.photo", source_id=str(product.pk))
    wait_for(lambda: _ready(tracked.pk))
    tracked.refresh_from_db()
    assert tracked.status == "ready", tracked.failure_detail
    assert ProductVector.objects.filter(object_id=str(product.pk)).count() == 1
