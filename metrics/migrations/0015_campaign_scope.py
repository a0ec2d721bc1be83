# Placeholder: campaigns and attribution fills this in (issue 20). Empty until then.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0014_customer_health"),
    ]

    operations = []
