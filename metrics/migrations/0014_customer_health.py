# Placeholder: the customer health score fills this in (issue 20). Empty until then.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0013_alerts"),
    ]

    operations = []
