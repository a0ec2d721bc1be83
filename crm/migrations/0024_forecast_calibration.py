# Forecast calibration (issue 20, KPIS.md §10.6): forecast categories on stages and deals, and the
# versions of each stage's probability (every existing stage gets its first one, valid since ever).

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import accounts.dates

CATEGORIES = [
    ("commit", "Commit"),
    ("best_case", "Best case"),
    ("pipeline", "Pipeline"),
    ("omitted", "Omitted"),
]


def seed_versions(apps, schema_editor):
    from crm.forecasting.services import stage_versions_seed

    stage_versions_seed(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0023_automation_run_created_brin"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="StageProbabilityVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "probability",
                    models.PositiveSmallIntegerField(
                        validators=[
                            django.core.validators.MinValueValidator(0),
                            django.core.validators.MaxValueValidator(100),
                        ],
                        verbose_name="probability %",
                    ),
                ),
                (
                    "valid_from",
                    models.DateTimeField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="valid from"
                    ),
                ),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("initial", "As the stage was when versions began"),
                            ("admin", "Changed in the pipeline settings"),
                            ("calibration", "Suggested by the calibration and applied"),
                            ("seed", "Set when the stage was created"),
                            ("demo", "Demo data"),
                        ],
                        max_length=12,
                        verbose_name="reason",
                    ),
                ),
                ("note", models.CharField(blank=True, max_length=300, verbose_name="note")),
            ],
            options={
                "verbose_name": "stage probability version",
                "verbose_name_plural": "stage probability versions",
                "ordering": ["stage", "valid_from", "id"],
            },
        ),
        migrations.AddField(
            model_name="deal",
            name="forecast_category",
            field=models.CharField(
                blank=True,
                choices=CATEGORIES,
                db_default="",
                default="",
                help_text="Leave empty to use the stage's category.",
                max_length=10,
                verbose_name="forecast category",
            ),
        ),
        migrations.AddField(
            model_name="historicaldeal",
            name="forecast_category",
            field=models.CharField(
                blank=True,
                choices=CATEGORIES,
                db_default="",
                default="",
                help_text="Leave empty to use the stage's category.",
                max_length=10,
                verbose_name="forecast category",
            ),
        ),
        migrations.AddField(
            model_name="pipelinestage",
            name="forecast_category",
            field=models.CharField(
                choices=CATEGORIES,
                db_default="pipeline",
                default="pipeline",
                help_text="The forecast category of the stage's deals, unless a deal sets its own.",
                max_length=10,
                verbose_name="forecast category",
            ),
        ),
        migrations.AddConstraint(
            model_name="deal",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("forecast_category__in", ["", "commit", "best_case", "pipeline", "omitted"])
                ),
                name="deal_forecast_category",
            ),
        ),
        migrations.AddConstraint(
            model_name="pipelinestage",
            constraint=models.CheckConstraint(
                condition=models.Q(("forecast_category__in", ["commit", "best_case", "pipeline", "omitted"])),
                name="stage_forecast_category",
            ),
        ),
        migrations.AddField(
            model_name="stageprobabilityversion",
            name="set_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="set by",
            ),
        ),
        migrations.AddField(
            model_name="stageprobabilityversion",
            name="stage",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="probability_versions",
                to="crm.pipelinestage",
                verbose_name="stage",
            ),
        ),
        migrations.AddIndex(
            model_name="stageprobabilityversion",
            index=models.Index(fields=["stage", "-valid_from", "-id"], name="stageprobability_stage_from"),
        ),
        migrations.AddConstraint(
            model_name="stageprobabilityversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("probability__gte", 0), ("probability__lte", 100)),
                name="stageprobability_0_100",
            ),
        ),
        migrations.RunPython(seed_versions, migrations.RunPython.noop),
    ]
