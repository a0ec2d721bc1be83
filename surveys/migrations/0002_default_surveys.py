"""Seed the default surveys: relationship NPS (daily trickle), CES after solved tickets, CSAT (off), and
two surveys for manual campaigns. ``{company}`` in a text is replaced by the company name when shown."""

from django.db import migrations

def seed(apps, schema_editor):
    # The service writes them (the demo and the tests call it too).
    from surveys.services import default_surveys_seed

    default_surveys_seed(apps)


class Migration(migrations.Migration):
    dependencies = [("surveys", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
