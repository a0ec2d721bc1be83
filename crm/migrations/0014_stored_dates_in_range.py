"""Bring every stored date into the CRM's range (1990-01-01 to 2100-12-31) and report each change.

Before the range was enforced, a task due ``0001-01-01T00:30`` typed in a zone ahead of UTC was stored
before year 1; Python cannot read such a value, so every page that showed it failed. This scans each date
column of the CRM's own tables (their history tables included) once per table, reading values as text so
that nothing has to be loaded into Python. An out-of-range value that may be empty is cleared; one that
may not is moved to the nearest end of the range. The migration prints what it changed, row by row.
"""

from datetime import UTC, date, datetime

from django.db import migrations

APPS = ("accounts", "crm", "metrics", "surveys")
EARLIEST, LATEST = date(1990, 1, 1), date(2100, 12, 31)
SHOWN_PER_COLUMN = 20


def _bounds(field) -> tuple:
    if field.get_internal_type() == "DateTimeField":
        return datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)
    return EARLIEST, LATEST


def bring_dates_into_range(apps, schema_editor) -> list[str]:
    """Fix the out-of-range dates of every model of APPS; return (and print) one line per change."""
    connection, quote = schema_editor.connection, schema_editor.quote_name
    report: list[str] = []
    for model in apps.get_models():
        meta = model._meta
        if meta.app_label not in APPS or meta.proxy or not meta.managed:
            continue
        fields = [f for f in meta.local_concrete_fields if f.get_internal_type() in ("DateField", "DateTimeField")]
        if not fields:
            continue
        table, pk = quote(meta.db_table), quote(meta.pk.column)
        # One scan per table: the key, and per date column its value as text where it is out of range.
        outside = [f"({quote(f.column)} < %s OR {quote(f.column)} > %s)" for f in fields]
        shown = ", ".join(f"CASE WHEN {test} THEN {quote(f.column)}::text END" for f, test in zip(fields, outside))
        params = [bound for f in fields for bound in _bounds(f)]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {pk}, {shown} FROM {table} WHERE {' OR '.join(outside)}",  # noqa: S608
                params * 2,
            )
            rows = cursor.fetchall()
        for index, field in enumerate(fields, start=1):
            changed = [(row[0], row[index]) for row in rows if row[index] is not None]
            if not changed:
                continue
            low, high = _bounds(field)
            column, ids = quote(field.column), [pk_value for pk_value, _old in changed]
            with connection.cursor() as cursor:
                if field.null:
                    cursor.execute(f"UPDATE {table} SET {column} = NULL WHERE {pk} = ANY(%s)", [ids])  # noqa: S608
                else:
                    cursor.execute(
                        f"UPDATE {table} SET {column} = CASE WHEN {column} < %s THEN %s ELSE %s END "  # noqa: S608
                        f"WHERE {pk} = ANY(%s)",
                        [low, low, high, ids],
                    )
            new = "cleared" if field.null else f"moved to the nearest of {low} and {high}"
            for pk_value, old in changed[:SHOWN_PER_COLUMN]:
                report.append(f"{meta.db_table}.{field.column} id {pk_value}: {old} {new}")
            if len(changed) > SHOWN_PER_COLUMN:
                report.append(f"{meta.db_table}.{field.column}: {len(changed) - SHOWN_PER_COLUMN} more rows {new}")
    if report:
        print(f"\n  Dates outside {EARLIEST.year}-{LATEST.year} brought into range:")
        for line in report:
            print(f"    {line}")
    return report


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0013_dates_in_range"),
        ("accounts", "0007_dates_in_range"),
        ("metrics", "0005_dates_in_range"),
        ("surveys", "0003_dates_in_range"),
    ]

    operations = [migrations.RunPython(bring_dates_into_range, migrations.RunPython.noop, elidable=True)]
