"""Runtime access to the host shop: its product model, its rules, its image sources.

imgrec never bakes a host model into its migrations: products are referenced by content type +
object id (as django-taggit and Wagtail do), and everything here resolves the host's models from
the ``IMGREC`` settings at run time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.functions import Cast
from django.utils.module_loading import import_string

from imgrec_app.conf import imgrec_settings

BUILTIN_SOURCE = "imgrec_app.productimage.image"


def get_product_model() -> type[models.Model]:
    """Return the host's product model named by ``IMGREC["PRODUCT_MODEL"]``.

    Raises:
        ImproperlyConfigured: when the setting is missing or names no installed model.
    """
    label = imgrec_settings.PRODUCT_MODEL
    if not label:
        raise ImproperlyConfigured('IMGREC["PRODUCT_MODEL"] must name the shop\'s product model.')
    try:
        return apps.get_model(label, require_ready=False)
    except (ValueError, LookupError) as exc:
        raise ImproperlyConfigured(f'IMGREC["PRODUCT_MODEL"] = {label!r} is not an installed model: {exc}') from exc


def product_content_type() -> ContentType:
    return ContentType.objects.get_for_model(get_product_model(), for_concrete_model=True)


def product_key(product: models.Model | Any) -> str:
    """The string form of a product's primary key, as stored in ``object_id`` columns."""
    pk = product.pk if isinstance(product, models.Model) else product
    return str(pk)


def recommendable_products() -> models.QuerySet:
    """The queryset of products allowed on shelves (the shop's rules), or all products."""
    func = imgrec_settings.RECOMMENDABLE_PRODUCTS
    model = get_product_model()
    if func is None:
        return model._default_manager.all()
    qs = func()
    if not isinstance(qs, models.QuerySet) or qs.model is not model:
        raise ImproperlyConfigured(
            f'IMGREC["RECOMMENDABLE_PRODUCTS"] must return a queryset of {model._meta.label}, got {qs!r}'
        )
    return qs


def pk_strings(qs: models.QuerySet) -> models.QuerySet:
    """A subquery of the queryset's primary keys cast to text, to compare with ``object_id``."""
    return qs.annotate(_imgrec_pk=Cast("pk", models.CharField())).values("_imgrec_pk")


def product_category(product: models.Model) -> str | None:
    """Read a product's category as a string, through ``IMGREC["PRODUCT_CATEGORY"]``."""
    spec = imgrec_settings.PRODUCT_CATEGORY
    if not spec:
        return None
    if "." in spec:
        value = import_string(spec)(product)
    else:
        value = getattr(product, spec, None)
    if value is None or value == "":
        return None
    if isinstance(value, models.Model):
        return str(value.pk)
    return str(value)


def category_field_lookup() -> str | None:
    """The ORM path of the category when it is a plain field (``"category"`` → ``"category_id"``).

    Used to filter "same category" inside SQL; None when the category comes from a callable.
    """
    spec = imgrec_settings.PRODUCT_CATEGORY
    if not spec or "." in spec:
        return None
    model = get_product_model()
    try:
        field = model._meta.get_field(spec)
    except Exception:
        return None
    if isinstance(field, models.ForeignKey):
        return field.attname
    return field.name


@dataclass(frozen=True)
class ImageSource:
    """A model + file field whose files imgrec indexes, and how to reach the product from a row."""

    model_label: str
    field: str
    product: str

    @property
    def key(self) -> str:
        return f"{self.model_label.lower()}.{self.field}"

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.model_label, require_ready=False)

    def product_id_of(self, instance: models.Model) -> str | None:
        """Primary key (as text) of the product an instance of the source belongs to."""
        if self.product in ("", "self"):
            return product_key(instance)
        attname = self.model._meta.get_field(self.product).attname  # type: ignore[union-attr]  # a concrete field
        value = getattr(instance, attname, None)
        return None if value is None else str(value)

    def file_of(self, instance: models.Model) -> Any:
        return getattr(instance, self.field)


def image_sources() -> list[ImageSource]:
    """The app's own ``ProductImage.image`` plus every source named in ``IMGREC["IMAGE_SOURCES"]``."""
    sources = [ImageSource("imgrec_app.ProductImage", "image", "object_id")]
    for entry in imgrec_settings.IMAGE_SOURCES:
        sources.append(ImageSource(entry["model"], entry["field"], entry.get("product", "product")))
    return sources


def get_image_source(key: str) -> ImageSource:
    for source in image_sources():
        if source.key == key:
            return source
    raise LookupError(f"No imgrec image source {key!r} is configured.")


def sources_for_model(model: type[models.Model]) -> Iterable[ImageSource]:
    label = model._meta.label_lower
    return [s for s in image_sources() if s.model_label.lower() == label]
