"""imgrec's data: product images, their indexing state, vectors, predictions and classifiers.

Products are the host's own model, referenced by content type + object id (text, so integer and
UUID keys both fit); see docs/DESIGN.md for why.
"""

from __future__ import annotations

import os
import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from pgvector.django import VectorField

from imgrec_app.fields import ProductImageField
from imgrec_app.querysets import IndexedImageQuerySet, ProductVectorQuerySet
from imgrec_app.validators import validate_product_image


def product_image_upload_to(instance: ProductImage, filename: str) -> str:
    """Store uploads under a generated name: the client's filename is never used as a path."""
    from imgrec_app.conf import imgrec_settings

    ext = os.path.splitext(filename)[1].lower().lstrip(".")
    if ext not in {"jpg", "jpeg", "png", "webp", "gif"}:
        ext = "img"
    return f"{imgrec_settings.UPLOAD_TO.rstrip('/')}/{uuid.uuid4().hex}.{ext}"


class ProductImage(models.Model):
    """A product photo uploaded through imgrec (admin or API); attaches to any host product."""

    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(_("product id"), max_length=64)
    product = GenericForeignKey("content_type", "object_id")
    image = ProductImageField(
        upload_to=product_image_upload_to,
        width_field="width",
        height_field="height",
        max_length=255,
        validators=[validate_product_image],
        verbose_name=_("image"),
    )
    width = models.PositiveIntegerField(null=True, editable=False, verbose_name=_("width"))
    height = models.PositiveIntegerField(null=True, editable=False, verbose_name=_("height"))
    file_hash = models.CharField(max_length=64, blank=True, editable=False, db_index=True, verbose_name=_("file hash"))
    alt_text = models.CharField(max_length=255, blank=True, verbose_name=_("alternative text"))
    position = models.PositiveIntegerField(default=0, verbose_name=_("position"))
    is_primary = models.BooleanField(default=False, verbose_name=_("primary image"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("product image")
        verbose_name_plural = _("product images")
        ordering = ["content_type", "object_id", "position", "pk"]
        indexes = [
            models.Index(fields=["content_type", "object_id"], name="imgrec_productimage_product"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id"],
                condition=Q(is_primary=True),
                name="imgrec_productimage_one_primary",
            ),
        ]

    def __str__(self) -> str:
        return f"Image {self.pk} of product {self.object_id}"

    def save(self, *args, **kwargs) -> None:
        # Hash the new file while it is still in memory, so an unchanged re-save costs nothing.
        file = self.image
        if file and not getattr(file, "_committed", True):
            from imgrec_app.ml.preprocess import sha256_of

            self.file_hash = sha256_of(file)
        from imgrec_app.services.images import save_product_image

        # A new primary demotes the product's old one (same transaction); a failed save leaves
        # no file behind.
        save_product_image(self, lambda: super(ProductImage, self).save(*args, **kwargs))


class IndexedImage(models.Model):
    """One image file that imgrec indexes, whatever model holds it, with its indexing state."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSING = "processing", _("Processing")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    # Which model and field the file comes from ("imgrec_app.productimage.image", ...) and the
    # row's primary key there.
    source = models.CharField(max_length=150, verbose_name=_("source"))
    source_id = models.CharField(max_length=64, verbose_name=_("source id"))
    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(_("product id"), max_length=64)
    product = GenericForeignKey("content_type", "object_id")
    file_name = models.CharField(max_length=500, verbose_name=_("file name"))
    # Bumped whenever the file changes; a task only writes results for the revision it read.
    revision = models.PositiveIntegerField(default=1, verbose_name=_("revision"))
    file_hash = models.CharField(max_length=64, blank=True, verbose_name=_("file hash"))
    width = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("width"))
    height = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("height"))
    is_primary = models.BooleanField(default=False, verbose_name=_("primary image"))
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, verbose_name=_("status"))
    # The model the status refers to (the configured backbone when the work was queued).
    model_id = models.CharField(max_length=200, blank=True, verbose_name=_("model id"))
    failure_reason = models.CharField(max_length=40, blank=True, verbose_name=_("failure reason"))
    failure_detail = models.TextField(blank=True, verbose_name=_("failure detail"))
    attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("attempts"))
    run = models.ForeignKey(
        "ReindexRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="images",
        verbose_name=_("re-index run"),
    )
    queued_at = models.DateTimeField(null=True, blank=True, verbose_name=_("queued at"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    # The claim a worker holds on this row while it is ``processing``: a random key the worker
    # holds a session-level Postgres advisory lock on until it is done.  When the worker dies,
    # Postgres drops the lock, so a claim whose lock nobody holds is dead (issue 13 §3.1).
    claim_token = models.BigIntegerField(null=True, blank=True, editable=False, verbose_name=_("claim token"))
    # When publishing this pending image's task last failed (broker down); the sweeper publishes
    # it again after ``REPUBLISH_AFTER`` seconds instead of ``STUCK_AFTER``.
    publish_failed_at = models.DateTimeField(null=True, blank=True, editable=False, verbose_name=_("publish failed at"))
    indexed_at = models.DateTimeField(null=True, blank=True, verbose_name=_("indexed at"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    objects = IndexedImageQuerySet.as_manager()

    class Meta:
        verbose_name = _("indexed image")
        verbose_name_plural = _("indexed images")
        ordering = ["pk"]
        permissions = [("reindex", "Can start a re-index")]
        indexes = [
            models.Index(fields=["content_type", "object_id"], name="imgrec_indexedimage_product"),
            models.Index(fields=["status", "queued_at"], name="imgrec_indexedimage_status"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["source", "source_id"], name="imgrec_indexedimage_source_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status})"


class ImageEmbedding(models.Model):
    """A vector of one image made by one model (``model_id`` names backbone, weights, preprocessing)."""

    image = models.ForeignKey(
        IndexedImage, on_delete=models.CASCADE, related_name="embeddings", verbose_name=_("image")
    )
    model_id = models.CharField(max_length=200, verbose_name=_("model id"))
    # Unsized on purpose: several models (of different sizes) live side by side during a switch.
    # Indexes are per model: partial expression indexes cast to the model's dimension.
    vector = VectorField(verbose_name=_("vector"))
    file_hash = models.CharField(max_length=64, verbose_name=_("file hash"))
    # Generic labels from the backbone's classifier head: [{"label": ..., "score": ...}, ...].
    labels = models.JSONField(default=list, blank=True, verbose_name=_("labels"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("image embedding")
        verbose_name_plural = _("image embeddings")
        constraints = [
            models.UniqueConstraint(fields=["image", "model_id"], name="imgrec_imageembedding_image_model_unique"),
        ]
        indexes = [models.Index(fields=["model_id", "file_hash"], name="imgrec_embedding_hash")]

    def __str__(self) -> str:
        return f"{self.model_id} vector of image {self.image_id}"


class ProductVector(models.Model):
    """A product's vector for one model: the normalised mean of its image (or text) vectors.

    ``learned`` vectors are a tuning run's image + text head applied to the product's base image
    vector and text vector (``services/learned.py``).
    """

    class Modality(models.TextChoices):
        IMAGE = "image", _("Image")
        TEXT = "text", _("Text")
        LEARNED = "learned", _("Learned (image + text)")

    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(_("product id"), max_length=64)
    product = GenericForeignKey("content_type", "object_id")
    modality = models.CharField(
        max_length=8, choices=Modality.choices, default=Modality.IMAGE, verbose_name=_("modality")
    )
    model_id = models.CharField(max_length=200, verbose_name=_("model id"))
    vector = VectorField(verbose_name=_("vector"))
    source_count = models.PositiveIntegerField(default=1, verbose_name=_("source count"))
    # Hash of what the vector was made from (text vectors: the product text), to skip no-op work.
    source_hash = models.CharField(max_length=64, blank=True, verbose_name=_("source hash"))
    # Generic labels averaged over the product's images (image modality only).
    labels = models.JSONField(default=list, blank=True, verbose_name=_("labels"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    objects = ProductVectorQuerySet.as_manager()

    class Meta:
        verbose_name = _("product vector")
        verbose_name_plural = _("product vectors")
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id", "model_id"],
                name="imgrec_productvector_product_model_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_id} vector of product {self.object_id}"


class PendingText(models.Model):
    """A product whose text vector is to be (re)made; text tasks claim these greedily."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.CharField(_("product id"), max_length=64)
    queued_at = models.DateTimeField(default=timezone.now)
    # When publishing its task last failed (broker down); see ``REPUBLISH_AFTER``.
    publish_failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["content_type", "object_id"], name="imgrec_pendingtext_product_unique"),
        ]

    def __str__(self) -> str:
        return f"Text of product {self.object_id} waiting"


class ServingModel(models.Model):
    """Which model's vectors answer queries, per modality; switched when a backfill completes."""

    modality = models.CharField(max_length=8, unique=True, verbose_name=_("modality"))
    model_id = models.CharField(max_length=200, verbose_name=_("model id"))
    dimensions = models.PositiveIntegerField(verbose_name=_("dimensions"))
    switched_at = models.DateTimeField(auto_now=True, verbose_name=_("switched at"))

    class Meta:
        verbose_name = _("serving model")
        verbose_name_plural = _("serving models")

    def __str__(self) -> str:
        return f"{self.modality}: {self.model_id}"


class ReindexRun(models.Model):
    """A re-index started from the admin, the API or ``imgrec_reindex``; progress is read from it."""

    scope = models.CharField(max_length=20, verbose_name=_("scope"))
    model_id = models.CharField(max_length=200, verbose_name=_("model id"))
    total = models.PositiveIntegerField(default=0, verbose_name=_("total"))
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("requested by"),
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))

    class Meta:
        verbose_name = _("re-index run")
        verbose_name_plural = _("re-index runs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Re-index {self.scope} at {self.created_at:%Y-%m-%d %H:%M}"


class CategoryClassifier(models.Model):
    """A linear classifier of shop categories trained on product vectors of one model."""

    model_id = models.CharField(max_length=200, verbose_name=_("model id"))
    # The text model whose vectors were appended to the image vectors ("": image vectors only).
    text_model_id = models.CharField(max_length=200, blank=True, default="", verbose_name=_("text model id"))
    categories = models.JSONField(verbose_name=_("categories"))
    # Weights of the linear head: coef (n_classes × dim) and intercept (n_classes), as lists.
    coef = models.JSONField(verbose_name=_("coefficients"))
    intercept = models.JSONField(verbose_name=_("intercept"))
    cv_accuracy = models.FloatField(null=True, blank=True, verbose_name=_("cross-validated accuracy"))
    baseline_accuracy = models.FloatField(null=True, blank=True, verbose_name=_("baseline accuracy"))
    sample_count = models.PositiveIntegerField(default=0, verbose_name=_("sample count"))
    is_active = models.BooleanField(default=True, verbose_name=_("active"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("category classifier")
        verbose_name_plural = _("category classifiers")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Classifier {self.pk} ({self.model_id}, {len(self.categories)} categories)"


class CategoryPrediction(models.Model):
    """The shop category a classifier predicts for a product, next to the one assigned to it."""

    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(_("product id"), max_length=64)
    product = GenericForeignKey("content_type", "object_id")
    classifier = models.ForeignKey(
        CategoryClassifier, on_delete=models.CASCADE, related_name="predictions", verbose_name=_("classifier")
    )
    category = models.CharField(max_length=200, verbose_name=_("category"))
    confidence = models.FloatField(verbose_name=_("confidence"))
    assigned_category = models.CharField(max_length=200, blank=True, verbose_name=_("assigned category"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("category prediction")
        verbose_name_plural = _("category predictions")
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id"], name="imgrec_categoryprediction_product_unique"
            ),
        ]

    @property
    def disagrees(self) -> bool:
        return bool(self.assigned_category) and self.assigned_category != self.category

    def __str__(self) -> str:
        return f"{self.object_id}: {self.category} ({self.confidence:.2f})"


class Interaction(models.Model):
    """One event of a visitor's browsing history: a product view, add-to-cart or purchase.

    Anonymous visitors are identified by a random ``visitor_id`` kept in their session (not the
    session key, which changes at login); on login their rows are given the user, once.
    """

    class Kind(models.TextChoices):
        VIEW = "view", _("Viewed")
        CART = "cart", _("Added to cart")
        PURCHASE = "purchase", _("Purchased")

    visitor_id = models.UUIDField(null=True, blank=True, verbose_name=_("visitor id"))
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("user"),
    )
    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(_("product id"), max_length=64)
    product = GenericForeignKey("content_type", "object_id")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.VIEW, verbose_name=_("kind"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("interaction")
        verbose_name_plural = _("interactions")
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="imgrec_interaction_user"),
            models.Index(fields=["visitor_id", "-created_at"], name="imgrec_interaction_visitor"),
            models.Index(fields=["content_type", "object_id", "-created_at"], name="imgrec_interaction_product"),
            models.Index(fields=["created_at"], name="imgrec_interaction_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | Q(visitor_id__isnull=False),
                name="imgrec_interaction_has_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id} by {self.user_id or self.visitor_id}"


class CoView(models.Model):
    """How many visitors interacted with both products (item-to-item collaborative filtering).

    Rebuilt from :class:`Interaction` by the ``imgrec.refresh_coviews`` task; one row per ordered
    pair so a product's neighbours are one indexed lookup.
    """

    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(max_length=64, verbose_name=_("product id"))
    other_id = models.CharField(max_length=64, verbose_name=_("other product id"))
    visitors = models.PositiveIntegerField(verbose_name=_("visitors"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("viewed-together pair")
        verbose_name_plural = _("viewed-together pairs")
        constraints = [
            models.UniqueConstraint(fields=["content_type", "object_id", "other_id"], name="imgrec_coview_pair_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.object_id} & {self.other_id}: {self.visitors}"


class BoughtTogether(models.Model):
    """How many shoppers put both products in a basket (cart or purchase) within one visit window.

    Rebuilt from :class:`Interaction` by the ``imgrec.refresh_bought_together`` task, one row per
    ordered pair with at least ``BOUGHT_TOGETHER_MIN_SUPPORT`` shoppers, so a product's shelf is one
    indexed lookup.
    """

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.CharField(_("product id"), max_length=64)
    other_id = models.CharField(_("other product id"), max_length=64)
    shoppers = models.PositiveIntegerField(_("shoppers"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("bought-together pair")
        verbose_name_plural = _("bought-together pairs")
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id", "other_id"], name="imgrec_boughttogether_pair_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.object_id} & {self.other_id}: {self.shoppers}"


class ShopperControl(models.Model):
    """A visitor's own say over their shelves: "not interested" in a product, or personalisation paused.

    Owned like :class:`Interaction` (a user, or an anonymous visitor id kept in the session) and
    given to the user at login with the history.
    """

    class Kind(models.TextChoices):
        NOT_INTERESTED = "not_interested", _("Not interested")
        PAUSED = "paused", _("Personalisation paused")

    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    visitor_id = models.UUIDField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    object_id = models.CharField(_("product id"), max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("shopper control")
        verbose_name_plural = _("shopper controls")
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | Q(visitor_id__isnull=False),
                name="imgrec_shoppercontrol_has_owner",
            ),
            models.UniqueConstraint(
                fields=["user", "kind", "object_id"],
                condition=Q(user__isnull=False),
                name="imgrec_shoppercontrol_user_unique",
            ),
            models.UniqueConstraint(
                fields=["visitor_id", "kind", "object_id"],
                condition=Q(user__isnull=True),
                name="imgrec_shoppercontrol_visitor_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id} by {self.user_id or self.visitor_id}"


class TuningRun(models.Model):
    """A run that learns the shop's catalogue: a projection head on frozen backbone vectors.

    Its result is a new model version (``model_id`` = ``<base model id>:head<pk>``) whose image
    vectors are the head applied to the base vectors; it serves once it is the active run and
    its backfill is complete (the model-switch machinery of ``ServingModel``).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        TRAINING = "training", _("Training")
        EVALUATING = "evaluating", _("Evaluating (held-out)")
        BACKFILLING = "backfilling", _("Writing tuned vectors")
        READY = "ready", _("Ready")
        REFUSED = "refused", _("Refused")
        FAILED = "failed", _("Failed")

    base_model_id = models.CharField(max_length=200)
    # The tuned model's id, set when the run starts training.
    model_id = models.CharField(max_length=200, blank=True)
    dimensions = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    # The run whose head writes vectors for new images and (unless rolled back) serves.
    is_active = models.BooleanField(default=False)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    config = models.JSONField(default=dict, blank=True)
    # Held-out (k-fold by product) precision and classifier accuracy, tuned vs untuned.
    metrics = models.JSONField(default=dict, blank=True)
    categories = models.JSONField(default=list, blank=True)
    sample_count = models.PositiveIntegerField(default=0)
    weights = models.BinaryField(null=True, blank=True, editable=False)
    # The image + text head (product vectors ``<model_id>:learned``), when the shop has texts.
    learned_weights = models.BinaryField(null=True, blank=True, editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [("tune", "Can start a tuning run")]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="imgrec_tuningrun_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"Tuning run {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.READY, self.Status.REFUSED, self.Status.FAILED)


# Measured shelves (issue 15 §2) live in their own module; importable from here as well.
from imgrec_app.models_tracking import (  # noqa: E402,F401
    ExperimentAssignment,
    ShelfClick,
    ShelfConversion,
    ShelfImpression,
)
