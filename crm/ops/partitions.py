"""Monthly range partitions for the tables that only grow: usage and sign-in events, the stage and status
histories, and the KPI facts.

Each is partitioned by its time column (``at``, or a fact's ``day``) into one partition per calendar month
(UTC for instants, ``<table>_pYYYYMM``) and a default partition (``<table>_pdefault``) for rows outside
them (far past or far future dates, which the forms allow from 1990 to 2100). Queries that name a time
range read only its months (partition pruning); old months can be detached or dropped whole.

- ``partition`` converts a table in place: the rows move to a new partitioned table of the same name,
  columns, defaults, identity, indexes and constraints (the primary key becomes (id, time), since
  PostgreSQL's unique keys must hold the partition key). Counts are compared before the old table
  goes. ``unpartition`` is its reverse. Both run inside the migration's transaction.
- ``create_ahead`` (a beat task, daily) creates the partitions of the coming months before rows arrive;
  rows that reached the default partition for such a month move into it.

Django models keep ``id`` as their primary key: ids come from one identity sequence, so they stay unique.
"""

from collections.abc import Iterable
from datetime import UTC, date, datetime

from django.db import connection
from psycopg import sql

# Table -> its time column.
PARTITIONED: dict[str, str] = {
    "accounts_usageevent": "at",
    "accounts_loginevent": "at",
    "crm_dealstagechange": "at",
    "crm_ticketstatuschange": "at",
    "crm_customerstatuschange": "at",
    "metrics_kpifact": "day",
}
# Partitions exist this many months past the current one.
MONTHS_AHEAD = 3
# Months before this many years back go to the default partition rather than a partition each.
YEARS_BACK = 12
OLD_SUFFIX = "__unpartitioned"


def month_starts(first: date, last: date) -> list[date]:
    """The first days of the months from ``first``'s to ``last``'s, both included."""
    month, months = first.replace(day=1), []
    while month <= last:
        months.append(month)
        month = _next_month(month)
    return months


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date | None) -> str:
    return f"{table}_pdefault" if month is None else f"{table}_p{month:%Y%m}"


def _bound(table: str, month: date) -> sql.Literal:
    """A partition bound: the month's first day for a date column, its first instant in UTC otherwise."""
    if PARTITIONED.get(table) == "day":
        return sql.Literal(month)
    return sql.Literal(datetime(month.year, month.month, 1, tzinfo=UTC))


def is_partitioned(cursor, table: str) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row and row[0] == "p")


def partitions_of(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def _definitions(cursor, table: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The table's constraints (name, type, definition) and the indexes that back no constraint."""
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u', 'f', 'c') ORDER BY contype, conname",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = to_regclass(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1",
        [table],
    )
    return constraints, [definition for (definition,) in cursor.fetchall()]


def _rebuild(cursor, table: str, *, partitioned: bool, today: date) -> int:
    """Move ``table``'s rows into a new table of the same name, partitioned by month or not; returns
    the rows moved."""
    column = PARTITIONED[table]
    old = f"{table}{OLD_SUFFIX}"
    cursor.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
    constraints, indexes = _definitions(cursor, table)
    cursor.execute(
        sql.SQL("SELECT count(*), min({c}) FROM {t}").format(
            c=sql.Identifier(column), t=sql.Identifier(table)
        )
    )
    rows, first = cursor.fetchone()
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    (old_sequence,) = cursor.fetchone()
    cursor.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(table), sql.Identifier(old)))
    for name, _kind, _definition in constraints:  # their names (and their indexes') go to the new table
        cursor.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(old), sql.Identifier(name))
        )
    for definition in indexes:
        cursor.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(_index_name(definition))))
    by = sql.SQL(" PARTITION BY RANGE ({})").format(sql.Identifier(column)) if partitioned else sql.SQL("")
    cursor.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING IDENTITY){}").format(
            sql.Identifier(table), sql.Identifier(old), by
        )
    )
    if partitioned:
        if isinstance(first, datetime):
            first = first.astimezone(UTC).date()
        start = max(first or today, _add_months(today, -12 * YEARS_BACK))
        create_partitions(cursor, table, month_starts(start, _add_months(today, MONTHS_AHEAD)))
        cursor.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
                sql.Identifier(partition_name(table, None)), sql.Identifier(table)
            )
        )
    cursor.execute(
        sql.SQL("INSERT INTO {} SELECT * FROM {}").format(sql.Identifier(table), sql.Identifier(old))
    )
    cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    (moved,) = cursor.fetchone()
    if moved != rows:
        raise RuntimeError(f"{table}: {rows} rows before, {moved} after: nothing changed")
    cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(old)))
    for name, kind, definition in constraints:
        if kind == "p" and partitioned:
            definition = f"PRIMARY KEY (id, {column})"
        elif kind == "p":
            definition = "PRIMARY KEY (id)"
        cursor.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
            )
        )
    for definition in indexes:  # a partitioned table's are "ON ONLY" it: its partitions' come along here
        cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
    # The identity goes on from the old table's last value, under the old sequence's name.
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    (sequence,) = cursor.fetchone()
    cursor.execute(sql.SQL("SELECT COALESCE(max(id), 0) + 1 FROM {}").format(sql.Identifier(table)))
    (next_id,) = cursor.fetchone()
    cursor.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN id RESTART WITH {}").format(
            sql.Identifier(table), sql.Literal(next_id)
        )
    )
    if sequence != old_sequence:
        cursor.execute(
            sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(
                sql.SQL(sequence), sql.Identifier(old_sequence.split(".")[-1])
            )
        )
    cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return rows


def _index_name(definition: str) -> str:
    """The name in ``CREATE [UNIQUE] INDEX name ON ...``."""
    return definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0].strip('"')


def partition(cursor, table: str, *, today: date | None = None) -> int:
    """Convert ``table`` into monthly partitions (nothing if it is already); returns the rows moved."""
    if is_partitioned(cursor, table):
        return 0
    return _rebuild(cursor, table, partitioned=True, today=today or datetime.now(UTC).date())


def unpartition(cursor, table: str) -> int:
    """Convert ``table`` back into one plain table (nothing if it is one); returns the rows moved."""
    if not is_partitioned(cursor, table):
        return 0
    return _rebuild(cursor, table, partitioned=False, today=datetime.now(UTC).date())


def create_partitions(cursor, table: str, months: Iterable[date]) -> list[str]:
    """Create the partitions of ``months`` that do not exist yet; rows of such a month already in the
    default partition move into the new one. Returns the partitions created."""
    existing = set(partitions_of(cursor, table))
    default = partition_name(table, None)
    created = []
    for month in months:
        name = partition_name(table, month)
        if name in existing:
            continue
        bounds = sql.SQL("FROM ({}) TO ({})").format(_bound(table, month), _bound(table, _next_month(month)))
        column = sql.Identifier(PARTITIONED[table])
        if default in existing:
            # A partition cannot be created over rows the default partition holds: take them out, attach.
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE {new} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS); "
                    "WITH moved AS (DELETE FROM {default} WHERE {c} >= {lo} AND {c} < {hi} RETURNING *) "
                    "INSERT INTO {new} SELECT * FROM moved; "
                    "ALTER TABLE {parent} ATTACH PARTITION {new} FOR VALUES {bounds}"
                ).format(
                    new=sql.Identifier(name),
                    parent=sql.Identifier(table),
                    default=sql.Identifier(default),
                    c=column,
                    lo=_bound(table, month),
                    hi=_bound(table, _next_month(month)),
                    bounds=bounds,
                )
            )
        else:
            cursor.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES {}").format(
                    sql.Identifier(name), sql.Identifier(table), bounds
                )
            )
        created.append(name)
    return created


def create_ahead(*, today: date | None = None, months: int = MONTHS_AHEAD) -> list[str]:
    """Every partitioned table's partitions from the current month to ``months`` ahead, and those of the
    months whose rows landed in the default partition (a seeded or imported history, a migration on an
    empty table) back to ``YEARS_BACK``: the beat task. Returns the partitions created."""
    today = today or datetime.now(UTC).date()
    created = []
    with connection.cursor() as cursor:
        for table in PARTITIONED:
            if not is_partitioned(cursor, table):
                continue
            wanted = set(month_starts(today, _add_months(today, months)))
            wanted |= _months_in_default(cursor, table, since=_add_months(today, -12 * YEARS_BACK))
            created += create_partitions(cursor, table, sorted(wanted))
    return created


def _months_in_default(cursor, table: str, *, since: date) -> set[date]:
    """The months (from ``since`` on) of the rows in the table's default partition."""
    column = PARTITIONED[table]
    month = sql.SQL(
        "date_trunc('month', {} AT TIME ZONE 'UTC')" if column != "day" else "date_trunc('month', {})"
    )
    cursor.execute(
        sql.SQL("SELECT DISTINCT ({m})::date FROM {t} WHERE {c} >= {since}").format(
            m=month.format(sql.Identifier(column)),
            t=sql.Identifier(partition_name(table, None)),
            c=sql.Identifier(column),
            since=_bound(table, since),
        )
    )
    return {first for (first,) in cursor.fetchall()}
