"""Reliability, bad inputs (issue 7, cases 1–15) on the two upload paths: the product admin's
imgrec inline and ``POST /api/imgrec/products/<id>/images/``.

The decoders themselves are tested in tests/test_ml_preprocess.py and tests/test_validators.py;
here every bad file goes through a whole request and we check what is left behind: a clear
error, no ProductImage row, no IndexedImage, no file under MEDIA_ROOT, no task published, no
decoder of a refused format run, and Pillow's global limits unchanged.  Files that are accepted
go on through the worker's code (``process_images``, real weights, real pgvector).
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from PIL import Image

from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage
from imgrec_app.services import indexing
from tests.conftest import make_image_bytes, wait_for
from tests.faults.http import multipart
from tests.test_ml_preprocess import (  # noqa: F401  (open_spies is a fixture)
    ALLOWED,
    AVIF_HEADER,
    HEIC,
    REFUSED,
    SVG_LAUGHS,
    SVG_PLAIN,
    SVG_SCRIPT,
    encode,
    gif_canvas,
    open_spies,
    oriented_jpeg,
    png_header,
    upright_picture,
)

pytestmark = pytest.mark.django_db

SOURCE = "imgrec_app.productimage.image"
INLINE_PREFIX = "imgrec_app-productimage-content_type-object_id"
STORED_NAME = re.compile(r"^imgrec/products/[0-9a-f]{32}\.(jpg|jpeg|png|webp|gif|img)$")


# --- building requests by hand (so filenames reach Django exactly as a hostile client sends them)


def _name(filename: str | bytes) -> bytes:
    return filename if isinstance(filename, bytes) else filename.encode()


def post_admin(
    client: Client, product: Any, files: list[tuple[str | bytes, bytes]], extra: dict[str, str] | None = None
) -> Any:
    """Save the product's admin change form with one inline row per file."""
    fields = {
        "name": product.name,
        "slug": product.slug,
        "description": product.description,
        "price": str(product.price),
        "stock": str(product.stock),
        "published": "on",
        "category": str(product.category_id),
        f"{INLINE_PREFIX}-TOTAL_FORMS": str(len(files)),
        f"{INLINE_PREFIX}-INITIAL_FORMS": "0",
        f"{INLINE_PREFIX}-MIN_NUM_FORMS": "0",
        f"{INLINE_PREFIX}-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for i in range(len(files)):
        fields[f"{INLINE_PREFIX}-{i}-alt_text"] = ""
        fields[f"{INLINE_PREFIX}-{i}-position"] = str(i)
    fields.update(extra or {})
    body, ctype = multipart(
        fields, [(f"{INLINE_PREFIX}-{i}-image", _name(n), data) for i, (n, data) in enumerate(files)]
    )
    return client.generic("POST", f"/admin/catalog/product/{product.pk}/change/", body, ctype)


def post_api(
    client: Client, product: Any, files: list[tuple[str | bytes, bytes]], extra: dict[str, str] | None = None
) -> Any:
    body, ctype = multipart({"alt_text": "", **(extra or {})}, [("image", _name(n), data) for n, data in files])
    return client.generic("POST", f"/api/imgrec/products/{product.pk}/images/", body, ctype)


POSTERS: dict[str, Callable[..., Any]] = {"admin": post_admin, "api": post_api}


def error_text(path: str, response: Any) -> str:
    """The error shown to the uploader; fails if the upload was not refused with one."""
    if path == "api":
        assert response.status_code == 400, (response.status_code, response.content[:500])
        body = response.json()
        return " ".join(str(m) for v in body.values() for m in (v if isinstance(v, list) else [v]))
    assert response.status_code == 200, (response.status_code, response.get("Location"))
    formset = response.context["inline_admin_formsets"][0].formset
    errors = [m for form in formset.forms for e in form.errors.as_data().values() for v in e for m in v.messages]
    errors += list(formset.non_form_errors()) + list(response.context["adminform"].form.non_field_errors())
    assert errors, "the admin saved the product without reporting the bad image"
    return " ".join(errors)


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def staff_client() -> Client:
    """A staff member allowed to change products and add product images (no CSRF: it is the
    test client; CSRF on these forms is Django's own middleware)."""
    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:8]}", password="pw", is_staff=True)
    perms = Permission.objects.filter(
        codename__in=["change_product", "view_product", "add_productimage", "change_productimage"]
    )
    user.user_permissions.add(*perms)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(params=["admin", "api"])
def path(request: pytest.FixtureRequest) -> str:
    return request.param


class Upload:
    """Posts files through one path and reports what the request left behind."""

    def __init__(self, path: str, client: Client, product: Any, capture: Any) -> None:
        self.path, self.client, self.product, self.capture = path, client, product, capture

    def __call__(self, files: list[tuple[str | bytes, bytes]], extra: dict[str, str] | None = None) -> tuple[Any, Any]:
        """Returns (response, the mock of ``indexing.publish`` after on-commit callbacks ran)."""
        with mock.patch.object(indexing, "publish") as publish:
            with self.capture(execute=True):
                response = POSTERS[self.path](self.client, self.product, files, extra)
        return response, publish

    def refused(self, files: list[tuple[str | bytes, bytes]]) -> str:
        """Post, assert nothing was kept, and return the error text."""
        pillow_limit = Image.MAX_IMAGE_PIXELS
        before = media_files()
        response, publish = self(files)
        text = error_text(self.path, response)
        assert not ProductImage.objects.exists()
        assert not IndexedImage.objects.filter(source=SOURCE).exists()
        assert media_files() == before
        publish.assert_not_called()
        assert Image.MAX_IMAGE_PIXELS == pillow_limit
        return text

    def accepted(self, name: str | bytes, data: bytes) -> ProductImage:
        """Post one good file and return its row (which must have queued exactly one task)."""
        response, publish = self([(name, data)])
        if self.path == "api":
            assert response.status_code == 201, response.content[:500]
        else:
            assert response.status_code == 302, error_text("admin", response)
        image = ProductImage.objects.latest("pk")
        assert publish.call_count == 1
        return image


@pytest.fixture
def upload(path: str, staff_client: Client, make_product: Any, django_capture_on_commit_callbacks: Any) -> Upload:
    return Upload(path, staff_client, make_product(), django_capture_on_commit_callbacks)


# --- 1–5, 7, 12, 15: refused files -----------------------------------------------------------------


REFUSED_UPLOADS: dict[str, tuple[str, bytes, str]] = {
    # id: (filename, content, words the error must contain)
    "1-zero-bytes": ("empty.jpg", b"", "empty"),
    "2-text-named-png": ("notes.png", b"just some text, not a picture\n" * 20, "not an image"),
    "3-png-named-txt": ("photo.txt", encode(upright_picture(), "PNG"), "named"),
    "3-jpeg-named-png": ("photo.png", encode(upright_picture(), "JPEG"), "named"),
    "3-no-extension": ("photo", encode(upright_picture(), "JPEG"), "named"),
    **{
        f"3-{fmt.lower()}-named-jpg": ("photo.jpg", REFUSED[fmt], fmt)
        for fmt in ("PSD", "FITS", "EPS", "PDF", "JPEG2000")
    },
    "4-png-header-30000x30000": ("huge.png", png_header(30000, 30000), "pixels"),
    "5-between-pillow-limits": (
        "big.png",
        png_header(int((1.5 * Image.MAX_IMAGE_PIXELS) ** 0.5), int((1.5 * Image.MAX_IMAGE_PIXELS) ** 0.5)),
        "pixels",
    ),
    "7-gif-frames-over-budget": ("spin.gif", gif_canvas(4000, 4000, 3), "pixels"),
    "12-svg": ("logo.svg", SVG_PLAIN, ""),
    "12-svg-script-named-png": ("logo.png", SVG_SCRIPT, ""),
    "12-svg-billion-laughs": ("logo.svg", SVG_LAUGHS, ""),
    "15-heic": ("IMG_0001.HEIC", HEIC, "HEIF"),
    "15-avif": ("a.avif", AVIF_HEADER, "AVIF"),
    "15-heic-named-jpg": ("IMG_0001.jpg", HEIC, "HEIF"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_UPLOADS))
def test_bad_file_is_refused_and_leaves_nothing(
    case: str,
    upload: Upload,
    open_spies: Callable[[list[str]], list[str]],  # noqa: F811
) -> None:
    filename, data, words = REFUSED_UPLOADS[case]
    calls = open_spies(ALLOWED)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        text = upload.refused([(filename, data)])
    assert words.lower() in text.lower(), text
    assert calls == [], f"a refused decoder ran on the {upload.path} path: {calls}"


def test_unsupported_format_message_is_clear_not_a_500(upload: Upload) -> None:
    text = upload.refused([("IMG_0001.HEIC", HEIC)])
    assert text.startswith("HEIF files are not accepted") and "allowed formats: JPEG, PNG" in text, text


# --- 14: request limits ----------------------------------------------------------------------------


def test_file_above_the_size_limit_is_refused(upload: Upload, settings: Any) -> None:
    data = make_image_bytes("PNG", (300, 300))
    settings.IMGREC = {**settings.IMGREC, "MAX_UPLOAD_SIZE": len(data) - 1}
    text = upload.refused([("big.png", data)])
    assert "limit" in text


def test_too_many_files_in_one_request_is_a_400(upload: Upload, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [(f"p{i}.png", make_image_bytes("PNG", (40, 40))) for i in range(5)]
    before = media_files()
    response, publish = upload(files)
    assert response.status_code == 400
    assert not ProductImage.objects.exists() and media_files() == before
    publish.assert_not_called()


def test_api_takes_one_image_per_request(staff_client: Client, make_product: Any) -> None:
    product = make_product()
    files = [(f"p{i}.png", make_image_bytes("PNG", (40, 40))) for i in range(2)]
    response = post_api(staff_client, product, files)
    assert response.status_code == 400 and "one image" in str(response.json())
    assert not ProductImage.objects.exists()


def test_form_body_above_the_memory_limit_is_a_400(upload: Upload, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    big = "x" * 4096  # the non-file part of the body is too big
    before = media_files()
    response, publish = upload([("a.png", make_image_bytes("PNG", (40, 40)))], {"description": big, "alt_text": big})
    assert response.status_code in (400, 413)
    assert not ProductImage.objects.exists() and media_files() == before
    publish.assert_not_called()


# --- 13: hostile filenames -------------------------------------------------------------------------


HOSTILE_NAMES: dict[str, bytes] = {
    "traversal": b"../../x.jpg",
    "absolute": b"/etc/cron.d/x.jpg",
    "windows-traversal": b"..\\..\\x.jpg",
    "double-extension": b"a.php.jpg",
    "long-unicode": ("é" * 300 + ".jpg").encode(),
    "crlf-as-browsers-send-it": b"a%0D%0AContent-Type: text/html.jpg",
    "nul": b"a\x00.php.jpg",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_hostile_filenames_are_stored_under_generated_names(case: str, upload: Upload) -> None:
    before = media_files()
    image = upload.accepted(HOSTILE_NAMES[case], make_image_bytes("JPEG", (64, 64)))
    assert STORED_NAME.match(image.image.name), image.image.name
    assert os.path.realpath(image.image.path).startswith(os.path.realpath(settings.MEDIA_ROOT) + os.sep)
    assert media_files() - before == {image.image.name}
    assert not (Path(settings.MEDIA_ROOT).parent / "x.jpg").exists()


def test_raw_crlf_in_a_filename_is_refused_cleanly(upload: Upload) -> None:
    """A raw CR LF ends the part's header line: the multipart parser sees no proper file name,
    the upload is refused as a client error (never a 500, never a header injected anywhere)."""
    upload.refused([(b"a\r\nContent-Type: text/html\r\n\r\nb.jpg", make_image_bytes("JPEG", (64, 64)))])


# --- 6, 7, 9, 10, 11: accepted files are embedded to the picture they show -----------------------


def _vector(image: ProductImage) -> np.ndarray:
    emb = ImageEmbedding.objects.get(image__source=SOURCE, image__source_id=str(image.pk))
    return np.asarray(emb.vector, dtype=np.float32)


def _cmyk_jpeg() -> bytes:
    return encode(upright_picture((256, 192)).convert("CMYK"), "JPEG", quality=95)


def _grey16_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (192, 1))
    return encode(Image.fromarray(ramp), "PNG")


def _palette_with_transparency() -> bytes:
    img = upright_picture((256, 192)).quantize(8)
    return encode(img, "PNG", transparency=0)


def _three_frame_gif() -> bytes:
    first = upright_picture((256, 192))
    rest = [Image.new("RGB", (256, 192), c) for c in ((0, 0, 0), (255, 255, 255))]
    return encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)


def _corrupt_exif_jpeg() -> bytes:
    return encode(upright_picture((256, 192)), "JPEG", quality=95, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unusual_but_valid_images_are_accepted_and_embedded_like_the_picture(
    path: str, staff_client: Client, make_product: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """6 extreme aspect ratios, 7 a small 3-frame GIF (frame 0), 9 corrupt EXIF, 10 all eight EXIF
    orientations, 11 CMYK / 16-bit grey / palette+transparency / LA / RGBA: each passes the
    upload, then the worker's code embeds it to a finite unit vector close to the plain RGB
    picture's."""
    upright = upright_picture((256, 192))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow may warn about the corrupt EXIF
        cases: dict[str, tuple[str, bytes, bytes | None]] = {
            "reference": ("ref.png", encode(upright, "PNG"), None),
            "6-tall-strip": (
                "tall.png",
                encode(Image.new("RGB", (1, 100000), (30, 120, 200)), "PNG"),
                encode(Image.new("RGB", (256, 256), (30, 120, 200)), "PNG"),
            ),
            "6-wide-strip": (
                "wide.png",
                encode(Image.new("RGB", (100000, 1), (30, 120, 200)), "PNG"),
                encode(Image.new("RGB", (256, 256), (30, 120, 200)), "PNG"),
            ),
            "7-three-frame-gif": ("spin.gif", _three_frame_gif(), None),
            "9-corrupt-exif": ("exif.jpg", _corrupt_exif_jpeg(), None),
            **{f"10-orientation-{o}": (f"o{o}.jpg", oriented_jpeg(upright, o), None) for o in range(1, 9)},
            "11-cmyk-jpeg": ("cmyk.jpg", _cmyk_jpeg(), None),
            "11-grey16-png": (
                "grey16.png",
                _grey16_png(),
                encode(
                    Image.fromarray(np.tile(np.linspace(0, 255, 256).astype(np.uint8), (192, 1))).convert("RGB"), "PNG"
                ),
            ),
            "11-palette-transparency": ("pal.png", _palette_with_transparency(), None),
            "11-la-png": (
                "la.png",
                encode(upright.convert("LA"), "PNG"),
                encode(upright.convert("L").convert("RGB"), "PNG"),
            ),
            "11-rgba-png": ("rgba.png", encode(upright.convert("RGBA"), "PNG"), None),
        }
    product = make_product()
    up = Upload(path, staff_client, product, django_capture_on_commit_callbacks)
    uploaded: dict[str, ProductImage] = {}
    expected_refs: dict[str, bytes] = {}
    for key, (name, data, ref) in cases.items():
        uploaded[key] = up.accepted(name, data)
        if ref is not None:
            expected_refs[key] = ref
    # References of cases whose picture differs from the upright one go in as extra images.
    refs = {key: up.accepted(f"ref-{i}.png", data) for i, (key, data) in enumerate(expected_refs.items())}
    ids = list(IndexedImage.objects.filter(source=SOURCE).values_list("pk", flat=True))
    summary = indexing.process_images(ids, greedy=False)
    assert summary.ready == len(ids), summary.as_dict()
    base = _vector(uploaded["reference"])
    for key, image in uploaded.items():
        vec = _vector(image)
        assert np.all(np.isfinite(vec)) and abs(float(np.linalg.norm(vec)) - 1) < 1e-3, key
        target = _vector(refs[key]) if key in refs else base
        assert float(vec @ target) > 0.9, f"{key}: cosine {float(vec @ target):.3f} to its picture"
    # The orientations really differ when EXIF is ignored, so the check above can fail.
    raw_rotated = encode(upright.transpose(Image.Transpose.ROTATE_90), "PNG")
    rotated = up.accepted("rot.png", raw_rotated)
    tracked = IndexedImage.objects.get(source=SOURCE, source_id=str(rotated.pk))
    indexing.process_images([tracked.pk], greedy=False)
    assert float(_vector(rotated) @ base) < float(_vector(uploaded["10-orientation-6"]) @ base)


# --- 8: a truncated JPEG passes the upload and fails once in a real worker ------------------------


@pytest.mark.worker
def test_truncated_jpeg_uploaded_through_the_api_fails_once_in_the_worker(
    celery_worker: Any, staff_client: Client, make_product: Any
) -> None:
    product = make_product()
    good = encode(upright_picture((512, 384)), "JPEG", quality=90)
    response = post_api(staff_client, product, [("cut.jpg", good[: len(good) // 2])])
    assert response.status_code == 201, response.content
    tracked = IndexedImage.objects.get(source=SOURCE, source_id=str(response.json()["id"]))
    wait_for(lambda: IndexedImage.objects.get(pk=tracked.pk).status == "failed", timeout=120)
    tracked.refresh_from_db()
    assert tracked.failure_reason == "truncated" and tracked.attempts == 1
    # No retry storm: a sweep finds nothing to do and the row stays as it is.
    assert indexing.sweep_stuck(older_than=None, publish_now=False)["requeued"] == 0
    tracked.refresh_from_db()
    assert tracked.status == "failed" and tracked.attempts == 1
    assert not ImageEmbedding.objects.filter(image=tracked).exists()


@pytest.fixture(autouse=True)
def _media_is_private(settings: Any, tmp_path: Path) -> Iterator[None]:
    """Each test gets its own MEDIA_ROOT, so 'no file written' is exact."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    yield
