"""Monthly range partitions (crm/ops/partitions.py, migration crm 0028): the conversion of a seeded
database loses no row and changes none, both ways; new months get their partitions ahead of time; rows
that landed in the default partition move into their month's."""

from datetime import UTC, date, datetime

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from psycopg import sql

from crm.models import DealStageChange
from crm.ops import partitions
from crm.ops.partitions import PARTITIONED, is_partitioned, partition_name, partitions_of
from crm.tasks import create_partitions_ahead
from tests.conftest import seed_defaults
from tests.factories import make_customer, make_deal, make_user

BEFORE = [("crm", "0027_webhook_kpi_alert_event")]
AFTER = [("crm", "0028_monthly_partitions")]


@pytest.fixture(autouse=True)
def drop_the_partitions_made():
    """Drop the monthly partitions a test made (its rows are flushed after it anyway). Left behind, a seeded
    history's months add up to thousands of tables and indexes over the session, and a later seed's
    reset, which locks them all in one transaction, runs out of PostgreSQL's shared lock table."""
    with connection.cursor() as cursor:
        before = {
            table: set(partitions_of(cursor, table)) for table in PARTITIONED if is_partitioned(cursor, table)
        }
    yield
    with connection.cursor() as cursor:
        for table, kept in before.items():
            if not is_partitioned(cursor, table):
                continue
            for name in set(partitions_of(cursor, table)) - kept:
                cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def fingerprints() -> dict[str, tuple[int, str]]:
    """Per partitioned table: its rows and a digest of every row, in id order."""
    found = {}
    with connection.cursor() as cursor:
        for table in PARTITIONED:
            cursor.execute(
                sql.SQL(
                    "SELECT count(*), md5(COALESCE(string_agg(t::text, ',' ORDER BY t.id), '')) FROM {} t"
                ).format(sql.Identifier(table))
            )
            found[table] = cursor.fetchone()
    return found


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def kinds() -> set[bool]:
    with connection.cursor() as cursor:
        return {is_partitioned(cursor, table) for table in PARTITIONED}


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_every_row_of_a_seeded_database_both_ways():
    seed_defaults()
    call_command("seed_demo", size="tiny", no_progress=True, verbosity=0)
    call_command("recompute_kpis", no_progress=True, verbosity=0)  # KPI facts too
    # Rows no month's partition takes: the oldest and latest dates the forms allow.
    rep = make_user()
    deal = make_deal(make_customer(rep))
    for year in (1990, 2100):
        DealStageChange.objects.create(
            deal=deal, to_stage=deal.stage, at=datetime(year, 6, 1, tzinfo=UTC), by=rep
        )
    seeded = fingerprints()
    assert all(rows > 0 for rows, _digest in seeded.values()), seeded
    try:
        migrate(BEFORE)
        assert kinds() == {False}
        assert fingerprints() == seeded
        migrate(AFTER)
        assert kinds() == {True}
        assert fingerprints() == seeded
        with connection.cursor() as cursor:
            months = partitions_of(cursor, "crm_dealstagechange")
            assert partition_name("crm_dealstagechange", None) in months
            assert len(months) > 36  # three years of history, each month its own
            cursor.execute("SELECT count(*) FROM crm_dealstagechange_pdefault")
            assert cursor.fetchone()[0] == 2  # 1990 and 2100
        # The identity goes on where it was; the ORM reads and writes as before.
        last = DealStageChange.objects.order_by("-id").values_list("id", flat=True).first()
        made = DealStageChange.objects.create(deal=deal, to_stage=deal.stage, at=datetime.now(UTC), by=rep)
        assert made.pk == last + 1
        assert DealStageChange.objects.get(pk=made.pk).deal_id == deal.pk
    finally:
        migrate(AFTER)


@pytest.mark.django_db
def test_partitions_are_made_ahead_and_rows_in_the_default_move_into_their_month():
    rep = make_user()
    deal = make_deal(make_customer(rep))
    with connection.cursor() as cursor:
        assert is_partitioned(cursor, "crm_dealstagechange")
        names = set(partitions_of(cursor, "crm_dealstagechange"))
    # Today's month and three ahead exist already.
    today = datetime.now(UTC).date()
    assert partition_name("crm_dealstagechange", today.replace(day=1)) in names

    # Far ahead: nothing there yet. A row arrives before its partition does: the default takes it.
    later = date(today.year + 3, 2, 1)
    assert partition_name("crm_dealstagechange", later) not in names
    early = DealStageChange.objects.create(
        deal=deal, to_stage=deal.stage, at=datetime(later.year, 2, 10, 12, tzinfo=UTC), by=rep
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM crm_dealstagechange_pdefault")
        assert [row[0] for row in cursor.fetchall()] == [early.pk]
    before = fingerprints()

    created = partitions.create_ahead(today=date(later.year, 1, 15))
    assert partition_name("crm_dealstagechange", later) in created
    assert partition_name("metrics_kpifact", date(later.year, 4, 1)) in created
    assert partitions.create_ahead(today=date(later.year, 1, 15)) == []  # idempotent
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT id FROM {}").format(sql.Identifier(partition_name("crm_dealstagechange", later)))
        )
        assert [row[0] for row in cursor.fetchall()] == [early.pk]
        cursor.execute("SELECT count(*) FROM crm_dealstagechange_pdefault")
        assert cursor.fetchone()[0] == 0
    assert fingerprints() == before


@pytest.mark.django_db
def test_the_beat_task_makes_the_coming_months():
    this_month = partition_name("accounts_usageevent", datetime.now(UTC).date().replace(day=1))
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(this_month)))
    assert create_partitions_ahead() >= 1
    with connection.cursor() as cursor:
        assert this_month in partitions_of(cursor, "accounts_usageevent")
