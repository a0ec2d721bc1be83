from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    # deal_customer duplicated the foreign key's own index on customer_id: every deal write paid for both.
    atomic = False

    dependencies = [
        ("crm", "0011_deal_kpi_indexes"),
    ]

    operations = [
        RemoveIndexConcurrently(model_name="deal", name="deal_customer"),
    ]
