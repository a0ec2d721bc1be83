# Placeholder: forecast calibration fills this in (issue 20). Empty until then.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0011_scope_customer_segment"),
        ("crm", "0026_velocity_cohorts"),
    ]

    operations = []
