"""Search by photo frames and decodes an upload exactly as the worker did the catalogue's photos.

Real embedded Postgres + pgvector, real EfficientNet-Lite1 weights (its decode size, 274 px,
differs from Lite0's 256, so a search path with its own decode settings would make another vector).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image, ImageDraw

from imgrec_app.services.recommend import search_by_photo
from tests.conftest import upload
from tests.test_ml_preprocess import encode

pytestmark = pytest.mark.django_db


def studio_photo(colour: tuple[int, int, int], size: tuple[int, int] = (1400, 1080)) -> bytes:
    """A large JPEG of a product on white: big enough that JPEG draft decoding reduces it."""
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((w // 5, h // 3, w * 4 // 5, h * 2 // 3), fill=colour)
    draw.ellipse((w // 5, h // 5, w // 2, h // 2), fill=(colour[2], colour[0], colour[1]))
    rng = np.random.default_rng(sum(colour))
    texture = Image.fromarray(rng.integers(0, 60, (h // 3, w * 3 // 5, 3), dtype=np.uint8))
    img.paste(Image.blend(img.crop((w // 5, h // 3, w * 4 // 5, h * 2 // 3)), texture, 0.3), (w // 5, h // 3))
    return encode(img, "JPEG", quality=90)


@pytest.mark.parametrize("pooling", ["gem", "gem+multi"])
def test_a_catalogue_photo_searched_again_finds_itself_with_the_same_vector(
    settings, make_product, tmp_path, pooling: str
) -> None:
    settings.MEDIA_ROOT = str(tmp_path)
    settings.IMGREC = {
        **settings.IMGREC,
        "BACKBONE": "efficientnet_lite1",
        "BACKBONE_OPTIONS": {"preprocess": "product", "pooling": pooling},
    }
    photos = {c: studio_photo(c) for c in [(200, 30, 30), (30, 160, 40), (40, 60, 200)]}
    products = {c: make_product(f"p{i}", photo=upload(f"p{i}.jpg", data)) for i, (c, data) in enumerate(photos.items())}
    call_command("imgrec_reindex", "--missing", "--sync", stdout=io.StringIO(), verbosity=0)
    query = (30, 160, 40)
    results = search_by_photo(upload("query.jpg", photos[query]), limit=3)
    assert results[0].product_id == str(products[query].pk)
    # Same decode, same framing, same pooling: the very vector the worker stored.
    assert results[0].score > 0.99999
    from imgrec_app.models import ImageEmbedding

    stored = ImageEmbedding.objects.values_list("model_id", "vector")[0]
    assert stored[0].endswith(":prod1-" + pooling.replace("+", "-"))
    assert len(stored[1]) == {"gem": 1280, "gem+multi": 1664}[pooling]
