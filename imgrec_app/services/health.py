"""Catalogue health: what imgrec's vectors, predictions and image files say about the catalogue.

One report, shared by the admin page, ``manage.py imgrec_health`` and its CSV export:

- products whose predicted category disagrees with the one the merchant set;
- near-duplicate photos across different products (likely duplicate listings), from one
  k-NN statement over the serving model's product vectors (the HNSW index answers it);
- the same file used by many products (a placeholder), tiny images, mostly blank images;
- products with no image, and products whose images have no vector of the serving model;
- the category pairs the visual neighbours mix up most.

Everything is read-only; the only write is the one-click "apply the predicted category" that the
admin page offers through :func:`imgrec_app.services.classifier.apply_suggestion`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connection, models
from django.db.models import CharField, Count, Exists, F, OuterRef
from django.db.models.functions import Cast
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_image_source, get_product_model, product_category, product_content_type
from imgrec_app.models import CategoryPrediction, IndexedImage, ProductVector
from imgrec_app.services.models import serving_model

logger = logging.getLogger(__name__)

Status = IndexedImage.Status

SECTIONS: dict[str, Any] = {
    "category_disagreements": _("Predicted category differs from the one set"),
    "duplicate_listings": _("Near-duplicate photos on different products"),
    "placeholders": _("The same image file on many products"),
    "tiny_images": _("Tiny images"),
    "blank_images": _("Mostly blank images"),
    "no_image": _("Products with no image"),
    "no_vector": _("Products with images but no vector"),
    "mixed_categories": _("Categories the shelves mix up most"),
}


@dataclass
class HealthItem:
    """One finding: a product (or a category pair) and what is wrong with it."""

    section: str
    product_id: str = ""
    product: str = ""
    detail: str = ""
    score: float | None = None
    other_product_id: str = ""
    other_product: str = ""
    url: str = ""
    other_url: str = ""
    prediction_id: int | None = None


@dataclass
class HealthReport:
    """The whole report: counts per section, items per section, and what was checked."""

    model_id: str | None
    products: int
    items: dict[str, list[HealthItem]] = field(default_factory=dict)
    files_checked: int = 0
    files_total: int = 0

    def counts(self) -> dict[str, int]:
        return {key: len(self.items.get(key, [])) for key in SECTIONS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "products": self.products,
            "files_checked": self.files_checked,
            "files_total": self.files_total,
            "counts": self.counts(),
            "items": {key: [asdict(i) for i in self.items.get(key, [])] for key in SECTIONS},
        }

    def sections(self) -> list[dict[str, Any]]:
        """``[{key, title, items}]`` in display order (for templates)."""
        return [{"key": k, "title": t, "items": self.items.get(k, [])} for k, t in SECTIONS.items()]


def catalogue_health(*, check_files: bool = True, neighbours: int = 10) -> HealthReport:
    """Build the catalogue health report.

    Args:
        check_files: open image files (header, then a small thumbnail) for the tiny and blank
            checks; at most ``HEALTH_MAX_FILES`` images, the most recently indexed first.
        neighbours: visual neighbours per product read for the duplicate and mix-up checks.

    Returns:
        A :class:`HealthReport`; products are named with ``str(product)`` and linked to their
        admin change page (or ``get_absolute_url()``).
    """
    model = get_product_model()
    ct = product_content_type()
    serving = serving_model()
    report = HealthReport(model_id=serving.model_id if serving else None, products=model._default_manager.count())
    report.items["category_disagreements"] = _disagreements(ct.pk)
    pairs = _neighbour_pairs(serving.model_id, serving.dimensions, ct.pk, neighbours) if serving else []
    report.items["duplicate_listings"] = _duplicates(pairs, ct.pk)
    report.items["mixed_categories"] = _mixed_categories(pairs)
    report.items["placeholders"] = _placeholders(ct.pk)
    report.items["no_image"] = _no_image(ct.pk)
    report.items["no_vector"] = _no_vector(ct.pk, serving.model_id if serving else None)
    if check_files:
        tiny, blank, checked, total = _file_checks(ct.pk)
        report.items["tiny_images"], report.items["blank_images"] = tiny, blank
        report.files_checked, report.files_total = checked, total
    _name_products(report)
    return report


# --- sections ------------------------------------------------------------------------------------


def _disagreements(ct_id: int) -> list[HealthItem]:
    rows = list(
        CategoryPrediction.objects.filter(content_type_id=ct_id, classifier__is_active=True)
        .exclude(assigned_category="")
        .exclude(assigned_category=F("category"))
        .order_by("-confidence")
    )
    names = category_names({p.assigned_category for p in rows} | {p.category for p in rows})
    return [
        HealthItem(
            section="category_disagreements",
            product_id=p.object_id,
            detail=(
                f"set: {names.get(p.assigned_category, p.assigned_category)} · "
                f"predicted: {names.get(p.category, p.category)}"
            ),
            score=round(p.confidence, 4),
            prediction_id=p.pk,
        )
        for p in rows
    ]


def _neighbour_pairs(model_id: str, dim: int, ct_id: int, k: int) -> list[tuple[str, str, float]]:
    """``(product, neighbour, similarity)`` for each product's ``k`` nearest, in one statement.

    A LATERAL k-NN per product: each inner query has the same cast and ``model_id`` filter as the
    model's partial HNSW index, so it is an index scan, not an N×N comparison.
    """
    from imgrec_app.services.search import hnsw_session
    from imgrec_app.services.vectors import vector_type

    vt = f"{vector_type(dim)}({int(dim)})"
    table = ProductVector._meta.db_table
    sql = f"""
        SELECT a.object_id, n.object_id, 1 - n.distance
        FROM {table} a
        CROSS JOIN LATERAL (
            SELECT b.object_id, (b.vector::{vt}) <=> (a.vector::{vt}) AS distance
            FROM {table} b
            WHERE b.model_id = %s AND b.content_type_id = %s AND b.object_id <> a.object_id
            ORDER BY (b.vector::{vt}) <=> (a.vector::{vt})
            LIMIT %s
        ) n
        WHERE a.model_id = %s AND a.content_type_id = %s
    """
    with hnsw_session(k), connection.cursor() as cursor:
        cursor.execute(sql, [model_id, ct_id, k, model_id, ct_id])
        return [(a, b, float(s)) for a, b, s in cursor.fetchall()]


def _duplicates(pairs: list[tuple[str, str, float]], ct_id: int) -> list[HealthItem]:
    threshold = float(imgrec_settings.NEAR_DUPLICATE_SIMILARITY)
    found: dict[tuple[str, str], float] = {}
    for a, b, sim in pairs:
        if sim >= threshold:
            key = (a, b) if a < b else (b, a)
            found[key] = max(sim, found.get(key, 0.0))
    # Byte-identical files on exactly two products are duplicates too (more: a placeholder).
    for objs in _shared_files(ct_id, min_products=2, max_products=2):
        a, b = sorted(objs)
        found[(a, b)] = 1.0
    items = [
        HealthItem(
            section="duplicate_listings",
            product_id=a,
            other_product_id=b,
            score=round(sim, 4),
            detail=f"{sim:.1%} similar photos",
        )
        for (a, b), sim in found.items()
    ]
    return sorted(items, key=lambda i: (-(i.score or 0), i.product_id))


def _shared_files(ct_id: int, *, min_products: int, max_products: int | None = None) -> list[set[str]]:
    """Sets of products sharing one byte-identical image file (same SHA-256)."""
    rows = (
        IndexedImage.objects.filter(content_type_id=ct_id)
        .exclude(file_hash="")
        .values("file_hash")
        .annotate(n=Count("object_id", distinct=True))
        .filter(n__gte=min_products)
    )
    if max_products is not None:
        rows = rows.filter(n__lte=max_products)
    hashes = [r["file_hash"] for r in rows]
    groups: dict[str, set[str]] = defaultdict(set)
    for h, obj in IndexedImage.objects.filter(content_type_id=ct_id, file_hash__in=hashes).values_list(
        "file_hash", "object_id"
    ):
        groups[h].add(obj)
    return list(groups.values())


def _placeholders(ct_id: int) -> list[HealthItem]:
    minimum = int(imgrec_settings.HEALTH_PLACEHOLDER_MIN_PRODUCTS)
    items = []
    for objs in _shared_files(ct_id, min_products=minimum):
        for obj in sorted(objs):
            items.append(
                HealthItem(section="placeholders", product_id=obj, detail=f"same file on {len(objs)} products")
            )
    return items


def _no_image(ct_id: int) -> list[HealthItem]:
    model = get_product_model()
    images = IndexedImage.objects.filter(
        content_type_id=ct_id, object_id=Cast(OuterRef("pk"), output_field=CharField())
    )
    rows = model._default_manager.filter(~Exists(images)).order_by("pk")
    return [HealthItem(section="no_image", product_id=str(p.pk), product=str(p)) for p in rows]


def _no_vector(ct_id: int, model_id: str | None) -> list[HealthItem]:
    with_images = set(IndexedImage.objects.filter(content_type_id=ct_id).values_list("object_id", flat=True))
    with_vector = set()
    if model_id:
        with_vector = set(
            ProductVector.objects.filter(content_type_id=ct_id, model_id=model_id).values_list("object_id", flat=True)
        )
    missing = sorted(with_images - with_vector)
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    for obj, status, reason in IndexedImage.objects.filter(content_type_id=ct_id, object_id__in=missing).values_list(
        "object_id", "status", "failure_reason"
    ):
        statuses[obj][f"{status}: {reason}" if reason else status] += 1
    return [
        HealthItem(
            section="no_vector",
            product_id=obj,
            detail=", ".join(f"{n} {s}" for s, n in sorted(statuses[obj].items())),
        )
        for obj in missing
    ]


def _mixed_categories(pairs: list[tuple[str, str, float]], top: int = 10) -> list[HealthItem]:
    """Category pairs most often neighbours of each other, as a share of the category's slots."""
    ids = {a for a, _, _ in pairs} | {b for _, b, _ in pairs}
    if not ids or not imgrec_settings.PRODUCT_CATEGORY:
        return []
    category = _categories(ids)
    slots: Counter[str] = Counter()
    mixed: Counter[tuple[str, str]] = Counter()
    for a, b, _sim in pairs:
        ca, cb = category.get(a), category.get(b)
        if ca is None or cb is None:
            continue
        slots[ca] += 1
        if ca != cb:
            mixed[(ca, cb)] += 1
    return [
        HealthItem(
            section="mixed_categories",
            product=f"{a} → {b}",
            detail=f"{n} of {slots[a]} neighbour slots of {a} are {b}",
            score=round(n / slots[a], 4),
        )
        for (a, b), n in sorted(mixed.items(), key=lambda kv: (-kv[1] / slots[kv[0][0]], kv[0]))[:top]
    ]


def _categories(ids: set[str]) -> dict[str, str]:
    """Each product's category, named as the merchant reads it."""
    model = get_product_model()
    raw = {}
    for product in model._default_manager.filter(pk__in=_pks(ids)):
        value = product_category(product)
        if value is not None:
            raw[str(product.pk)] = value
    names = category_names(set(raw.values()))
    return {pk: names.get(value, value) for pk, value in raw.items()}


def category_names(values: set[str]) -> dict[str, str]:
    """``str()`` of the category objects when ``PRODUCT_CATEGORY`` is a foreign key, by stored value."""
    spec = imgrec_settings.PRODUCT_CATEGORY
    if not spec or "." in spec or not values:
        return {}
    try:
        field = get_product_model()._meta.get_field(spec.removesuffix("_id"))
    except FieldDoesNotExist:
        return {}
    if not field.is_relation or field.related_model is None:
        return {}
    related = field.related_model
    pk = related._meta.pk
    keys = []
    for value in values:
        try:
            keys.append(pk.to_python(value))
        except ValidationError:
            continue
    return {str(k): str(obj) for k, obj in related._default_manager.in_bulk(keys).items()}


def _pks(ids: set[str]) -> list[Any]:
    pk = get_product_model()._meta.pk
    field = pk.target_field if isinstance(pk, models.ForeignKey) else pk
    out = []
    for value in ids:
        try:
            out.append(field.to_python(value))
        except Exception:  # an object_id that is not a valid pk any more
            continue
    return out


# --- image files ---------------------------------------------------------------------------------


def _file_checks(ct_id: int) -> tuple[list[HealthItem], list[HealthItem], int, int]:
    """Tiny and mostly blank images, reading at most ``HEALTH_MAX_FILES`` files."""
    images = IndexedImage.objects.filter(content_type_id=ct_id).exclude(status=Status.FAILED)
    total = images.count()
    limit = int(imgrec_settings.HEALTH_MAX_FILES)
    rows = images.order_by(F("indexed_at").desc(nulls_last=True), "-pk")[:limit]
    min_side = int(imgrec_settings.HEALTH_MIN_IMAGE_SIDE)
    tiny, blank, checked = [], [], 0
    for image in rows:
        info = inspect_image_file(image)
        if info is None:
            continue
        checked += 1
        width, height, blank_share = info
        if min(width, height) < min_side:
            tiny.append(HealthItem(section="tiny_images", product_id=image.object_id, detail=f"{width}×{height} px"))
        if blank_share >= float(imgrec_settings.HEALTH_BLANK_SHARE):
            blank.append(
                HealthItem(
                    section="blank_images",
                    product_id=image.object_id,
                    detail=f"{blank_share:.0%} of the picture is background",
                    score=round(blank_share, 4),
                )
            )
    return tiny, blank, checked, total


def inspect_image_file(image: IndexedImage) -> tuple[int, int, float] | None:
    """``(width, height, blank share)`` of an indexed image's file, or None if it cannot be read.

    The blank share is the part of a 64-px thumbnail within 12 levels of the background colour
    (the most common corner colour, alpha composited onto white): a product photo on a plain
    background stays well under 0.97, an empty or placeholder picture is close to 1.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        source = get_image_source(image.source)
        storage = source.storage
        with storage.open(image.file_name, "rb") as fh:
            with Image.open(fh) as img:
                width, height = img.size
                if width * height > int(imgrec_settings.MAX_IMAGE_PIXELS):
                    return width, height, 0.0
                img.draft("RGB", (128, 128))
                img.thumbnail((64, 64))
                rgba = img.convert("RGBA")
    except (OSError, ValueError, UnidentifiedImageError, LookupError, Image.DecompressionBombError) as exc:
        logger.info("Health check cannot read image %s: %s", image.pk, exc)
        return None
    return width, height, blank_share(rgba)


def blank_share(rgba: Any) -> float:
    """The share of pixels of an RGBA picture that match its background colour."""
    from PIL import Image

    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    w, h = flat.size
    pixels = np.frombuffer(flat.convert("RGB").tobytes(), dtype=np.uint8).reshape(h, w, 3).astype(np.int16)
    corners = Counter(tuple(pixels[y, x]) for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)))
    background = np.array(corners.most_common(1)[0][0], dtype=np.int16)
    return float((np.abs(pixels - background).max(axis=-1) <= 12).mean())


# --- names, links, CSV ---------------------------------------------------------------------------


def _name_products(report: HealthReport) -> None:
    ids = {i.product_id for items in report.items.values() for i in items if i.product_id}
    ids |= {i.other_product_id for items in report.items.values() for i in items if i.other_product_id}
    model = get_product_model()
    products = {str(p.pk): p for p in model._default_manager.filter(pk__in=_pks(ids))}
    for items in report.items.values():
        for item in items:
            if item.product_id:
                item.product = item.product or _name(products.get(item.product_id), item.product_id)
                item.url = _link(products.get(item.product_id))
            if item.other_product_id:
                item.other_product = _name(products.get(item.other_product_id), item.other_product_id)
                item.other_url = _link(products.get(item.other_product_id))


def _name(product: Any, fallback: str) -> str:
    return str(product) if product is not None else fallback


def _link(product: Any) -> str:
    """The product's admin change page, else its public page, else nothing."""
    if product is None:
        return ""
    opts = product._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[product.pk])
    except NoReverseMatch:
        pass
    get_url = getattr(product, "get_absolute_url", None)
    try:
        return get_url() if callable(get_url) else ""
    except Exception:
        return ""


CSV_COLUMNS = ["section", "product_id", "product", "other_product_id", "other_product", "detail", "score", "url"]


def to_csv(report: HealthReport) -> str:
    """Every finding as one CSV row (the admin's export and ``imgrec_health --csv``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for key in SECTIONS:
        for item in report.items.get(key, []):
            row = asdict(item)
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()
