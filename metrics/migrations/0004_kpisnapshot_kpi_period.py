"""The (kpi, granularity, period) index of the snapshots.

It was first added by rewriting 0003 after 0003 had already been applied where an earlier version
landed, so those databases never got it. Created here if missing; databases that ran the rewritten
0003 already have it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0003_kpi_facts"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="kpisnapshot",
                    index=models.Index(fields=["kpi", "granularity", "period_start"], name="kpisnapshot_kpi_period"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "CREATE INDEX IF NOT EXISTS kpisnapshot_kpi_period "
                    "ON metrics_kpisnapshot (kpi, granularity, period_start)",
                    reverse_sql="DROP INDEX IF EXISTS kpisnapshot_kpi_period",
                ),
            ],
        ),
    ]
