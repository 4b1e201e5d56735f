"""The OpenAPI schema of imgrec's API, right wherever the host mounts it.

- Every imgrec view documents itself with drf-spectacular's ``AutoSchema`` whatever the host's
  ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`` (DRF's default cannot read ``@extend_schema`` and
  the schema view answered 500 with "Incompatible AutoSchema"): the views' class attribute and
  :func:`extend_schema` below, which views.py uses instead of drf-spectacular's.
- Paths carry the mount prefix (``/api/imgrec/products/...``, read from the request) and
  ``servers`` names the site root (with ``SCRIPT_NAME``), so a generated client calls the URLs
  that exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.handlers.wsgi import get_script_name
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema as spectacular_extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

SCHEMA_SUFFIX = "schema/"


def extend_schema(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """drf-spectacular's ``extend_schema``, built on its ``AutoSchema`` even where the host's
    ``DEFAULT_SCHEMA_CLASS`` is DRF's: the decorator takes the base class from the decorated
    function's ``schema`` attribute first, so it is set for the time of the decoration."""
    decorator = spectacular_extend_schema(*args, **kwargs)

    def wrap(func: Any) -> Any:
        pinned = not hasattr(func, "schema")
        if pinned:
            func.schema = AutoSchema
        try:
            return decorator(func)
        finally:
            if pinned:
                del func.schema

    return wrap


def use_spectacular_schema(*views: type[APIView]) -> None:
    """Give views drf-spectacular's AutoSchema (what ``DEFAULT_SCHEMA_CLASS`` would do)."""
    for view in views:
        view.schema = AutoSchema()


def mount_prefix(request: Request) -> str:
    """Where imgrec's API is mounted (``"/api/imgrec/"``), from the schema view's own path."""
    path = request.path_info
    return path[: -len(SCHEMA_SUFFIX)] if path.endswith(SCHEMA_SUFFIX) else "/"


class ImgrecSchemaView(SpectacularAPIView):
    """``GET schema/``: the OpenAPI 3 document of imgrec's endpoints only."""

    urlconf = "imgrec_app.api.urls"
    schema = AutoSchema()

    @extend_schema(exclude=True)  # the document, not an operation of the API it describes
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def _get_schema_response(self, request: Request) -> Response:
        response = super()._get_schema_response(request)
        root = get_script_name(request.META).rstrip("/") or "/"  # FORCE_SCRIPT_NAME or SCRIPT_NAME
        response.data = with_mount_prefix(response.data, mount_prefix(request), server=root)
        return response


def with_mount_prefix(document: dict[str, Any], prefix: str, *, server: str = "/") -> dict[str, Any]:
    """The schema with ``prefix`` in front of every path and the site root as its server."""
    base = prefix.rstrip("/")
    document = dict(document)
    document["paths"] = {base + path: item for path, item in document.get("paths", {}).items()}
    document["servers"] = [{"url": server}]
    return document
