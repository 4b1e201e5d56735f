# Issue 13 §3.1 and "Also seen": live/dead claims and failed publishes of IndexedImage rows.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("imgrec_app", "0002_categoryclassifier_text_model_id"),
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
    ]
