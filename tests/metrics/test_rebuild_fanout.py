"""The full rebuild fanned out across workers (metrics.services.fanout): the same snapshots and facts as the
rebuild in one process, written all at once by the last step, and nothing left behind by a failure."""

from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone

from metrics.kpis import FAMILY_MODULES, family_datasets
from metrics.kpis.base import Context
from metrics.models import KpiFact, KpiFactState, KpiSnapshot, SnapshotRun
from metrics.services import RECOMPUTE_LOCK, rebuild_run, snapshots_rebuild_all, snapshots_recompute_recent
from metrics.services.fanout import (
    PART_PREFIX,
    REBUILD_PARTS,
    check_parts,
    rebuild_fail,
    rebuild_finish,
    rebuild_part,
    rebuild_start,
)
from metrics.tasks import _instant
from tests.conftest import seed_defaults
from tests.factories import (
    make_agent,
    make_closed_deal,
    make_customer,
    make_deal,
    make_ticket,
    make_usage_event,
    make_user,
)
from tests.fault_kit import child_database_url, redis_server
from tests.test_faults import celery_worker, snapshot_fingerprint, wait_until


def facts_table() -> list[tuple]:
    return list(
        KpiFact.objects.order_by("dataset", "grain", "day", "scope", "scope_id").values_list(
            "dataset", "grain", "day", "scope", "scope_id", "values"
        )
    )


def fact_states() -> list[tuple]:
    """Each dataset's definition, what its values hold and the first day of its day facts (known for every
    dataset with facts)."""
    states = list(
        KpiFactState.objects.order_by("dataset").values_list("dataset", "signature", "measures", "days_from")
    )
    with_facts = set(KpiFact.objects.values_list("dataset", flat=True))
    assert with_facts and all(days_from for name, *_rest, days_from in states if name in with_facts)
    return states


def part_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", [f"{PART_PREFIX}%"])
        return sorted(name for (name,) in cursor.fetchall())


def some_history() -> None:
    """Deals won and lost, open deals, tickets and usage over the last year and a half, two reps."""
    now = timezone.now()
    agent = make_agent()
    for i, rep in enumerate((make_user(), make_user())):
        customer = make_customer(rep, at=now - timedelta(days=560 - i))
        for k in range(6):
            created = now - timedelta(days=500 - 80 * k - i)
            make_closed_deal(
                customer,
                created=created,
                closed=created + timedelta(days=20 + k),
                amount=Decimal(1000 + 250 * k + i),
                won=k % 3 != 2,
            )
            make_ticket(customer, at=created + timedelta(days=3), assignee=agent)
            make_usage_event(rep, at=created)
        make_deal(customer, amount=Decimal(700 + i))


def run_in_parts(now) -> SnapshotRun:
    """The fan-out's steps one after the other in this process, as the chord runs them on workers."""
    run, start_iso, now_iso = rebuild_start(now=now)
    start, when = _instant(start_iso), _instant(now_iso)
    parts = [rebuild_part(run_id=run.pk, part=i, start=start, now=when) for i in range(len(REBUILD_PARTS))]
    return rebuild_finish(run_id=run.pk, start=start, now=when, parts=parts)


@pytest.mark.django_db
def test_every_family_is_in_one_part_and_every_dataset_stored_by_one_part():
    check_parts()
    assert sorted(f for part in REBUILD_PARTS for f in part) == sorted(FAMILY_MODULES)
    ctx = Context(rebuild_run(now=timezone.now()))
    every = {ds.name for ds in family_datasets(ctx)}
    owners: dict[str, list[int]] = {}
    for i, families in enumerate(REBUILD_PARTS):
        earlier = {ds.name for fs in REBUILD_PARTS[:i] for ds in family_datasets(ctx, fs)}
        for ds in family_datasets(ctx, families):
            if ds.name not in earlier:
                owners.setdefault(ds.name, []).append(i)
    assert set(owners) == every
    assert all(len(parts) == 1 for parts in owners.values())


@pytest.mark.django_db
def test_the_rebuild_in_parts_writes_the_same_snapshots_and_facts_as_the_rebuild_in_one_process(
    no_auto_assign,
):
    some_history()
    now = timezone.now()
    assert snapshots_rebuild_all(now=now).status == SnapshotRun.Status.OK
    one_process = snapshot_fingerprint(), facts_table(), fact_states()
    assert one_process[0][0] > 100

    # From nothing: every row must come from the parts.
    KpiSnapshot.objects.all().delete()
    KpiFact.objects.all().delete()
    KpiFactState.objects.all().delete()
    run = run_in_parts(now)
    assert run.status == SnapshotRun.Status.OK
    assert run.rows == one_process[0][0]
    assert (snapshot_fingerprint(), facts_table(), fact_states()) == one_process
    assert {f"part {i}" for i in range(len(REBUILD_PARTS))} <= set(run.datasets)
    assert part_tables() == []

    # Again over what is stored: nothing changes, and the every-5-minutes run goes on from these facts.
    assert run_in_parts(now).status == SnapshotRun.Status.OK
    assert (snapshot_fingerprint(), facts_table(), fact_states()) == one_process
    assert snapshots_recompute_recent(now=now).status == SnapshotRun.Status.OK


@pytest.mark.django_db
def test_a_failed_part_leaves_the_snapshots_as_they_were_and_no_tables(no_auto_assign):
    some_history()
    now = timezone.now()
    snapshots_rebuild_all(now=now)
    before = snapshot_fingerprint()
    make_closed_deal(make_customer(make_user()), amount=Decimal(99_000))

    run, start_iso, now_iso = rebuild_start(now=now)
    start, when = _instant(start_iso), _instant(now_iso)
    first = rebuild_part(run_id=run.pk, part=0, start=start, now=when)
    assert len(part_tables()) == 2
    with pytest.raises(RuntimeError, match="parts"):  # the others never came back
        rebuild_finish(run_id=run.pk, start=start, now=when, parts=[first])
    run.refresh_from_db()
    assert run.status == SnapshotRun.Status.FAILED
    assert part_tables() == []
    assert snapshot_fingerprint() == before
    rebuild_fail(run_id=run.pk)  # the chord's error callback after the last step's own: nothing more
    run.refresh_from_db()
    assert run.status == SnapshotRun.Status.FAILED


@pytest.mark.django_db
def test_the_five_minute_run_is_skipped_while_a_part_computes():
    with psycopg.connect(child_database_url(), autocommit=False) as part:
        part.execute("SELECT pg_advisory_xact_lock_shared(%s)", [RECOMPUTE_LOCK])
        assert snapshots_recompute_recent().status == SnapshotRun.Status.SKIPPED
        part.rollback()


@pytest.mark.django_db(transaction=True)
def test_two_workers_share_the_parts_and_the_chord_writes_every_snapshot(tmp_path):
    seed_defaults()
    some_history()
    env = {"KPI_REBUILD_FANOUT": "1", "CRM_CACHE_PREFIX": "fanout-worker"}
    with (
        redis_server() as (redis_url, _redis),
        celery_worker(redis_url, tmp_path / "one.log", name="one", queues=["kpis"], env=env),
        celery_worker(redis_url, tmp_path / "two.log", name="two", queues=["kpis"], env=env),
    ):
        sender = Celery("fanout-probe", broker=redis_url, set_as_current=False)
        sender.send_task("metrics.tasks.rebuild_all_kpi_snapshots", queue="kpis")
        sender.close()

        def finished() -> SnapshotRun | None:
            return SnapshotRun.objects.filter(kind=SnapshotRun.Kind.FULL).exclude(status="running").first()

        run = wait_until(finished, timeout=180, what="the fanned-out rebuild")
        assert run.status == SnapshotRun.Status.OK, run.error
        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in ("one", "two")}
    # Both workers computed parts (one child each, one message reserved at a time).
    for name, log in logs.items():
        assert "Task metrics.tasks.rebuild_kpi_snapshots_part[" in log, name
    assert sum(
        log.count("Task metrics.tasks.rebuild_kpi_snapshots_part[") for log in logs.values()
    ) == 2 * len(REBUILD_PARTS)  # "received" and "succeeded", once per part
    rows, stored = snapshot_fingerprint()[0], facts_table()
    assert rows == run.rows > 100
    assert part_tables() == []
    assert snapshots_rebuild_all().status == SnapshotRun.Status.OK  # the same data in this process
    assert (snapshot_fingerprint()[0], facts_table()) == (rows, stored)
