"""imgrec's own product images: one primary per product, no orphan file when a save fails."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection, transaction

logger = logging.getLogger(__name__)


def demote_other_primaries(image: Any) -> list[Any]:
    """Before ``image`` is saved as primary: make every other primary of its product ordinary.

    The newest primary wins (an upload with ``is_primary`` replaces the product's main photo).
    Runs in the caller's transaction, serialised per product by a transaction-scoped advisory
    lock, so two concurrent "primary" uploads cannot both pass the demotion and then break the
    ``imgrec_productimage_one_primary`` constraint.  The mirrored ``IndexedImage.is_primary``
    flags are updated with the rows (``update()`` sends no ``post_save``).

    Returns:
        The primary keys of the demoted images.
    """
    from imgrec_app.hosts import BUILTIN_SOURCE
    from imgrec_app.models import IndexedImage, ProductImage

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                [f"imgrec-primary:{image.content_type_id}:{image.object_id}"],
            )
    others = ProductImage.objects.filter(
        content_type_id=image.content_type_id, object_id=image.object_id, is_primary=True
    )
    if image.pk is not None:
        others = others.exclude(pk=image.pk)
    pks = list(others.select_for_update().values_list("pk", flat=True))
    if pks:
        ProductImage.objects.filter(pk__in=pks).update(is_primary=False)
        IndexedImage.objects.filter(source=BUILTIN_SOURCE, source_id__in=[str(pk) for pk in pks]).update(
            is_primary=False
        )
    return pks


def save_product_image(image: Any, save: Any) -> None:
    """Save ``image`` with ``save()`` (the model's own), demoting other primaries first, all in
    one transaction; when the save fails, the file it had just written is deleted again."""
    file = image.image
    new_file = bool(file) and not getattr(file, "_committed", True)
    try:
        with transaction.atomic():
            if image.is_primary:
                demote_other_primaries(image)
            save()
    except BaseException:
        if new_file and getattr(file, "_committed", False) and file.name:
            try:
                file.storage.delete(file.name)
            except Exception:  # the orphan sweep removes it later
                logger.exception("imgrec could not delete %s after a failed save", file.name)
        raise
