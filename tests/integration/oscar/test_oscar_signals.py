"""After installation, Oscar's image saves and deletes reach imgrec through its signal handlers
and a real worker; no command is needed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.integration.oscar.conftest import DATA_DIR, add_oscar_image, create_oscar_product

pytestmark = [pytest.mark.worker]


def test_new_oscar_image_is_indexed_when_saved_and_forgotten_when_deleted(celery_worker: Any) -> None:
    from oscar.apps.catalogue.categories import create_from_breadcrumbs

    from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector

    entry = {
        "name": "Electric Guitar",
        "description": "A guitar.",
        "price": "99.50",
        "image": "images/musical-instruments/electric-guitar.png",
    }
    product = create_oscar_product(entry, create_from_breadcrumbs("Music"))
    first = IndexedImage.objects.get(source="catalogue.productimage.original", object_id=str(product.pk))
    photo = max((DATA_DIR / "images" / "musical-instruments").glob("*.png"))
    image = add_oscar_image(product, photo)
    second = IndexedImage.objects.get(source="catalogue.productimage.original", source_id=str(image.pk))
    assert second.file_name == image.original.name
    done = ("ready", "failed")
    wait_for(lambda: all(i.status in done for i in IndexedImage.objects.filter(pk__in=[first.pk, second.pk])))
    assert set(IndexedImage.objects.values_list("status", flat=True)) == {"ready"}
    first_vector = np.asarray(ImageEmbedding.objects.get(image=first).vector)

    def product_vector() -> np.ndarray:
        return np.asarray(ProductVector.objects.get(object_id=str(product.pk), modality="image").vector)

    assert product_vector() @ first_vector < 0.999  # the mean of both photos

    image.delete()  # Oscar deletes the row and its file; imgrec forgets the image
    assert not IndexedImage.objects.filter(pk=second.pk).exists()
    assert product_vector() @ first_vector == pytest.approx(1.0, abs=1e-4)  # the first photo's
