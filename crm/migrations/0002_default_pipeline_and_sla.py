"""Seed the default sales pipeline, per-priority SLA hours and the company settings row."""

from django.db import migrations



def seed(apps, schema_editor):
    # The service writes them (the tests' database and the demo call it too).
    from crm.services import defaults_seed

    defaults_seed(apps)


class Migration(migrations.Migration):
    dependencies = [("crm", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
