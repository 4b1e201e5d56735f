"""Tests for imgrec_app.validators and the upload fields in imgrec_app.fields (no database)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image

from imgrec_app.fields import ProductImageField, ProductImageFormField
from imgrec_app.ml.preprocess import ImageInfo
from imgrec_app.validators import validate_product_image
from tests.test_ml_preprocess import (
    AVIF_HEADER,
    HEIC,
    REFUSED,
    SVG_LAUGHS,
    SVG_PLAIN,
    SVG_SCRIPT,
    encode,
    gif_canvas,
    png_header,
    upright_picture,
)


def imgrec(**overrides: Any) -> override_settings:
    """``override_settings`` for a few IMGREC keys, keeping the test settings' others."""
    return override_settings(IMGREC={**settings.IMGREC, **overrides})


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def code_for(file: Any) -> str:
    with pytest.raises(ValidationError) as info:
        validate_product_image(file)
    return str(info.value.code)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Every Pillow plugin outside the default allow-list replaced by a spy; returns its calls."""

    def install() -> list[str]:
        Image.init()
        calls: list[str] = []
        for fmt, (factory, accept) in list(Image.OPEN.items()):
            if fmt in ("JPEG", "PNG", "WEBP", "GIF"):
                continue

            def spy(*args: Any, _fmt: str = fmt) -> Any:
                calls.append(_fmt)
                raise AssertionError(f"the {_fmt} plugin ran")

            monkeypatch.setitem(Image.OPEN, fmt, (spy, spy))
        return calls

    return install


# --- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,name",
    [("JPEG", "a.jpg"), ("JPEG", "b.JPEG"), ("PNG", "c.png"), ("WEBP", "d.webp"), ("GIF", "e.gif")],
)
def test_valid_images_are_accepted(fmt: str, name: str) -> None:
    info = validate_product_image(upload(name, encode(upright_picture(), fmt)))
    assert info == ImageInfo(fmt, 96, 64, 1)


def test_validation_leaves_the_upload_readable_from_the_start() -> None:
    data = encode(upright_picture(), "PNG")
    file = upload("a.png", data)
    validate_product_image(file)
    assert file.read() == data


def test_a_closed_upload_is_reopened() -> None:
    file = ContentFile(encode(upright_picture(), "PNG"), name="a.png")
    file.close()
    assert validate_product_image(file).format == "PNG"


# --- 1. empty, not images, wrong names, refused formats -------------------------------------------


def test_zero_byte_upload_is_empty() -> None:
    assert code_for(upload("a.jpg", b"")) == "empty"


def test_text_named_png_is_not_an_image() -> None:
    assert code_for(upload("a.png", b"just some text, honestly\n")) == "not_an_image"


def test_png_named_txt_is_an_extension_mismatch() -> None:
    assert code_for(upload("a.txt", encode(upright_picture(), "PNG"))) == "extension_mismatch"


def test_jpeg_named_png_is_an_extension_mismatch() -> None:
    assert code_for(upload("a.png", encode(upright_picture(), "JPEG"))) == "extension_mismatch"


def test_image_without_extension_is_an_extension_mismatch() -> None:
    assert code_for(upload("photo", encode(upright_picture(), "JPEG"))) == "extension_mismatch"


def test_oversized_upload_is_too_large_before_reading() -> None:
    with imgrec(MAX_UPLOAD_SIZE=100):
        assert code_for(upload("a.png", encode(upright_picture(), "PNG"))) == "too_large"


@pytest.mark.parametrize("fmt", sorted(REFUSED))
def test_refused_format_renamed_jpg_is_unsupported_and_its_plugin_never_runs(
    fmt: str, spies: Callable[[], list[str]]
) -> None:
    calls = spies()
    assert code_for(upload("cute.jpg", REFUSED[fmt])) == "unsupported_format"
    assert calls == []


def test_allow_list_comes_from_settings() -> None:
    tiff = encode(upright_picture(), "TIFF")
    assert code_for(upload("a.tif", tiff)) == "unsupported_format"
    with imgrec(ALLOWED_FORMATS=["JPEG", "TIFF"]):
        assert validate_product_image(upload("a.tif", tiff)).format == "TIFF"


# --- 2, 3, 5. pixel budget ------------------------------------------------------------------------


def test_png_claiming_30000_squared_pixels_is_refused_fast() -> None:
    start = time.perf_counter()
    assert code_for(upload("big.png", png_header(30000, 30000))) == "too_many_pixels"
    assert time.perf_counter() - start < 1.0


def test_pixel_budget_comes_from_settings() -> None:
    data = png_header(5000, 5000)  # 25M: within the default 40M
    assert validate_product_image(upload("a.png", data)).width == 5000
    with imgrec(MAX_IMAGE_PIXELS=1_000_000):
        assert code_for(upload("a.png", data)) == "too_many_pixels"


def test_image_between_pillows_limits_is_refused_without_changing_pillow() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert code_for(upload("a.png", png_header(10000, 10000))) == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS == limit


def test_animated_gif_over_the_budget_in_frames_is_too_many_pixels() -> None:
    assert code_for(upload("a.gif", gif_canvas(4000, 4000, 3))) == "too_many_pixels"


def test_animated_webp_over_the_budget_in_frames_is_too_many_pixels() -> None:
    frames = [Image.new("RGB", (100, 100), (i * 80, 0, 0)) for i in range(3)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert validate_product_image(upload("a.webp", data)).frames == 3
    with imgrec(MAX_IMAGE_PIXELS=25_000):
        assert code_for(upload("a.webp", data)) == "too_many_pixels"


@pytest.mark.parametrize("size", [(1, 100000), (100000, 1)])
def test_extreme_aspect_ratio_is_accepted(size: tuple[int, int]) -> None:
    data = encode(Image.new("L", size, 128), "PNG")
    info = validate_product_image(upload("strip.png", data))
    assert (info.width, info.height) == size


# --- 6. truncated ---------------------------------------------------------------------------------


def test_truncated_jpeg_passes_header_validation() -> None:
    data = encode(upright_picture((256, 256)), "JPEG")
    assert validate_product_image(upload("cut.jpg", data[: len(data) // 2])).format == "JPEG"


# --- 8, 9. SVG, HEIC, AVIF ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "svg", [SVG_PLAIN, SVG_SCRIPT, SVG_LAUGHS], ids=["plain", "script", "laughs"]
)
@pytest.mark.parametrize("name", ["logo.svg", "logo.png"])
def test_svg_is_refused(svg: bytes, name: str) -> None:
    start = time.perf_counter()
    assert code_for(upload(name, svg)) in {"unsupported_format", "not_an_image"}
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("data,name", [(HEIC, "IMG_0001.HEIC"), (AVIF_HEADER, "a.avif")])
def test_heic_and_avif_are_unsupported_formats(data: bytes, name: str) -> None:
    assert code_for(upload(name, data)) == "unsupported_format"


# --- fields ---------------------------------------------------------------------------------------


def test_form_field_accepts_a_valid_image_and_records_what_it_is() -> None:
    field = ProductImageFormField()
    cleaned = field.clean(upload("a.png", encode(upright_picture(), "PNG")))
    assert cleaned.image_info == ImageInfo("PNG", 96, 64, 1)
    assert cleaned.content_type == "image/png"


@pytest.mark.parametrize(
    "name,data,code",
    [
        ("a.jpg", REFUSED["PSD"], "unsupported_format"),
        ("a.png", b"hello", "not_an_image"),
        ("a.png", encode(upright_picture(), "JPEG"), "extension_mismatch"),
    ],
)
def test_form_field_rejects_with_the_validator_code(name: str, data: bytes, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        ProductImageFormField().clean(upload(name, data))
    assert info.value.code == code


def test_form_field_rejects_an_empty_upload() -> None:
    with pytest.raises(ValidationError) as info:
        ProductImageFormField().clean(upload("a.png", b""))
    assert info.value.code == "empty"


def test_model_field_uses_the_product_image_form_field() -> None:
    assert isinstance(ProductImageField().formfield(), ProductImageFormField)


def test_model_field_reads_dimensions_from_the_allow_listed_header() -> None:
    from imgrec_app.models import ProductImage

    image = ProductImage(image=upload("a.png", encode(upright_picture(), "PNG")))
    assert (image.width, image.height) == (96, 64)


def test_model_field_dimensions_never_run_a_refused_decoder(spies: Callable[[], list[str]]) -> None:
    from imgrec_app.models import ProductImage

    calls = spies()
    image = ProductImage(image=upload("a.jpg", REFUSED["PSD"]))
    assert (image.width, image.height) == (None, None)
    assert calls == []


def test_model_field_dimensions_keep_the_stream_position() -> None:
    from imgrec_app.models import ProductImage

    data = encode(upright_picture(), "PNG")
    file = upload("a.png", data)
    image = ProductImage(image=file)
    assert image.image.width == 96
    assert file.read() == data


def test_validator_runs_on_a_plain_stream_with_a_name() -> None:
    stream = io.BytesIO(encode(upright_picture(), "PNG"))
    stream.name = "folder/a.png"  # type: ignore[attr-defined]
    assert validate_product_image(stream).format == "PNG"
