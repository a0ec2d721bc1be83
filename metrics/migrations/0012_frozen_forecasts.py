# Forecast calibration (issue 20, KPIS.md §10.6): forecasts frozen when their period begins, their per-deal
# items, and the stored stage calibration with its Brier scores.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import accounts.dates
import accounts.text

MONEY = {"decimal_places": 4, "default": 0, "max_digits": 20}
DATE = {"validators": [accounts.dates.validate_date_in_range]}


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0011_scope_customer_segment"),
        ("crm", "0026_velocity_cohorts"),
        ("accounts", "0011_api_tokens"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ForecastCalibration",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("computed_at", models.DateTimeField(**DATE, verbose_name="computed at")),
                ("window_start", models.DateTimeField(**DATE, verbose_name="closed from")),
                ("window_end", models.DateTimeField(**DATE, verbose_name="closed until")),
                (
                    "stages",
                    models.JSONField(
                        default=list, encoder=accounts.text.StorableJSONEncoder, verbose_name="stages"
                    ),
                ),
                (
                    "brier",
                    models.JSONField(
                        default=dict, encoder=accounts.text.StorableJSONEncoder, verbose_name="Brier scores"
                    ),
                ),
            ],
            options={
                "verbose_name": "forecast calibration",
                "verbose_name_plural": "forecast calibrations",
                "ordering": ["-computed_at", "-id"],
                "indexes": [models.Index(fields=["-computed_at", "-id"], name="forecastcalibration_latest")],
            },
        ),
        migrations.CreateModel(
            name="FrozenForecast",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("granularity", models.CharField(max_length=8, verbose_name="granularity")),
                ("period_start", models.DateTimeField(**DATE, verbose_name="period start")),
                ("period_end", models.DateTimeField(**DATE, verbose_name="period end")),
                ("scope", models.CharField(max_length=8, verbose_name="scope")),
                (
                    "scope_id",
                    models.CharField(blank=True, default="", max_length=40, verbose_name="scope id"),
                ),
                ("frozen_at", models.DateTimeField(**DATE, verbose_name="frozen at")),
                (
                    "reconstructed",
                    models.BooleanField(default=False, verbose_name="reconstructed from history"),
                ),
                ("won_to_date", models.DecimalField(**MONEY, verbose_name="won so far")),
                ("open_weighted", models.DecimalField(**MONEY, verbose_name="open deals, weighted")),
                ("forecast", models.DecimalField(**MONEY, verbose_name="weighted forecast")),
                ("commit", models.DecimalField(**MONEY, verbose_name="commit (open)")),
                ("best_case", models.DecimalField(**MONEY, verbose_name="best case (open)")),
                ("pipeline", models.DecimalField(**MONEY, verbose_name="pipeline (open)")),
                ("omitted", models.DecimalField(**MONEY, verbose_name="omitted (open)")),
                ("deals", models.PositiveIntegerField(default=0, verbose_name="open deals")),
                ("won_deals", models.PositiveIntegerField(default=0, verbose_name="deals won so far")),
            ],
            options={
                "verbose_name": "frozen forecast",
                "verbose_name_plural": "frozen forecasts",
                "ordering": ["granularity", "scope", "scope_id", "period_start"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("granularity", "period_start", "scope", "scope_id"),
                        name="frozenforecast_unique_key",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("period_end__gt", models.F("period_start"))),
                        name="frozenforecast_period",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("scope", "company"), ("scope_id", "")),
                            models.Q(
                                ("scope__in", ["team", "user"]), models.Q(("scope_id", ""), _negated=True)
                            ),
                            _connector="OR",
                        ),
                        name="frozenforecast_scope_id",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("granularity__in", ("week", "month", "quarter"))),
                        name="frozenforecast_granularity",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="FrozenForecastItem",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("granularity", models.CharField(max_length=8, verbose_name="granularity")),
                ("period_start", models.DateTimeField(**DATE, verbose_name="period start")),
                (
                    "amount",
                    models.DecimalField(
                        blank=True, decimal_places=2, max_digits=14, null=True, verbose_name="amount"
                    ),
                ),
                ("probability", models.PositiveSmallIntegerField(verbose_name="probability %")),
                ("category", models.CharField(blank=True, max_length=10, verbose_name="forecast category")),
                ("won", models.BooleanField(default=False, verbose_name="won already")),
                (
                    "deal",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="forecast_items",
                        to="crm.deal",
                        verbose_name="deal",
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "stage",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="crm.pipelinestage",
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="accounts.team",
                    ),
                ),
            ],
            options={
                "verbose_name": "frozen forecast item",
                "verbose_name_plural": "frozen forecast items",
                "ordering": ["granularity", "period_start", "deal"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("granularity", "period_start", "deal"), name="frozenforecastitem_unique_deal"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("probability__gte", 0), ("probability__lte", 100)),
                        name="frozenforecastitem_probability",
                    ),
                ],
            },
        ),
    ]
