# Alerts (KPIS.md §10.8): one alert per KPI, scope and period, and who was told of it (issue 20).
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import accounts.dates
import accounts.text

KPI_VALUE = {"blank": True, "decimal_places": 6, "max_digits": 24, "null": True}
KINDS = [("pace", "Off target pace"), ("anomaly", "Anomaly")]


def _instant(name: str, **kwargs) -> models.DateTimeField:
    return models.DateTimeField(
        validators=[accounts.dates.validate_date_in_range], verbose_name=name, **kwargs
    )


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0012_frozen_forecasts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Alert",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("kpi", models.CharField(max_length=60, verbose_name="KPI")),
                (
                    "granularity",
                    models.CharField(
                        choices=[
                            ("week", "Week"),
                            ("month", "Month"),
                            ("quarter", "Quarter"),
                            ("year", "Year"),
                        ],
                        max_length=8,
                        verbose_name="granularity",
                    ),
                ),
                ("period_start", _instant("period start")),
                ("period_end", _instant("period end")),
                (
                    "scope",
                    models.CharField(
                        choices=[
                            ("company", "Company"),
                            ("team", "Team"),
                            ("user", "User"),
                            ("agent", "Support agent"),
                        ],
                        max_length=8,
                        verbose_name="scope",
                    ),
                ),
                (
                    "scope_id",
                    models.CharField(blank=True, default="", max_length=40, verbose_name="scope id"),
                ),
                ("kind", models.CharField(choices=KINDS, max_length=8, verbose_name="kind")),
                ("value", models.DecimalField(verbose_name="value", **KPI_VALUE)),
                (
                    "sample_size",
                    models.PositiveIntegerField(blank=True, null=True, verbose_name="sample size"),
                ),
                ("target", models.DecimalField(verbose_name="target", **KPI_VALUE)),
                ("projected", models.DecimalField(verbose_name="projected", **KPI_VALUE)),
                (
                    "percent_of_target",
                    models.IntegerField(blank=True, null=True, verbose_name="share of target at this pace (%)"),
                ),
                ("centre", models.DecimalField(verbose_name="centre line", **KPI_VALUE)),
                ("lower_limit", models.DecimalField(verbose_name="lower limit", **KPI_VALUE)),
                ("upper_limit", models.DecimalField(verbose_name="upper limit", **KPI_VALUE)),
                (
                    "why",
                    models.JSONField(
                        blank=True,
                        default=dict,
                        encoder=accounts.text.StorableJSONEncoder,
                        verbose_name="biggest contributor",
                    ),
                ),
                ("created_at", _instant("created at")),
                ("raised_at", _instant("raised at", help_text="When the condition last began to hold.")),
                ("updated_at", _instant("updated at", help_text="When its numbers last changed.")),
                ("resolved_at", _instant("resolved at", blank=True, null=True)),
                ("dismissed_at", _instant("dismissed at", blank=True, null=True)),
                (
                    "dismissed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                        verbose_name="dismissed by",
                    ),
                ),
            ],
            options={
                "verbose_name": "alert",
                "verbose_name_plural": "alerts",
                "ordering": ["-raised_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="AlertNotice",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "channel",
                    models.CharField(
                        choices=[("app", "In the app"), ("email", "Weekly report")],
                        max_length=8,
                        verbose_name="channel",
                    ),
                ),
                ("kind", models.CharField(choices=KINDS, max_length=8, verbose_name="kind")),
                ("value", models.DecimalField(verbose_name="value told", **KPI_VALUE)),
                ("told_at", _instant("told at")),
                (
                    "alert",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="notices",
                        to="metrics.alert",
                        verbose_name="alert",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                        verbose_name="person",
                    ),
                ),
            ],
            options={
                "verbose_name": "alert notice",
                "verbose_name_plural": "alert notices",
                "ordering": ["told_at", "id"],
            },
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(fields=["scope", "scope_id", "-raised_at"], name="alert_scope_raised"),
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                condition=models.Q(("dismissed_at__isnull", True), ("resolved_at__isnull", True)),
                fields=["-raised_at"],
                name="alert_active",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                fields=("kpi", "granularity", "scope", "scope_id", "period_start"),
                name="alert_one_per_period",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.CheckConstraint(
                condition=models.Q(("period_end__gt", models.F("period_start"))), name="alert_period"
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("scope", "company"), ("scope_id", "")),
                    models.Q(
                        models.Q(("scope", "company"), _negated=True),
                        models.Q(("scope_id", ""), _negated=True),
                    ),
                    _connector="OR",
                ),
                name="alert_scope_id",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("dismissed_by__isnull", True), ("dismissed_at__isnull", False), _connector="OR"
                ),
                name="alert_dismissed",
            ),
        ),
        migrations.AddConstraint(
            model_name="alertnotice",
            constraint=models.UniqueConstraint(
                fields=("alert", "user", "channel", "kind"), name="alertnotice_once"
            ),
        ),
    ]
