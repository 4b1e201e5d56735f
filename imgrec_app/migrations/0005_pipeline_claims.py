# Issue 13 §3.1 and "Also seen": live/dead claims and failed publishes of IndexedImage rows;
# issue 12 "Freshness": PendingText, the products waiting for a text vector.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("imgrec_app", "0004_shopper_controls"),
    ]

    operations = [
        migrations.AddField(
            model_name="indexedimage",
            name="claim_token",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="indexedimage",
            name="publish_failed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.CreateModel(
            name="PendingText",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("object_id", models.CharField(max_length=64, verbose_name="product id")),
                ("queued_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("publish_failed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "content_type",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="contenttypes.contenttype",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("content_type", "object_id"), name="imgrec_pendingtext_product_unique"
                    )
                ],
            },
        ),
    ]
