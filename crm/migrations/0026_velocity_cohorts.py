# Placeholder: velocity, time in stage and cohorts fills this in (issue 20). Empty until then.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0025_campaigns"),
    ]

    operations = []
