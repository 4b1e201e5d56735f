"""Tests for the encoder's precision and decoder options: their model ids, bf16 refused where the
CPU has no native bf16, the bf16 forward pass, and ``encode_payloads`` (the torchvision decoder)."""

from __future__ import annotations

import numpy as np
import pytest

from imgrec_app.ml.encoder import Encoder
from imgrec_app.ml.hardware import BF16_FLAGS, cpu_flags, native_bf16_cpu
from imgrec_app.ml.registry import PrecisionUnsupported, get_backbone
from imgrec_app.ml.tensor_decode import Payload, prepare_payload
from tests.faults import backbones as fault
from tests.test_ml_tensor_decode import ALLOWED, BUDGET, encode, picture

torch = pytest.importorskip("torch")  # the torch-free CI job skips this module
pytestmark = pytest.mark.torch


def test_precision_and_decoder_are_part_of_the_model_id() -> None:
    spec = get_backbone("efficientnet_lite0")
    assert spec.with_options({}).model_id() == "efficientnet_lite0:imagenet1k-pypi0.1:prod1-gem-multi"
    crop = {"preprocess": "crop", "pooling": "avg"}
    assert spec.with_options(crop).model_id() == "efficientnet_lite0:imagenet1k-pypi0.1:p1"
    assert spec.with_options({"precision": "fp32", "decoder": "pillow"}) is spec
    assert spec.with_options({"precision": "bf16"}).model_id().endswith(":prod1-gem-multi-bf16")
    assert spec.with_options({**crop, "precision": "bf16"}).model_id().endswith(":p1-bf16")
    assert spec.with_options({**crop, "decoder": "torchvision"}).model_id().endswith(":p1-tv")
    both = spec.with_options({"decoder": "torchvision", "precision": "bf16", "pooling": "gem", "preprocess": "crop"})
    assert both.model_id().endswith(":p1-gem-tv-bf16")
    with pytest.raises(ValueError, match="precision"):
        spec.with_options({"precision": "fp8"})
    with pytest.raises(ValueError, match="decoder"):
        spec.with_options({"decoder": "opencv"})
    with pytest.raises(ValueError, match="'crop' recipe only"):
        spec.with_options({"decoder": "torchvision", "preprocess": "product"})
    with pytest.raises(ValueError, match="'crop' recipe only.*preprocess'\\] = 'crop'"):
        spec.with_options({"decoder": "torchvision"})  # Lite's default recipe is "product"


def test_native_bf16_follows_the_cpu_flags() -> None:
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo here")
    assert native_bf16_cpu() == any(f in flags for f in BF16_FLAGS)


def test_bf16_on_a_cpu_without_native_bf16_is_refused_clearly() -> None:
    spec = get_backbone(fault.NAME)
    if native_bf16_cpu():
        encoder = Encoder(spec, options={"precision": "bf16"}, device="cpu", amp=None)
        assert encoder.amp_dtype == torch.bfloat16
        return
    with pytest.raises(PrecisionUnsupported, match="avx512_bf16.*PRECISION 'fp32'"):
        Encoder(spec, options={"precision": "bf16"}, device="cpu", amp=None)


def test_bf16_forward_differs_slightly_from_fp32() -> None:
    """The bf16 path really runs in bfloat16 (so its vectors need their own id) and stays close
    to fp32.  Emulated here where the CPU has no native bf16: same arithmetic, slower."""
    spec = get_backbone(fault.NAME)
    fp32 = Encoder(spec, device="cpu", amp=None)
    bf16 = Encoder(spec, options={"precision": "bf16"}, device="cpu", amp=None, allow_emulated_bf16=True)
    assert bf16.model_id == fp32.model_id + "-bf16"
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    a, b = fp32.encode_arrays(arrays), bf16.encode_arrays(arrays)
    assert not a.errors and not b.errors
    assert not np.array_equal(a.vectors, b.vectors)
    np.testing.assert_allclose(np.linalg.norm(b.vectors, axis=1), 1.0, atol=1e-5)
    assert float((a.vectors * b.vectors).sum(axis=1).min()) > 0.99


def test_encode_payloads_embeds_device_decoded_jpegs_and_reports_bad_rows() -> None:
    spec = get_backbone(fault.NAME)
    tv = Encoder(spec, options={"decoder": "torchvision"}, device="cpu", amp=None)
    assert tv.decoder == "torchvision" and tv.model_id.endswith("-tv")
    files = [encode(picture(seed=i), "JPEG", quality=95) for i in range(3)] + [encode(picture(seed=9), "PNG")]
    payloads = [prepare_payload(f, allowed_formats=ALLOWED, max_pixels=BUDGET) for f in files]
    assert [p.jpeg is not None for p in payloads] == [True, True, True, False]
    broken = Payload(jpeg=b"\xff\xd8\xff\xe0 garbage \xff\xd9")
    result = tv.encode_payloads([payloads[0], broken, *payloads[1:]])
    assert set(result.errors) == {1}
    good = np.delete(result.vectors, 1, axis=0)
    np.testing.assert_allclose(np.linalg.norm(good, axis=1), 1.0, atol=1e-5)
    # The same pictures through the Pillow recipe: near, not equal (hence the "-tv" id).
    pillow = Encoder(spec, device="cpu", amp=None)
    from imgrec_app.ml.preprocess import load_rgb

    arrays = np.stack([pillow.preprocess(load_rgb(f, allowed_formats=ALLOWED, max_pixels=BUDGET)) for f in files])
    reference = pillow.encode_arrays(arrays).vectors
    cosines = (good * reference).sum(axis=1)
    assert cosines.min() > 0.99 and not np.array_equal(good, reference)
