"""DRF views of the measured shelves: the "seen" beacon and the visitor's own experiment variants."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from imgrec_app.api.parsers import BoundedJSONParser
from imgrec_app.api.schema import extend_schema, use_spectacular_schema
from imgrec_app.api.views import CsrfForAllMixin, PrivateResponseMixin
from imgrec_app.services import experiments, tracking


class BeaconThrottle(BaseThrottle):
    """``IMGREC["TRACKING_BEACON_RATE"]`` per visitor, counted in the shared throttle cache."""

    def allow_request(self, request: Request, view: Any) -> bool:
        return tracking.beacon_allowed(request._request)


class SeenSerializer(serializers.Serializer):
    rec_id = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=tracking.MAX_BEACON_IDS, allow_empty=False
    )


class SeenView(PrivateResponseMixin, CsrfForAllMixin, APIView):
    """POST ``rec_id`` (one or a list): the visitor's own shelves with these ids were seen.

    204 whatever the ids (another visitor's or unknown ones change nothing and reveal nothing).
    """

    permission_classes = [permissions.AllowAny]
    throttle_classes = [BeaconThrottle]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=SeenSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        self.enforce_csrf(request)
        body: Any = request.data
        if hasattr(body, "getlist"):  # a form: rec_id repeated
            raw: Any = body.getlist("rec_id")
        elif isinstance(body, dict):  # JSON: one id or a list
            raw = body.get("rec_id")
            raw = raw if isinstance(raw, list) else [raw]
        else:
            raise ValidationError({"rec_id": "Send an object with rec_id (one id or a list)."})
        data = SeenSerializer(data={"rec_id": raw})
        data.is_valid(raise_exception=True)
        tracking.mark_seen(request._request, data.validated_data["rec_id"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class ExperimentsView(PrivateResponseMixin, APIView):
    """The current visitor's own variant in each active experiment (None: not in it)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "ImgrecExperiments",
            {
                "results": serializers.ListField(
                    child=inline_serializer(
                        "ImgrecAssignment",
                        {
                            "experiment": serializers.CharField(),
                            "variant": serializers.CharField(allow_null=True),
                            "shelves": serializers.ListField(child=serializers.CharField()),
                            "is_control": serializers.BooleanField(),
                        },
                    )
                )
            },
        )
    )
    def get(self, request: Request) -> Response:
        return Response({"results": experiments.assignments(request._request)})


use_spectacular_schema(SeenView, ExperimentsView)
