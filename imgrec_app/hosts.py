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
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.core.files.storage import Storage
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
    return _rule_queryset("RECOMMENDABLE_PRODUCTS")


def visible_products() -> models.QuerySet:
    """The queryset of products a visitor may see (``VISIBLE_PRODUCTS``, else the shelf rule).

    Anything that names a product to a visitor or takes a product id from one (events, the
    similar endpoint and fragment, "recently viewed", for-you reasons) goes through this rule,
    so an unpublished product is neither named nor told apart from a missing one.
    """
    if imgrec_settings.raw("VISIBLE_PRODUCTS") is None:
        return recommendable_products()
    return _rule_queryset("VISIBLE_PRODUCTS")


def _rule_queryset(key: str) -> models.QuerySet:
    func = getattr(imgrec_settings, key)
    model = get_product_model()
    if func is None:
        return model._default_manager.all()
    qs = func()
    if not isinstance(qs, models.QuerySet) or qs.model is not model:
        raise ImproperlyConfigured(f'IMGREC["{key}"] must return a queryset of {model._meta.label}, got {qs!r}')
    return qs


def get_visible_product(product_id: Any) -> models.Model:
    """The visible product with this id (as text or value).

    Raises:
        LookupError: no such product, a malformed id, or a product the visitor may not see —
            the same error for all three, so callers cannot tell them apart.
    """
    from django.core.exceptions import ValidationError

    model = get_product_model()
    try:
        pk = model._meta.pk.to_python(product_id)
        return visible_products().get(pk=pk)
    except (ObjectDoesNotExist, ValidationError, ValueError, TypeError, OverflowError):
        raise LookupError("No such product.") from None


def visible_rule(outer_ref: str = "object_id") -> models.Exists:
    """``EXISTS`` (visible product whose pk = ``outer_ref``::pk type) for rows keyed by text id.

    The cast is on the outer column, so each row is answered by the product's primary-key index.
    """
    qs = visible_products()
    pk = qs.model._meta.pk
    field = pk.target_field if pk.is_relation else pk
    return models.Exists(qs.order_by().filter(pk=Cast(models.OuterRef(outer_ref), output_field=field)))


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


def same_category_filter(product: models.Model) -> models.Q | None:
    """``IMGREC["PRODUCT_CATEGORY_FILTER"](product)``: a Q selecting the products of the same
    category (applied in SQL), or None when the setting is not used."""
    func = imgrec_settings.PRODUCT_CATEGORY_FILTER
    if func is None:
        return None
    q = func(product)
    if not isinstance(q, models.Q):
        raise ImproperlyConfigured(f'IMGREC["PRODUCT_CATEGORY_FILTER"] must return a Q object, got {q!r}')
    return q


def category_in_sql() -> bool:
    """Whether "same category" can be filtered inside SQL (a filter callable or a plain field)."""
    return imgrec_settings.PRODUCT_CATEGORY_FILTER is not None or category_field_lookup() is not None


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

    @property
    def storage(self) -> Storage:
        """The storage of the source's file field.

        Raises:
            ImproperlyConfigured: the field is not a file field (``manage.py check`` says so first).
        """
        field = self.model._meta.get_field(self.field)
        if not isinstance(field, models.FileField):
            raise ImproperlyConfigured(f"{self.model_label}.{self.field} is not a FileField or ImageField.")
        return field.storage


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
