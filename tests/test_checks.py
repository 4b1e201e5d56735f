"""imgrec_app.checks: one test per check id, each under ``override_settings(IMGREC=...)``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.management import call_command
from django.test import override_settings

from imgrec_app.checks import check_settings
from imgrec_app.checks_services import check_database

BASE: dict[str, Any] = dict(django_settings.IMGREC)


def run(**overrides: Any) -> list[CheckMessage]:
    """``check_settings()`` with the test settings' IMGREC plus ``overrides``."""
    with override_settings(IMGREC={**BASE, **overrides}):
        return check_settings()


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id for m in messages]


def only(messages: list[CheckMessage], check_id: str) -> CheckMessage:
    """The one message, asserting it has ``check_id``, an Error level (or Warning) and a hint."""
    assert ids(messages) == [check_id], [str(m) for m in messages]
    message = messages[0]
    assert isinstance(message, Warning if ".W" in check_id else Error)
    assert message.hint, f"{check_id} needs a hint"
    return message


# --- clean with the real settings ------------------------------------------------------------------


def test_test_settings_pass_every_check() -> None:
    assert check_settings() == []


def test_manage_py_check_is_clean() -> None:
    out = io.StringIO()
    call_command("check", stdout=out, stderr=io.StringIO())
    assert "System check identified no issues" in out.getvalue()


@pytest.mark.django_db
def test_manage_py_check_with_the_database_is_clean() -> None:
    out = io.StringIO()
    call_command("check", databases=["default"], stdout=out, stderr=io.StringIO())
    assert "System check identified no issues" in out.getvalue()


# --- settings checks -------------------------------------------------------------------------------


def test_e001_imgrec_must_be_a_dict() -> None:
    with override_settings(IMGREC=["catalog.Product"]):
        messages = check_settings()
    only(messages, "imgrec_app.E001")


def test_w001_unknown_key() -> None:
    message = only(run(BATCHSIZE=8), "imgrec_app.W001")
    assert "'BATCHSIZE'" in message.msg
    assert "BATCH_SIZE" in message.hint


def test_e002_product_model_is_required() -> None:
    with override_settings(IMGREC={k: v for k, v in BASE.items() if k != "PRODUCT_MODEL"}):
        messages = [m for m in check_settings() if m.id == "imgrec_app.E002"]
    assert len(messages) == 1 and "is not set" in messages[0].msg


@pytest.mark.parametrize("label", ["catalog.Nope", "nope.Product", "catalog", 42])
def test_e002_product_model_must_be_installed(label: Any) -> None:
    messages = [m for m in run(PRODUCT_MODEL=label) if m.id == "imgrec_app.E002"]
    assert len(messages) == 1 and "not an installed model" in messages[0].msg


@pytest.mark.parametrize("name", ["resnet9000", ["efficientnet_lite0"]])
def test_e003_backbone_must_be_registered(name: Any) -> None:
    message = only(run(BACKBONE=name), "imgrec_app.E003")
    assert "efficientnet_lite0" in message.hint


def test_e003_backbone_options_must_be_a_dict() -> None:
    only(run(BACKBONE_OPTIONS=["weights_path"]), "imgrec_app.E003")


@pytest.mark.parametrize("options, word", [({"preprocess": "stretch"}, "preprocess"), ({"pooling": "max"}, "pooling")])
def test_e003_backbone_recipe_options_must_be_known(options: dict, word: str) -> None:
    message = only(run(BACKBONE_OPTIONS=options), "imgrec_app.E003")
    assert word in message.msg
    assert run(BACKBONE_OPTIONS={"preprocess": "product", "pooling": "gem+flip"}) == []
    assert run(BACKBONE_OPTIONS={"preprocess": "product", "pooling": "gem+multi"}) == []


def test_e003_multi_layer_pooling_needs_a_backbone_that_has_it() -> None:
    message = only(run(BACKBONE="resnet18", BACKBONE_OPTIONS={"pooling": "avg+multi"}), "imgrec_app.E003")
    assert "no multi-layer features" in message.msg


def test_e004_weights_file_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    message = only(run(BACKBONE_OPTIONS={"weights_path": str(missing)}), "imgrec_app.E004")
    assert str(missing) in message.msg
    present = tmp_path / "weights.pth"
    present.write_bytes(b"not checked here")
    assert run(BACKBONE_OPTIONS={"weights_path": str(present)}) == []


def test_e005_recommendable_products_must_import() -> None:
    message = only(run(RECOMMENDABLE_PRODUCTS="shop_demo.catalog.rules.nope"), "imgrec_app.E005")
    assert "RECOMMENDABLE_PRODUCTS" in message.msg


@pytest.mark.parametrize(
    "category",
    ["shop_demo.catalog.rules.nope", "categroy", 3],
    ids=["dotted-path", "field-typo", "not-a-string"],
)
def test_e005_product_category_must_resolve(category: Any) -> None:
    message = only(run(PRODUCT_CATEGORY=category), "imgrec_app.E005")
    assert "PRODUCT_CATEGORY" in message.msg


@pytest.mark.parametrize("category", ["category", "category_id", None, ""])
def test_product_category_accepts_fields_and_none(category: Any) -> None:
    assert run(PRODUCT_CATEGORY=category) == []


@pytest.mark.parametrize(
    "sources",
    [
        {"model": "catalog.Product", "field": "photo"},
        [{"model": "catalog.Product"}],
        [{"model": "catalog.Nope", "field": "photo", "product": "self"}],
        [{"model": "catalog.Product", "field": "nope", "product": "self"}],
        [{"model": "catalog.Product", "field": "photo", "product": "nope"}],
        [{"model": "catalog.Product", "field": "name", "product": "self"}],
    ],
    ids=["not-a-list", "no-field", "unknown-model", "unknown-field", "unknown-product-field", "not-a-file-field"],
)
def test_e006_image_sources(sources: Any) -> None:
    only(run(IMAGE_SOURCES=sources), "imgrec_app.E006")


@pytest.mark.parametrize("queues", [{"embed": "a"}, ["imgrec.embed", "imgrec.light"]])
def test_e007_queues(queues: Any) -> None:
    only(run(QUEUES=queues), "imgrec_app.E007")


@pytest.mark.parametrize(
    "key,value",
    [
        ("BATCH_SIZE", 0),
        ("BATCH_SIZE", "32"),
        ("TASK_BATCH_SIZE", True),
        ("MAX_ATTEMPTS", -1),
        ("STUCK_AFTER", 1.5),
        ("REPUBLISH_AFTER", -1),
        ("MAX_UPLOAD_SIZE", None),
        ("MAX_IMAGE_PIXELS", 0),
        ("DECODE_WORKERS", 0),
        ("TOP_LABELS", -1),
        ("TASK_MAX_RETRIES", -1),
        ("TORCH_THREADS", 0),
        ("MAX_LIMIT", 0),
        ("HNSW_EF_SEARCH", "100"),
        ("DEDUPE_SECONDS", -5),
    ],
)
def test_e008_integers(key: str, value: Any) -> None:
    message = only(run(**{key: value}), "imgrec_app.E008")
    assert key in message.msg


@pytest.mark.parametrize(
    "key,value",
    [("TOP_LABELS", 0), ("TASK_MAX_RETRIES", 0), ("TORCH_THREADS", None), ("DEDUPE_SECONDS", 0)],
)
def test_e008_allows_zero_or_none_where_meaningful(key: str, value: Any) -> None:
    assert run(**{key: value}) == []


@pytest.mark.parametrize("formats", [["JPEG", "XCF"], "JPEG", [None]])
def test_e009_allowed_formats(formats: Any) -> None:
    only(run(ALLOWED_FORMATS=formats), "imgrec_app.E009")


def test_e010_model_switch() -> None:
    only(run(MODEL_SWITCH="sometimes"), "imgrec_app.E010")


def test_e011_cuda_amp() -> None:
    only(run(CUDA_AMP="fp8"), "imgrec_app.E011")


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cpu\n", "", None])
def test_e012_device(device: Any) -> None:
    only(run(DEVICE=device), "imgrec_app.E012")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_e012_accepts_devices(device: str) -> None:
    assert run(DEVICE=device) == []


# --- database checks (manage.py check --database default) -----------------------------------------


def test_database_checks_run_only_when_asked() -> None:
    assert check_database() == []
    assert check_database(databases=["other"]) == []


def test_e020_needs_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connections

    monkeypatch.setattr(type(connections["default"]), "vendor", "sqlite")
    only(check_database(databases=["default"]), "imgrec_app.E020")


def _store_vector(model_id: str, vector: list[float], object_id: str = "1") -> None:
    from django.contrib.contenttypes.models import ContentType

    from imgrec_app.models import ProductVector
    from shop_demo.catalog.models import Product

    ProductVector.objects.create(
        content_type=ContentType.objects.get_for_model(Product),
        object_id=object_id,
        model_id=model_id,
        vector=vector,
    )


@pytest.mark.django_db
def test_e021_stored_vectors_must_fit_the_backbone() -> None:
    from imgrec_app.services.models import configured_model

    ref = configured_model()
    _store_vector(ref.model_id, [0.6, 0.8, 0.0])
    message = only(check_database(databases=["default"]), "imgrec_app.E021")
    assert ref.model_id in message.msg and str(ref.dim) in message.msg


@pytest.mark.django_db
def test_e021_ignores_fitting_vectors_and_other_models() -> None:
    from imgrec_app.services.models import configured_model

    ref = configured_model()
    _store_vector(ref.model_id, [1.0] + [0.0] * (ref.dim - 1))
    _store_vector("some_other_model:v1:p1", [0.6, 0.8, 0.0], object_id="2")
    assert check_database(databases=["default"]) == []


@pytest.mark.parametrize(
    "weights",
    [
        "interest",
        {"interest": -1.0},
        {"interest": "1"},
        {"popularity": 1.0},
        {"interest": 0, "coview": 0, "category": 0},
        {"interest": float("nan")},
    ],
)
def test_e045_foryou_weights(weights: Any) -> None:
    only(run(FORYOU_WEIGHTS=weights), "imgrec_app.E045")


def test_e045_partial_foryou_weights_are_fine() -> None:
    assert "imgrec_app.E045" not in ids(run(FORYOU_WEIGHTS={"category": 2.0, "recency": 0}))


# --- PRECISION / DECODER (issue 12, pipeline) -----------------------------------------------------


def test_e053_unknown_precision() -> None:
    assert "fp8" in only(run(PRECISION="fp8"), "imgrec_app.E053").msg


def test_e054_unknown_decoder_or_one_the_recipe_cannot_use() -> None:
    assert "opencv" in only(run(DECODER="opencv"), "imgrec_app.E054").msg
    message = only(run(DECODER="torchvision", BACKBONE_OPTIONS={"preprocess": "pad"}), "imgrec_app.E054")
    assert "'crop' recipe only" in message.msg
    # EfficientNet-Lite's default recipe is "product": the decoder needs "crop" named.
    default = only(run(DECODER="torchvision"), "imgrec_app.E054")
    assert "'product'" in default.msg and "BACKBONE_OPTIONS['preprocess'] = 'crop'" in default.hint
    assert run(DECODER="torchvision", BACKBONE_OPTIONS={"preprocess": "crop"}) == []


def test_w053_bf16_on_a_cpu_without_native_bf16() -> None:
    from imgrec_app.ml.hardware import native_bf16_cpu

    if native_bf16_cpu():
        assert run(PRECISION="bf16", DEVICE="cpu") == []
    else:
        assert "no native bfloat16" in only(run(PRECISION="bf16", DEVICE="cpu"), "imgrec_app.W053").msg
    assert run(PRECISION="bf16", DEVICE="cuda") == []  # a GPU worker decides for itself


@pytest.mark.parametrize("timeout", [0, -1, 120.5, True, "5", None, float("nan"), float("inf")])
def test_e040_search_worker_timeout_in_range(timeout: Any) -> None:
    message = only(run(SEARCH_WORKER_TIMEOUT=timeout), "imgrec_app.E040")
    assert "SEARCH_WORKER_TIMEOUT" in message.msg and "(0, 120]" in message.msg


@pytest.mark.parametrize("timeout", [0.5, 1, 120])
def test_e040_accepts_timeouts_in_range(timeout: float) -> None:
    assert run(SEARCH_WORKER_TIMEOUT=timeout) == []
