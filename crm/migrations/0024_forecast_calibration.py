# Placeholder: forecast calibration fills this in (issue 20). Empty until then.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0023_automation_run_created_brin"),
    ]

    operations = []
