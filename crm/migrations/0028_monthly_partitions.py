"""The tables that only grow become monthly range partitions (crm/ops/partitions.py): usage and sign-in
events, the deal stage, ticket status and customer status histories, and the KPI facts. The rows move into
the new tables in this migration's transaction; counts are compared before the old tables go. Reversible.
The models do not change (ids stay unique: one identity sequence per table)."""

from django.db import migrations

from crm.ops import partitions


def forwards(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table in partitions.PARTITIONED:
            partitions.partition(cursor, table)


def backwards(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table in partitions.PARTITIONED:
            partitions.unpartition(cursor, table)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0027_webhook_kpi_alert_event"),
        ("accounts", "0011_api_tokens"),
        ("metrics", "0015_campaign_scope"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
