"""Measured shelves: impressions, clicks through signed shelf links, attributed carts/purchases, and
the experiment assignments of logged-in users (issue 15 §2).

Importable as ``imgrec_app.models.<Name>`` (``models.py`` re-exports them).  The rows hold nothing
personal beyond the owner (an anonymous visitor id or the user) that the history already holds;
they are purged with the history (``HISTORY_RETENTION_DAYS``).  See docs/DESIGN.md, "Measured
shelves".
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ShelfImpression(models.Model):
    """One rendered shelf (server render) or one shelf seen (beacon), with the ids it showed."""

    rec_id = models.UUIDField(_("recommendation id"), unique=True)
    visitor_id = models.UUIDField(_("visitor id"), null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("user"),
    )
    # "similar" | "foryou" | "bought_together" | "recently_viewed" | "search" | "popular"
    shelf = models.CharField(_("shelf"), max_length=24)
    # The shelf's main source: the most common item source ("similar:image", "fallback:trending", ...).
    source = models.CharField(_("source"), max_length=40, blank=True)
    experiment = models.CharField(_("experiment"), max_length=64, blank=True)
    variant = models.CharField(_("variant"), max_length=64, blank=True)
    anchor_id = models.CharField(_("anchor product id"), max_length=64, blank=True)
    item_ids = models.JSONField(_("product ids"), default=list)
    item_sources = models.JSONField(_("item sources"), default=list)
    seen = models.BooleanField(_("seen"), default=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("shelf impression")
        verbose_name_plural = _("shelf impressions")
        indexes = [
            models.Index(fields=["visitor_id", "-created_at"], name="imgrec_impression_visitor"),
            models.Index(fields=["user", "-created_at"], name="imgrec_impression_user"),
            models.Index(fields=["experiment", "variant", "created_at"], name="imgrec_impression_experiment"),
            models.Index(fields=["shelf", "created_at"], name="imgrec_impression_shelf"),
        ]

    def __str__(self) -> str:
        return f"{self.shelf} shelf {self.rec_id}"


class ShelfClick(models.Model):
    """A product page opened through a signed shelf link; a reload is not a second click."""

    impression = models.ForeignKey(
        ShelfImpression, on_delete=models.CASCADE, related_name="clicks", verbose_name=_("impression")
    )
    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("product type")
    )
    object_id = models.CharField(_("product id"), max_length=64)
    position = models.PositiveSmallIntegerField(_("position"))
    source = models.CharField(_("source"), max_length=40, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("shelf click")
        verbose_name_plural = _("shelf clicks")
        indexes = [
            models.Index(fields=["content_type", "object_id", "-created_at"], name="imgrec_shelfclick_product"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["impression", "object_id"], name="imgrec_shelfclick_once"),
        ]

    def __str__(self) -> str:
        return f"click on {self.object_id} (position {self.position})"


class ShelfConversion(models.Model):
    """An add-to-cart or purchase of a product the same visitor clicked on a shelf within the window."""

    click = models.ForeignKey(ShelfClick, on_delete=models.CASCADE, related_name="conversions", verbose_name=_("click"))
    kind = models.CharField(_("kind"), max_length=10)
    interaction = models.ForeignKey(
        "imgrec_app.Interaction",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("interaction"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("shelf conversion")
        verbose_name_plural = _("shelf conversions")
        constraints = [
            models.UniqueConstraint(fields=["click", "kind"], name="imgrec_shelfconversion_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} after click {self.click_id}"


class ExperimentAssignment(models.Model):
    """The variant of an experiment a logged-in user sees, stored so it survives new sessions.

    Anonymous visitors need no row: their variant is a hash of the experiment and their visitor
    id; at login it is written here for the user (unless the user already has one).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("user")
    )
    experiment = models.CharField(_("experiment"), max_length=64)
    # "" = outside the experiment's traffic (sees the defaults, not counted).
    variant = models.CharField(_("variant"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("experiment assignment")
        verbose_name_plural = _("experiment assignments")
        constraints = [
            models.UniqueConstraint(fields=["user", "experiment"], name="imgrec_assignment_once"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment}: {self.variant or '-'} for user {self.user_id}"


__all__ = ["ExperimentAssignment", "ShelfClick", "ShelfConversion", "ShelfImpression"]
