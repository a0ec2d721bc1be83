"""Benchmark of the KPI engine on seed_demo data (a script, not collected by pytest).

    .venv/bin/python manage.py seed_demo --size large --reset     # ≈ 1 000 000 deals, 3 years
    .venv/bin/python tests/bench/bench_kpis.py [--runs 12]

First ``VACUUM ANALYZE`` (a freshly seeded database has no statistics and, where autovacuum is off,
millions of dead rows). Then prints (a) the full rebuild: every KPI, week + month + quarter + year, every
scope, the whole history: seconds and this process's peak memory (targets: < 60 s, < 500 MB); (b) the
every-5-minutes run of the current and three previous periods, each run after one deal was edited and one
won, as reps do between runs: median, best and worst of ``--runs`` (target: < 2 s); (c) the hourly run of
the current quarters' and years' medians and percentiles; (d) the rebuild time divided by the time of the
bare grouped scans any implementation must make: one GROUP BY per base table and granularity (aim: < 3).
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from crm import services  # noqa: E402
from crm.models import Deal, PipelineStage  # noqa: E402
from metrics.models import KpiSnapshot  # noqa: E402
from metrics.periods import GRANULARITIES  # noqa: E402
from metrics.services import (  # noqa: E402
    snapshots_rebuild_all,
    snapshots_recompute_long_statistics,
    snapshots_recompute_recent,
)
from tests.bench.machine import cpu_check  # noqa: E402

# (table, timestamp column): the base tables the KPIs read in full, each bucketed by its event time.
BASE_SCANS = [
    ("crm_deal", "closed_at"),
    ("crm_dealstagechange", "at"),
    ("crm_customer", "created_at"),
    ("crm_customerstatuschange", "at"),
    ("crm_ticket", "created_at"),
    ("crm_ticketstatuschange", "at"),
    ("accounts_usageevent", "at"),
    ("accounts_loginevent", "at"),
]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_scans() -> float:
    """One ``GROUP BY date_trunc(granularity, local time)`` per base table and granularity."""
    total = 0.0
    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")
        cursor.execute("SET work_mem = '256MB'")
        for table, column in BASE_SCANS:
            for g in GRANULARITIES:
                started = time.perf_counter()
                cursor.execute(
                    f"SELECT date_trunc(%s, {column} AT TIME ZONE %s), count(*) FROM {table} GROUP BY 1",  # noqa: S608
                    [g, settings.TIME_ZONE],
                )
                cursor.fetchall()
                total += time.perf_counter() - started
        cursor.execute("RESET jit")
        cursor.execute("RESET work_mem")
    return total


def vacuum(*tables: str) -> float:
    """``VACUUM ANALYZE`` the tables (all of them without arguments); returns the seconds it took."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {', '.join(tables)}")
    return time.perf_counter() - started


def reps_work(step: int) -> None:
    """What reps do between two runs: one open deal's amount edited, another one won."""
    edited, closing = Deal.objects.filter(status=Deal.Status.OPEN).order_by("-pk")[2 * step : 2 * step + 2]
    won = PipelineStage.objects.filter(kind=PipelineStage.Kind.WON).first()
    data = {"amount": edited.amount + 1}
    services.deal_update(deal=edited, actor=edited.owner, data=data, version=edited.version)
    services.deal_move_stage(deal=closing, stage=won, actor=closing.owner, version=closing.version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="incremental runs to time (default 12)")
    options = parser.parse_args()
    deals = Deal.objects.count()
    print(f"data: {deals:,} deals; CPU check (10 M Python additions): {cpu_check():.2f} s")
    if deals < 900_000:
        print("  (run `manage.py seed_demo --size large --reset` for the 1 000 000-deal benchmark)")
    print(f"VACUUM ANALYZE of the database: {vacuum():.1f} s")
    baseline_mb = peak_mb()

    started = time.perf_counter()
    run = snapshots_rebuild_all()
    rebuild = time.perf_counter() - started
    print(
        f"(a) full rebuild: {rebuild:.1f} s, {run.rows:,} snapshot rows, peak memory {peak_mb():.0f} MB "
        f"(before: {baseline_mb:.0f} MB) [target < 60 s, < 500 MB]"
    )
    # What autovacuum does after the nightly rebuild rewrote the facts and snapshots.
    print(
        f"VACUUM ANALYZE of the facts and snapshots: {vacuum('metrics_kpifact', 'metrics_kpisnapshot'):.1f} s"
    )

    snapshots_recompute_recent()  # the first run after a rebuild: its watermark is the rebuild's
    times = []
    for step in range(options.runs):
        reps_work(step)
        started = time.perf_counter()
        recent = snapshots_recompute_recent()
        times.append(time.perf_counter() - started)
    print(
        f"(b) incremental run (current + 3 previous periods, all granularities), {options.runs} runs: "
        f"median {statistics.median(times):.2f} s, best {min(times):.2f} s, worst {max(times):.2f} s, "
        f"{recent.rows:,} rows written by the last [target < 2 s]"
    )

    started = time.perf_counter()
    snapshots_recompute_long_statistics()
    seconds = time.perf_counter() - started
    print(f"(c) hourly run of the current quarters' and years' medians and percentiles: {seconds:.2f} s")

    scans = bare_scans()
    print(
        f"(d) bare grouped scans ({len(BASE_SCANS)} tables × {len(GRANULARITIES)} granularities): "
        f"{scans:.1f} s; "
        f"rebuild ÷ scans = {rebuild / scans:.2f} [aim < 3]"
    )
    print(f"snapshot table: {KpiSnapshot.objects.count():,} rows")


if __name__ == "__main__":
    main()
