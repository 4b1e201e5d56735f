"""Catalogue URLs."""

from django.urls import path

from shop_demo.catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.product_list, name="home"),
    path("c/<slug:slug>/", views.product_list, name="category"),
    path("p/<slug:slug>/", views.ProductDetailView.as_view(), name="product"),
    path("search/photo/", views.search_photo, name="search_photo"),
    path("history/", views.your_history, name="history"),
]
