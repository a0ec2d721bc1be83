"""Bring every stored date into the CRM's range (1990-01-01 to 2100-12-31) and report each change.

Before the range was enforced, a task due ``0001-01-01T00:30`` typed in a zone ahead of UTC was stored
before year 1; Python cannot read such a value, so every page that showed it failed. This scans each date
column of the CRM's own tables (their history tables included) once per table, reading values as text so
that nothing has to be loaded into Python. An out-of-range value that may be empty is cleared; one that
may not is moved to the nearest end of the range. The migration prints what it changed, row by row.
"""

from django.db import migrations


def bring_dates_into_range(apps, schema_editor) -> list[str]:
    # The service does it (its tests call it too).
    from crm.services import stored_dates_repair

    return stored_dates_repair(apps=apps, using=schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0013_dates_in_range"),
        ("accounts", "0007_dates_in_range"),
        ("metrics", "0005_dates_in_range"),
        ("surveys", "0003_dates_in_range"),
    ]

    operations = [migrations.RunPython(bring_dates_into_range, migrations.RunPython.noop, elidable=True)]
