"""The demo shop's catalogue: the shop's own product model, which imgrec attaches to."""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from imgrec_app.fields import ProductImageField


class Category(models.Model):
    """A shop category."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:category", args=[self.slug])


class Product(models.Model):
    """A product of the demo shop, with its main photo in its own image field."""

    slug = models.SlugField(unique=True, max_length=120)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.PositiveIntegerField(default=0)
    published = models.BooleanField(default=True)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    # imgrec's field: validated from the header with imgrec's rules, names cut to fit the
    # filesystem's byte limit (a long non-ASCII file name would otherwise be an OSError).
    photo = ProductImageField(upload_to="catalog/", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:product", args=[self.slug])
