"""Admin for the demo catalogue, with imgrec's product-image inline."""

from django.contrib import admin

from imgrec_app.admin import ProductImageInline, reindex_products_action
from shop_demo.catalog.models import Category, Product


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "category", "price", "stock", "published"]
    list_filter = ["category", "published"]
    search_fields = ["name", "description"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [ProductImageInline]
    actions = [reindex_products_action]
