"""imgrec_app.conf: defaults, live overrides, unknown keys and dotted-path settings."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.test import override_settings

from imgrec_app.conf import DEFAULTS, ImgrecSettings, imgrec_settings


def test_defaults_fill_in_what_the_host_leaves_out(settings: Any) -> None:
    settings.IMGREC = {"PRODUCT_MODEL": "catalog.Product"}
    for key, default in DEFAULTS.items():
        if key != "PRODUCT_MODEL":
            assert imgrec_settings.raw(key) == default, key
    assert imgrec_settings.PRODUCT_MODEL == "catalog.Product"
    assert imgrec_settings.BACKBONE == "efficientnet_lite0"
    assert imgrec_settings.QUEUES == {"embed": "imgrec.embed", "light": "imgrec.light"}


def test_without_an_imgrec_setting_everything_is_default(settings: Any) -> None:
    del settings.IMGREC
    assert imgrec_settings.user_settings == {}
    assert imgrec_settings.BATCH_SIZE == DEFAULTS["BATCH_SIZE"]


def test_override_settings_takes_effect_immediately() -> None:
    before = imgrec_settings.BATCH_SIZE
    with override_settings(IMGREC={"BATCH_SIZE": 7}):
        assert imgrec_settings.BATCH_SIZE == 7
        with override_settings(IMGREC={"BATCH_SIZE": 3}):
            assert imgrec_settings.BATCH_SIZE == 3
        assert imgrec_settings.BATCH_SIZE == 7
    assert imgrec_settings.BATCH_SIZE == before


def test_the_settings_fixture_takes_effect_immediately(settings: Any) -> None:
    settings.IMGREC = {**settings.IMGREC, "MODEL_SWITCH": "manual"}
    assert imgrec_settings.MODEL_SWITCH == "manual"


def test_a_non_dict_setting_reads_as_defaults(settings: Any) -> None:
    # imgrec_app.E001 reports it; reading must not crash meanwhile.
    settings.IMGREC = ["PRODUCT_MODEL"]
    assert imgrec_settings.user_settings == {}
    assert imgrec_settings.TOP_LABELS == DEFAULTS["TOP_LABELS"]


def test_unknown_key_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Invalid imgrec setting: 'NOPE'"):
        imgrec_settings.NOPE  # noqa: B018
    with pytest.raises(AttributeError, match="Invalid imgrec setting: 'NOPE'"):
        imgrec_settings.raw("NOPE")
    assert not hasattr(imgrec_settings, "NOPE")


def test_the_accessor_can_be_copied() -> None:
    # copy/pickle probe attributes before __init__ ran; that must not recurse.
    clone = copy.deepcopy(ImgrecSettings())
    assert clone.BATCH_SIZE == imgrec_settings.BATCH_SIZE


def test_import_strings_are_resolved(settings: Any) -> None:
    from shop_demo.catalog.rules import recommendable_products

    settings.IMGREC = {**settings.IMGREC, "RECOMMENDABLE_PRODUCTS": "shop_demo.catalog.rules.recommendable_products"}
    assert imgrec_settings.RECOMMENDABLE_PRODUCTS is recommendable_products
    assert imgrec_settings.raw("RECOMMENDABLE_PRODUCTS") == "shop_demo.catalog.rules.recommendable_products"


def test_callables_and_none_pass_through(settings: Any) -> None:
    def rule() -> None:
        return None

    settings.IMGREC = {**settings.IMGREC, "RECOMMENDABLE_PRODUCTS": rule}
    assert imgrec_settings.RECOMMENDABLE_PRODUCTS is rule
    settings.IMGREC = {**settings.IMGREC, "RECOMMENDABLE_PRODUCTS": None}
    assert imgrec_settings.RECOMMENDABLE_PRODUCTS is None


@pytest.mark.parametrize(
    "path",
    ["shop_demo.catalog.rules.no_such_rule", "no_such_module.rule", "notadottedpath"],
)
def test_bad_import_string_names_the_setting(settings: Any, path: str) -> None:
    settings.IMGREC = {**settings.IMGREC, "RECOMMENDABLE_PRODUCTS": path}
    with pytest.raises(ImportError) as info:
        imgrec_settings.RECOMMENDABLE_PRODUCTS  # noqa: B018
    message = str(info.value)
    assert "IMGREC['RECOMMENDABLE_PRODUCTS']" in message
    assert repr(path) in message


def test_device_falls_back_to_the_imgrec_device_environment_variable(settings, monkeypatch):
    """Issue 14, point 4: ``IMGREC_DEVICE=cuda celery ... worker`` works in any host project."""
    from imgrec_app.conf import imgrec_settings

    monkeypatch.setenv("IMGREC_DEVICE", "cuda:1")
    settings.IMGREC = {k: v for k, v in settings.IMGREC.items() if k != "DEVICE"}
    assert imgrec_settings.DEVICE == "cuda:1"
    settings.IMGREC = {**settings.IMGREC, "DEVICE": "cpu"}  # the setting wins over the variable
    assert imgrec_settings.DEVICE == "cpu"
    monkeypatch.delenv("IMGREC_DEVICE")
    settings.IMGREC = {k: v for k, v in settings.IMGREC.items() if k != "DEVICE"}
    assert imgrec_settings.DEVICE == "auto"
