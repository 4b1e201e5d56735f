"""A host that mounts imgrec's API somewhere else (tests/test_api_schema.py)."""

from django.urls import include, path

urlpatterns = [path("shop-api/v1/", include("imgrec_app.api.urls"))]
