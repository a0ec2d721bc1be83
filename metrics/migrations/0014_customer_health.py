# Customer health (KPIS.md §10.10): the score's settings, each customer's newest score and each scoring run
# with its backtest (issue 20).
import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import F, Q
from django.db.models.lookups import Exact

import accounts.dates
import accounts.text

POINTS = {"decimal_places": 1, "max_digits": 4}
REVENUE = {"decimal_places": 2, "max_digits": 18}
WEIGHTS = (
    ("recency_weight", 20, "recent contact"),
    ("satisfaction_weight", 20, "satisfaction"),
    ("complaints_weight", 15, "complaints"),
    ("sla_weight", 10, "SLA breaches"),
    ("renewal_weight", 15, "renewal"),
    ("revenue_weight", 10, "revenue trend"),
    ("owner_weight", 10, "owner's attention"),
)
POINT_FIELDS = (
    ("recency_points", "recent contact"),
    ("satisfaction_points", "satisfaction"),
    ("complaints_points", "complaints"),
    ("sla_points", "SLA breaches"),
    ("renewal_points", "renewal"),
    ("revenue_points", "revenue trend"),
    ("owner_points", "owner's attention"),
)
IN_RANGE = [accounts.dates.validate_date_in_range]
BANDS = [("healthy", "Healthy"), ("at_risk", "At risk"), ("critical", "Critical")]
VERDICTS = [
    ("beats", "Beats the base rate"),
    ("fails", "Does not beat the base rate"),
    ("too_few", "Not enough data"),
]


def _weights_sum():
    total = F(WEIGHTS[0][0])
    for name, _default, _label in WEIGHTS[1:]:
        total = total + F(name)
    return total


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0013_alerts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="HealthSettings",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                *(
                    (
                        name,
                        models.PositiveSmallIntegerField(
                            default=default,
                            validators=[django.core.validators.MaxValueValidator(100)],
                            verbose_name=label,
                        ),
                    )
                    for name, default, label in WEIGHTS
                ),
                (
                    "critical_below",
                    models.PositiveSmallIntegerField(
                        default=50,
                        validators=[
                            django.core.validators.MinValueValidator(1),
                            django.core.validators.MaxValueValidator(99),
                        ],
                        verbose_name="critical below",
                    ),
                ),
                (
                    "at_risk_below",
                    models.PositiveSmallIntegerField(
                        default=75,
                        validators=[
                            django.core.validators.MinValueValidator(2),
                            django.core.validators.MaxValueValidator(100),
                        ],
                        verbose_name="at risk below",
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        blank=True, null=True, validators=IN_RANGE, verbose_name="changed at"
                    ),
                ),
                (
                    "updated_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                        verbose_name="changed by",
                    ),
                ),
            ],
            options={
                "verbose_name": "health score settings",
                "verbose_name_plural": "health score settings",
                "constraints": [
                    models.CheckConstraint(condition=Q(pk=1), name="healthsettings_singleton"),
                    models.CheckConstraint(
                        condition=Exact(_weights_sum(), 100), name="healthsettings_weights_sum_100"
                    ),
                    models.CheckConstraint(
                        condition=Q(
                            at_risk_below__lte=100,
                            critical_below__gte=1,
                            critical_below__lt=F("at_risk_below"),
                        ),
                        name="healthsettings_bands_ordered",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="CustomerHealth",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("as_of", models.DateField(validators=IN_RANGE, verbose_name="as of")),
                ("score", models.DecimalField(**POINTS, verbose_name="health score")),
                ("band", models.CharField(choices=BANDS, max_length=8, verbose_name="band")),
                (
                    "last_touch_at",
                    models.DateTimeField(
                        blank=True, null=True, validators=IN_RANGE, verbose_name="last contact or purchase"
                    ),
                ),
                ("survey_kind", models.CharField(blank=True, max_length=4, verbose_name="latest survey")),
                (
                    "survey_score",
                    models.SmallIntegerField(blank=True, null=True, verbose_name="latest survey score"),
                ),
                (
                    "survey_at",
                    models.DateTimeField(
                        blank=True, null=True, validators=IN_RANGE, verbose_name="answered at"
                    ),
                ),
                ("complaints", models.PositiveIntegerField(default=0, verbose_name="complaints (90 days)")),
                (
                    "sla_breaches",
                    models.PositiveIntegerField(default=0, verbose_name="SLA breaches (90 days)"),
                ),
                (
                    "renewal_due_on",
                    models.DateField(
                        blank=True,
                        null=True,
                        validators=IN_RANGE,
                        verbose_name="renewal due without a renewal deal",
                    ),
                ),
                (
                    "revenue_12m",
                    models.DecimalField(**REVENUE, default=0, verbose_name="won revenue, last 12 months"),
                ),
                (
                    "revenue_prior_12m",
                    models.DecimalField(**REVENUE, default=0, verbose_name="won revenue, 12 months before"),
                ),
                (
                    "owner_activities",
                    models.PositiveIntegerField(default=0, verbose_name="owner's activities (90 days)"),
                ),
                *((name, models.DecimalField(**POINTS, verbose_name=label)) for name, label in POINT_FIELDS),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="health_scores",
                        to="crm.customer",
                        verbose_name="customer",
                    ),
                ),
            ],
            options={
                "verbose_name": "customer health score",
                "verbose_name_plural": "customer health scores",
                "ordering": ["score", "customer_id"],
                "indexes": [
                    models.Index(
                        fields=["as_of", "band", "score", "customer"], name="customerhealth_band_score"
                    ),
                    models.Index(fields=["as_of", "score", "customer"], name="customerhealth_score"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("customer", "as_of"), name="customerhealth_unique_customer_as_of"
                    ),
                    models.CheckConstraint(
                        condition=Q(score__gte=0, score__lte=100), name="customerhealth_score_0_100"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="CustomerHealthRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("as_of", models.DateField(unique=True, validators=IN_RANGE, verbose_name="as of")),
                ("computed_at", models.DateTimeField(validators=IN_RANGE, verbose_name="computed at")),
                ("duration_seconds", models.FloatField(default=0, verbose_name="duration (s)")),
                ("scored", models.PositiveIntegerField(default=0, verbose_name="customers scored")),
                (
                    "bands",
                    models.JSONField(
                        default=dict,
                        encoder=accounts.text.StorableJSONEncoder,
                        verbose_name="customers per band",
                    ),
                ),
                (
                    "by_owner",
                    models.JSONField(
                        default=dict, encoder=accounts.text.StorableJSONEncoder, verbose_name="per owner"
                    ),
                ),
                (
                    "settings",
                    models.JSONField(
                        default=dict, encoder=accounts.text.StorableJSONEncoder, verbose_name="settings used"
                    ),
                ),
                (
                    "backtest",
                    models.JSONField(
                        default=dict, encoder=accounts.text.StorableJSONEncoder, verbose_name="backtest"
                    ),
                ),
                (
                    "observations",
                    models.PositiveIntegerField(
                        default=0, verbose_name="customers scored at the month starts"
                    ),
                ),
                (
                    "churned",
                    models.PositiveIntegerField(default=0, verbose_name="of them churned within 90 days"),
                ),
                ("base_rate", models.FloatField(blank=True, null=True, verbose_name="base churn rate")),
                ("lift", models.FloatField(blank=True, null=True, verbose_name="lift")),
                ("precision", models.FloatField(blank=True, null=True, verbose_name="precision")),
                ("recall", models.FloatField(blank=True, null=True, verbose_name="recall")),
                ("auc", models.FloatField(blank=True, null=True, verbose_name="AUC")),
                ("auc_margin", models.FloatField(blank=True, null=True, verbose_name="AUC noise margin")),
                (
                    "verdict",
                    models.CharField(
                        choices=VERDICTS, default="too_few", max_length=8, verbose_name="verdict"
                    ),
                ),
            ],
            options={
                "verbose_name": "customer health run",
                "verbose_name_plural": "customer health runs",
                "ordering": ["-as_of"],
            },
        ),
    ]
