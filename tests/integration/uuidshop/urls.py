"""The shop's URLs plus imgrec's, mounted as the README says."""

from django.contrib import admin
from django.urls import include, path

from tests.integration.uuidshop.shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("products/<uuid:pk>/", views.ProductDetail.as_view(), name="product"),
    path("imgrec/", include("imgrec_app.urls")),
    path("api/imgrec/", include("imgrec_app.api.urls")),
]
