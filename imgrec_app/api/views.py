"""DRF views: thin, they call services.  Per-visitor responses are private (``Vary: Cookie``,
``Cache-Control: private``); every write, anonymous ones included, is CSRF-checked, with or
without a session."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.cache import patch_cache_control, patch_vary_headers
from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from imgrec_app.api import serializers as s
from imgrec_app.api.parsers import BoundedJSONParser
from imgrec_app.api.schema import extend_schema, use_spectacular_schema  # works whatever DEFAULT_SCHEMA_CLASS
from imgrec_app.conf import imgrec_settings, override
from imgrec_app.hosts import get_product_model, get_visible_product
from imgrec_app.services import controls, experiments, history, presentation, recommend, similar, throttle


class PrivateResponseMixin:
    """Responses that depend on who asks must never be shared by caches."""

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        patch_vary_headers(response, ["Cookie"])
        patch_cache_control(response, private=True, no_cache=True)
        return response


class CsrfForAllMixin:
    """DRF checks CSRF only for logged-in users; these writes are checked for every visitor.

    Not only when a session cookie comes with the request: a cookie-less cross-site form POST
    would otherwise be accepted and start a new session (issue 13, "Also seen").  A shop's page
    always has Django's CSRF cookie to send back (``X-CSRFToken``), so its own scripts pass; a
    client without cookies has no business writing a visitor's history (docs/DESIGN.md).
    """

    def enforce_csrf(self, request: Request) -> None:
        SessionAuthentication().enforce_csrf(request)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "8")
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({"limit": f"Must be an integer between 1 and {imgrec_settings.MAX_LIMIT}."}) from None
    if not 1 <= value <= imgrec_settings.MAX_LIMIT:
        raise ValidationError({"limit": f"Must be between 1 and {imgrec_settings.MAX_LIMIT}."})
    return value


def _product(product_id: str) -> Any:
    model = get_product_model()
    try:
        pk = model._meta.pk.to_python(product_id)
        return model._default_manager.get(pk=pk)
    except (ObjectDoesNotExist, DjangoValidationError, ValueError, TypeError):
        raise Http404("No such product.") from None


def _shelf_response(request: Request, items_for: Any, limit: int) -> Response:
    """A public shelf; for a visitor who said "not interested" to something, filtered and private."""
    if not controls.dismissed_ids(request._request):
        return Response({"results": presentation.describe(items_for(limit), request)})
    items = controls.shelf(request._request, items_for, limit=limit)
    response = Response({"results": presentation.describe(items, request)})
    patch_vary_headers(response, ["Cookie"])
    patch_cache_control(response, private=True, no_cache=True)
    return response


def _measured(
    request: Request, response: Response, shelf: str, *, anchor: Any = None, personal: bool = False
) -> Response:
    """``?track=1``: record the shelf's impression, sign its item URLs and add its ``rec_id``
    (services/tracking.py).  A tracked answer, or one shaped by the visitor's experiment variant,
    is private."""
    from types import SimpleNamespace

    from imgrec_app.services import tracking

    track = request.query_params.get("track", "").lower() in ("1", "true", "yes")
    results = response.data.get("results", [])
    rec_id = None
    if track and results:
        items = [SimpleNamespace(product_id=r["product_id"], source=r.get("source", "")) for r in results]
        rec_id = tracking.record_impression(request._request, shelf=shelf, items=items, anchor=anchor)
    if rec_id is not None:
        for position, r in enumerate(results, start=1):
            r["url"] = tracking.tracked_url(r.get("url") or "", rec_id, position, r["product_id"]) or None
        response.data["rec_id"] = str(rec_id)
    if track or personal:
        patch_vary_headers(response, ["Cookie"])
        patch_cache_control(response, private=True, no_cache=True)
    return response


def _visible_product(product_id: Any) -> Any:
    """A product the visitor may see; a hidden one is a 404 exactly like a missing one."""
    try:
        return get_visible_product(product_id)
    except LookupError:
        raise Http404("No such product.") from None


def _validate_upload(file: Any) -> None:
    from imgrec_app.validators import validate_product_image

    try:
        validate_product_image(file)
    except DjangoValidationError as exc:
        raise ValidationError({"image": exc.messages}, code=exc.code) from exc


LIMIT_PARAM = OpenApiParameter("limit", int, description=f"Shelf size, 1..{50}", required=False)
TRACK_PARAM = OpenApiParameter(
    "track",
    bool,
    required=False,
    description="Record this shelf's impression: the answer then also has a top-level rec_id (the impression's "
    "id) and signed item URLs, and is private.",
)


class SimilarProductsView(APIView):
    """Products similar to one product (the same for every visitor: publicly cacheable)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(
        parameters=[LIMIT_PARAM, OpenApiParameter("same_category", bool, required=False), TRACK_PARAM],
        responses=s.ShelfSerializer,
    )
    def get(self, request: Request, product_id: str) -> Response:
        limit = _limit(request)
        # Only while an experiment runs on this shelf does the public answer depend on the visitor.
        assigned = experiments.for_shelf(request._request, "similar") if experiments.active() else None
        if request.query_params.get("same_category", "").lower() in ("1", "true", "yes"):
            product = _visible_product(product_id)

            def same_category_items(n: int) -> list[Any]:
                with override(assigned.settings if assigned else None):
                    return recommend.similar_products(product, limit=n, same_category=True)

            response = _shelf_response(request, same_category_items, limit)
            return _measured(request, response, "similar", anchor=product, personal=assigned is not None)

        def items_for(n: int) -> list[Any]:
            # No query for the product: cached, the check query answers its visibility (one query
            # in all); cold, the shelf statement does.
            with override(assigned.settings if assigned else None):
                items = similar.shelf_by_id(product_id, limit=n)
            if items is None:
                raise Http404("No such product.")
            return items

        response = _shelf_response(request, items_for, limit)
        return _measured(request, response, "similar", anchor=str(product_id), personal=assigned is not None)


class BoughtTogetherView(APIView):
    """Products frequently bought together with one product (public, from baskets of many shoppers)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(parameters=[LIMIT_PARAM], responses=s.ShelfSerializer)
    def get(self, request: Request, product_id: str) -> Response:
        from imgrec_app.services.bought_together import bought_together

        product = _visible_product(product_id)
        return _shelf_response(request, lambda n: bought_together(product, limit=n), _limit(request))


class RecommendationsView(PrivateResponseMixin, APIView):
    """Recommended for the current visitor, from their own history only (no ``?user=``)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(
        parameters=[
            LIMIT_PARAM,
            TRACK_PARAM,
            OpenApiParameter(
                "product",
                str,
                required=False,
                description="The product the visitor is looking at: it and its similar shelf are left out.",
            ),
        ],
        responses=s.ShelfSerializer,
    )
    def get(self, request: Request) -> Response:
        product_id = request.query_params.get("product")
        product = _visible_product(product_id) if product_id else None
        with experiments.applied(request._request, "foryou"):
            items = controls.for_you(request._request, limit=_limit(request), product=product)
        response = Response({"results": presentation.describe(items, request)})
        return _measured(request, response, "foryou", anchor=product)


class EventView(PrivateResponseMixin, CsrfForAllMixin, APIView):
    """Record a view, add-to-cart or purchase of the current visitor."""

    permission_classes = [permissions.AllowAny]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=s.EventSerializer, responses={201: s.EventSerializer, 204: None})
    def post(self, request: Request) -> Response:
        self.enforce_csrf(request)
        data = s.EventSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        product = _visible_product(data.validated_data["product_id"])
        row = history.record(request._request, product, kind=data.validated_data["kind"])
        if row is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"product_id": row.object_id, "kind": row.kind}, status=status.HTTP_201_CREATED)


class HistoryView(PrivateResponseMixin, CsrfForAllMixin, APIView):
    """The current visitor's own history: export it or clear it."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=s.HistorySerializer)
    def get(self, request: Request) -> Response:
        return Response({"results": history.export(request._request)})

    @extend_schema(responses={204: None})
    def delete(self, request: Request) -> Response:
        self.enforce_csrf(request)
        history.clear(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SearchView(PrivateResponseMixin, CsrfForAllMixin, APIView):
    """Search by photo: upload an image, get similar products (the photo is not stored)."""

    permission_classes = [permissions.AllowAny]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": s.SearchSerializer}, responses=s.ShelfSerializer)
    def post(self, request: Request) -> Response:
        self.enforce_csrf(request)
        files = request.FILES.getlist("image")
        if len(request.FILES) > 1 or len(files) > 1:
            raise ValidationError({"image": "Send exactly one image."})
        data = s.SearchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        limit = min(data.validated_data["limit"], imgrec_settings.MAX_LIMIT)
        try:
            # The shared, service-level throttle and decode bound (the shop's own search pages
            # go through the same function).
            items = throttle.search_by_photo(request, data.validated_data["image"], limit=limit)
        except throttle.Throttled as exc:
            raise Throttled(wait=exc.retry_after) from exc
        except throttle.Busy as exc:
            response = Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
            response["Retry-After"] = str(exc.retry_after)
            return response
        except DjangoValidationError as exc:
            raise ValidationError({"image": exc.messages, "code": getattr(exc, "code", None)}) from exc
        except LookupError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"results": presentation.describe(items, request)})


class CanReindex(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("imgrec_app.reindex"))


class StatusView(APIView):
    """Index status for staff."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        from imgrec_app.services import reindex

        return Response(reindex.index_status())


class ReindexView(APIView):
    """Start a re-index (staff with ``imgrec_app.reindex``); a repeat returns the running one."""

    permission_classes = [CanReindex]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=s.ReindexSerializer, responses={202: s.RunSerializer, 200: s.RunSerializer})
    def post(self, request: Request) -> Response:
        from imgrec_app.services import reindex

        data = s.ReindexSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        started = reindex.start_and_queue(data.validated_data["scope"], user=request.user)
        body = {**reindex.run_progress(started.run).as_dict(), "created": started.created}
        return Response(body, status=status.HTTP_202_ACCEPTED if started.created else status.HTTP_200_OK)


class ProductImagesView(APIView):
    """Upload a photo of a product (staff with ``imgrec_app.add_productimage``); it is indexed
    after commit.  Bad files are refused with the same errors as in the admin."""

    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self) -> list[Any]:
        return [permissions.IsAdminUser(), permissions.DjangoModelPermissions()]

    @property
    def queryset(self) -> Any:  # DjangoModelPermissions reads the model from here
        from imgrec_app.models import ProductImage

        return ProductImage.objects.none()

    @extend_schema(request={"multipart/form-data": s.ProductImageSerializer}, responses={201: s.ProductImageSerializer})
    def post(self, request: Request, product_id: str) -> Response:
        from django.contrib.contenttypes.models import ContentType
        from django.db import transaction

        product = _product(product_id)
        files = request.FILES.getlist("image")
        if len(request.FILES) > 1 or len(files) > 1:
            raise ValidationError({"image": "Send exactly one image per request."})
        if files:
            # Before the serializer: DRF's ImageField opens the upload with every Pillow plugin
            # (EPS, FITS, PSD...) and answers with a generic message; imgrec's check reads the
            # header with the allow-listed formats only, as the admin does.
            _validate_upload(files[0])
        data = s.ProductImageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            image = data.save(content_type=ContentType.objects.get_for_model(product), object_id=str(product.pk))
        return Response(s.ProductImageSerializer(image).data, status=status.HTTP_201_CREATED)


def _controls_state(request: Request) -> Response:
    return Response(
        {"paused": controls.is_paused(request._request), "not_interested": controls.dismissed_ids(request._request)}
    )


class ControlsView(PrivateResponseMixin, APIView):
    """The current visitor's shelf controls: personalisation paused, products marked "not interested"."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=s.ControlsSerializer)
    def get(self, request: Request) -> Response:
        return _controls_state(request)


class NotInterestedView(PrivateResponseMixin, CsrfForAllMixin, APIView):
    """POST: hide a product from the visitor's shelves (look-alikes move down); DELETE: undo."""

    permission_classes = [permissions.AllowAny]

    def _product_ref(self, request: Request) -> Any:
        self.enforce_csrf(request)
        data = s.ProductRefSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _visible_product(data.validated_data["product_id"])

    @extend_schema(request=s.ProductRefSerializer, responses=s.ControlsSerializer)
    def post(self, request: Request) -> Response:
        controls.not_interested(request._request, self._product_ref(request))
        return _controls_state(request)

    @extend_schema(request=s.ProductRefSerializer, responses=s.ControlsSerializer)
    def delete(self, request: Request) -> Response:
        controls.undo_not_interested(request._request, self._product_ref(request))
        return _controls_state(request)


class PauseView(PrivateResponseMixin, CsrfForAllMixin, APIView):
    """POST: pause personalisation (history kept, not used, no new views recorded); DELETE: resume."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(request=None, responses=s.ControlsSerializer)
    def post(self, request: Request) -> Response:
        self.enforce_csrf(request)
        controls.pause(request._request)
        return _controls_state(request)

    @extend_schema(request=None, responses=s.ControlsSerializer)
    def delete(self, request: Request) -> Response:
        self.enforce_csrf(request)
        controls.resume(request._request)
        return _controls_state(request)


# drf-spectacular's AutoSchema on every view of this module, whatever the host's
# REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] (imgrec_app/api/schema.py).
_VIEWS = [v for v in list(globals().values()) if isinstance(v, type) and issubclass(v, APIView)]
use_spectacular_schema(*(v for v in _VIEWS if v.__module__ == __name__))
