# Campaigns and attribution (issue 20, KPIS.md §10.11): campaigns, their touches of customers, a customer's
# first-touch and a deal's last-touch campaign.
from decimal import Decimal

import django.core.validators
import django.db.models.deletion
import django.db.models.functions.text
import simple_history.models
from django.conf import settings
from django.db import migrations, models

import accounts.dates

IMPORT_KINDS = [
    ("customers", "Customers"),
    ("deals", "Deals"),
    ("tickets", "Tickets"),
    ("campaigns", "Campaigns"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0024_forecast_calibration"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="CampaignTouch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "at",
                    models.DateTimeField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="at"
                    ),
                ),
                (
                    "via",
                    models.CharField(
                        choices=[("web", "web"), ("import", "import"), ("api", "API"), ("system", "system")],
                        default="web",
                        max_length=6,
                        verbose_name="via",
                    ),
                ),
            ],
            options={
                "verbose_name": "campaign touch",
                "verbose_name_plural": "campaign touches",
                "ordering": ["customer", "at", "id"],
            },
        ),
        migrations.CreateModel(
            name="HistoricalCampaign",
            fields=[
                (
                    "id",
                    models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name="ID"),
                ),
                ("name", models.CharField(max_length=200, verbose_name="name")),
                (
                    "channel",
                    models.CharField(
                        choices=[
                            ("website", "Website"),
                            ("referral", "Referral"),
                            ("event", "Event"),
                            ("outbound", "Outbound"),
                            ("partner", "Partner"),
                            ("ads", "Paid ads"),
                            ("other", "Other"),
                        ],
                        default="other",
                        max_length=12,
                        verbose_name="channel",
                    ),
                ),
                (
                    "start",
                    models.DateField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="first day"
                    ),
                ),
                (
                    "end",
                    models.DateField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="last day"
                    ),
                ),
                (
                    "cost",
                    models.DecimalField(
                        decimal_places=2,
                        default=Decimal("0"),
                        max_digits=14,
                        validators=[django.core.validators.MinValueValidator(0)],
                        verbose_name="cost",
                    ),
                ),
                ("note", models.CharField(blank=True, max_length=500, verbose_name="note")),
                ("is_archived", models.BooleanField(default=False, verbose_name="archived")),
                (
                    "created_at",
                    models.DateTimeField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="created at"
                    ),
                ),
                ("version", models.PositiveIntegerField(default=1, editable=False)),
                ("history_id", models.AutoField(primary_key=True, serialize=False)),
                ("history_date", models.DateTimeField(db_index=True)),
                ("history_change_reason", models.CharField(max_length=100, null=True)),
                (
                    "history_type",
                    models.CharField(
                        choices=[("+", "Created"), ("~", "Changed"), ("-", "Deleted")], max_length=1
                    ),
                ),
            ],
            options={
                "verbose_name": "historical campaign",
                "verbose_name_plural": "historical campaigns",
                "ordering": ("-history_date", "-history_id"),
                "get_latest_by": ("history_date", "history_id"),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.CreateModel(
            name="Campaign",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, verbose_name="name")),
                (
                    "channel",
                    models.CharField(
                        choices=[
                            ("website", "Website"),
                            ("referral", "Referral"),
                            ("event", "Event"),
                            ("outbound", "Outbound"),
                            ("partner", "Partner"),
                            ("ads", "Paid ads"),
                            ("other", "Other"),
                        ],
                        default="other",
                        max_length=12,
                        verbose_name="channel",
                    ),
                ),
                (
                    "start",
                    models.DateField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="first day"
                    ),
                ),
                (
                    "end",
                    models.DateField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="last day"
                    ),
                ),
                (
                    "cost",
                    models.DecimalField(
                        decimal_places=2,
                        default=Decimal("0"),
                        max_digits=14,
                        validators=[django.core.validators.MinValueValidator(0)],
                        verbose_name="cost",
                    ),
                ),
                ("note", models.CharField(blank=True, max_length=500, verbose_name="note")),
                ("is_archived", models.BooleanField(default=False, verbose_name="archived")),
                (
                    "created_at",
                    models.DateTimeField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="created at"
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        validators=[accounts.dates.validate_date_in_range], verbose_name="updated at"
                    ),
                ),
                ("version", models.PositiveIntegerField(default=1, editable=False)),
            ],
            options={
                "verbose_name": "campaign",
                "verbose_name_plural": "campaigns",
                "ordering": ["-start", "name", "id"],
                "constraints": [
                    models.UniqueConstraint(
                        django.db.models.functions.text.Lower("name"), name="campaign_unique_name"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("end__gte", models.F("start"))), name="campaign_end_after_start"
                    ),
                    models.CheckConstraint(condition=models.Q(("cost__gte", 0)), name="campaign_cost_nonneg"),
                    models.CheckConstraint(
                        condition=models.Q(("version__gte", 1)), name="campaign_version_positive"
                    ),
                ],
            },
        ),
        migrations.AddField(
            model_name="customer",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="customers",
                to="crm.campaign",
                verbose_name="campaign",
            ),
        ),
        migrations.AddField(
            model_name="deal",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="deals",
                to="crm.campaign",
                verbose_name="campaign",
            ),
        ),
        migrations.AddField(
            model_name="historicalcustomer",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="crm.campaign",
                verbose_name="campaign",
            ),
        ),
        migrations.AddField(
            model_name="historicaldeal",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="crm.campaign",
                verbose_name="campaign",
            ),
        ),
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(
                condition=models.Q(("campaign__isnull", False)), fields=["campaign"], name="customer_campaign"
            ),
        ),
        migrations.AddIndex(
            model_name="deal",
            index=models.Index(
                condition=models.Q(("campaign__isnull", False)), fields=["campaign"], name="deal_campaign"
            ),
        ),
        migrations.AddIndex(
            model_name="deal",
            index=models.Index(
                condition=models.Q(("status", "won"), ("campaign__isnull", False)),
                fields=["closed_at"],
                include=("campaign", "amount"),
                name="deal_won_campaign",
            ),
        ),
        migrations.AddField(
            model_name="campaigntouch",
            name="by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="campaigntouch",
            name="campaign",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="touches",
                to="crm.campaign",
                verbose_name="campaign",
            ),
        ),
        migrations.AddField(
            model_name="campaigntouch",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="campaign_touches",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AddField(
            model_name="historicalcampaign",
            name="history_user",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="campaigntouch",
            index=models.Index(fields=["customer", "at"], name="campaigntouch_customer_at"),
        ),
        migrations.AddIndex(
            model_name="campaigntouch",
            index=models.Index(fields=["campaign", "at"], name="campaigntouch_campaign_at"),
        ),
        migrations.AddIndex(
            model_name="campaigntouch",
            index=models.Index(fields=["at"], name="campaigntouch_at"),
        ),
        # Campaigns can be imported (crm.data.imports.campaigns).
        migrations.AlterField(
            model_name="importjob",
            name="kind",
            field=models.CharField(choices=IMPORT_KINDS, max_length=10, verbose_name="kind"),
        ),
        migrations.AlterField(
            model_name="importmapping",
            name="kind",
            field=models.CharField(choices=IMPORT_KINDS, max_length=10),
        ),
    ]
