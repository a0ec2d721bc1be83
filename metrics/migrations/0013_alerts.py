# Placeholder: alerts fills this in (issue 20). Empty until then.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0012_frozen_forecasts"),
    ]

    operations = []
