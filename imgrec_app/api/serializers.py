"""Read-only serializers of shelf results and events."""

from __future__ import annotations

from rest_framework import serializers

from imgrec_app.models import Interaction


class RecommendationSerializer(serializers.Serializer):
    """One shelf item: the product, its score and why it is there."""

    product_id = serializers.CharField(read_only=True)
    score = serializers.FloatField(read_only=True)
    reason = serializers.CharField(read_only=True)
    source = serializers.CharField(read_only=True, help_text="similar:image, for_you:interest, fallback:trending, ...")  # type: ignore[assignment]
    because_of = serializers.ListField(child=serializers.CharField(), read_only=True)
    name = serializers.CharField(read_only=True)
    url = serializers.CharField(read_only=True, allow_null=True)
    image_url = serializers.CharField(read_only=True, allow_null=True)


class ShelfSerializer(serializers.Serializer):
    results = RecommendationSerializer(many=True, read_only=True)


class EventSerializer(serializers.Serializer):
    product_id = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=Interaction.Kind.choices, default=Interaction.Kind.VIEW)


class HistoryItemSerializer(serializers.Serializer):
    product_id = serializers.CharField(read_only=True)
    kind = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class HistorySerializer(serializers.Serializer):
    results = HistoryItemSerializer(many=True, read_only=True)


class SearchSerializer(serializers.Serializer):
    image = serializers.FileField()
    limit = serializers.IntegerField(required=False, min_value=1, default=8)


class ReindexSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["all", "missing", "stale", "failed"], default="missing")


class RunSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    scope = serializers.CharField()
    total = serializers.IntegerField()
    ready = serializers.IntegerField()
    failed = serializers.IntegerField()
    remaining = serializers.IntegerField()
    elapsed = serializers.FloatField()
    rate = serializers.FloatField()
    eta = serializers.FloatField(allow_null=True)
    finished = serializers.BooleanField()
    created = serializers.BooleanField(required=False)


class ProductImageSerializer(serializers.ModelSerializer):
    """Upload of a product photo (validated from its header with imgrec's rules)."""

    class Meta:
        from imgrec_app.models import ProductImage

        model = ProductImage
        fields = ["id", "image", "alt_text", "position", "is_primary", "width", "height", "file_hash", "created_at"]
        read_only_fields = ["id", "width", "height", "file_hash", "created_at"]


class ProductRefSerializer(serializers.Serializer):
    product_id = serializers.CharField(max_length=64)


class ControlsSerializer(serializers.Serializer):
    paused = serializers.BooleanField(read_only=True)
    not_interested = serializers.ListField(child=serializers.CharField(), read_only=True)
