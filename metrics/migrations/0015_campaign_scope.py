# Campaigns and attribution (issue 20, KPIS.md §10.11): snapshots per campaign.
from django.db import migrations, models

SCOPES = [
    ("company", "Company"),
    ("team", "Team"),
    ("user", "User"),
    ("source", "Source"),
    ("survey", "Survey kind"),
    ("trigger", "Survey trigger"),
    ("agent", "Support agent"),
    ("segment", "Customer segment"),
    ("campaign", "Campaign"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0014_customer_health"),
    ]

    operations = [
        migrations.AlterField(
            model_name="kpisnapshot",
            name="scope",
            field=models.CharField(choices=SCOPES, max_length=8, verbose_name="scope"),
        ),
        migrations.AlterField(
            model_name="kpitarget",
            name="scope",
            field=models.CharField(choices=SCOPES, default="company", max_length=8, verbose_name="scope"),
        ),
    ]
