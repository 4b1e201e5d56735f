"""The indexing pipeline with the PRECISION and DECODER settings: real database, real (tiny)
backbone, on CPU — the torchvision decoder runs the code a GPU worker runs, on the CPU device."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile

from imgrec_app.ml.encoder import clear_encoders
from imgrec_app.ml.hardware import native_bf16_cpu
from imgrec_app.ml.registry import PrecisionUnsupported
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector
from imgrec_app.services import indexing
from imgrec_app.services.models import configured_model
from tests.faults import backbones as fault
from tests.test_ml_preprocess import oriented_jpeg
from tests.test_ml_tensor_decode import encode, picture

pytest.importorskip("torch")  # the torch-free CI job skips this module
pytestmark = pytest.mark.torch

Status = IndexedImage.Status


@pytest.fixture
def tiny(settings: Any) -> Any:
    """Index with the tiny ``imgrec_fault`` backbone; call with IMGREC keys to change them."""

    def use(**overrides: Any) -> None:
        base = {"BACKBONE": fault.NAME, "BACKBONE_OPTIONS": {}, "TEXT_MODEL": None, "BATCH_SIZE": 4}
        settings.IMGREC = {**settings.IMGREC, **base, **overrides}
        clear_encoders()

    use()
    yield use
    clear_encoders()


def tracked(product: Any) -> IndexedImage:
    return IndexedImage.objects.get(source="catalog.product.photo", source_id=str(product.pk))


def test_precision_and_decoder_settings_give_their_own_model_ids(tiny: Any) -> None:
    default = configured_model()
    assert default.model_id == f"{fault.NAME}:fault1:p1" and default.options == ()
    tiny(PRECISION="bf16")
    assert configured_model().model_id == f"{fault.NAME}:fault1:p1-bf16"
    tiny(DECODER="torchvision", PRECISION="bf16")
    assert configured_model().model_id == f"{fault.NAME}:fault1:p1-tv-bf16"


@pytest.mark.django_db
def test_torchvision_decoder_indexes_a_mixed_batch(tiny: Any, make_product: Any) -> None:
    """JPEGs decoded by torchvision in one call, a PNG and an EXIF-rotated JPEG by Pillow, a cut
    JPEG failed with the same reason as with Pillow; vectors stored under the "-tv" model id,
    products on shelves."""
    tiny(DECODER="torchvision", TASK_BATCH_SIZE=16)
    good = encode(picture((400, 300)), "JPEG", quality=90)
    files = {
        "jpeg": (good, "a.jpg"),
        "jpeg2": (encode(picture((300, 500), seed=3), "JPEG"), "b.jpg"),
        "png": (encode(picture(seed=4), "PNG"), "c.png"),
        "rotated": (oriented_jpeg(picture((320, 200), seed=5), 6), "d.jpg"),
        "cut": (good[: len(good) // 2], "e.jpg"),
    }
    products = {k: make_product(photo=ContentFile(data, name=name)) for k, (data, name) in files.items()}
    ids = [tracked(p).pk for p in products.values()]
    summary = indexing.process_images(ids, greedy=False)
    assert (summary.claimed, summary.ready, summary.failed) == (5, 4, {"truncated": 1})
    model_id = configured_model().model_id
    assert model_id.endswith(":p1-tv")
    cut = tracked(products["cut"])
    assert cut.status == Status.FAILED and cut.failure_reason == "truncated"
    for key in ("jpeg", "jpeg2", "png", "rotated"):
        image = tracked(products[key])
        assert image.status == Status.READY, key
        assert ImageEmbedding.objects.filter(image=image, model_id=model_id).count() == 1
        assert ProductVector.objects.filter(object_id=str(products[key].pk), model_id=model_id).exists()
    assert not ImageEmbedding.objects.exclude(model_id=model_id).filter(image_id__in=ids).exists()


@pytest.mark.django_db
def test_bf16_without_native_support_claims_nothing(tiny: Any, make_product: Any) -> None:
    """A CPU worker without native bf16 refuses before claiming: the image stays pending with
    no attempt counted, for a worker that can (or a PRECISION change) to take."""
    if native_bf16_cpu():
        pytest.skip("this CPU has native bf16: nothing is refused")
    tiny(PRECISION="bf16", DEVICE="cpu")
    product = make_product(photo=ContentFile(encode(picture(), "PNG"), name="p.png"))
    image = tracked(product)
    with pytest.raises(PrecisionUnsupported):
        indexing.process_images([image.pk])
    image.refresh_from_db()
    assert image.status == Status.PENDING and image.attempts == 0
    assert not ImageEmbedding.objects.filter(image=image).exists()
