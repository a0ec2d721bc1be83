"""Benchmark of the KPI engine on seed_demo data (a script, not collected by pytest).

    .venv/bin/python manage.py seed_demo --size large --reset     # ≈ 1 000 000 deals, 3 years
    .venv/bin/python tests/bench/bench_kpis.py

Prints (a) the full rebuild: every KPI, week + month + quarter + year, every scope, the whole history:
seconds and this process's peak memory (targets: < 60 s, < 500 MB); (b) the every-5-minutes run of the
current and three previous periods (target: < 2 s); (c) the rebuild time divided by the time of the bare
grouped scans any implementation must make: one GROUP BY per base table and granularity (aim: < 3).
"""

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from crm.models import Deal  # noqa: E402
from metrics.models import KpiSnapshot  # noqa: E402
from metrics.periods import GRANULARITIES  # noqa: E402
from metrics.services import snapshots_rebuild_all, snapshots_recompute_recent  # noqa: E402

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


def main() -> None:
    deals = Deal.objects.count()
    print(f"data: {deals:,} deals")
    if deals < 900_000:
        print("  (run `manage.py seed_demo --size large --reset` for the 1 000 000-deal benchmark)")
    baseline_mb = peak_mb()

    started = time.perf_counter()
    run = snapshots_rebuild_all()
    rebuild = time.perf_counter() - started
    print(
        f"(a) full rebuild: {rebuild:.1f} s, {run.rows:,} snapshot rows, peak memory {peak_mb():.0f} MB "
        f"(before: {baseline_mb:.0f} MB) [target < 60 s, < 500 MB]"
    )

    times = []
    for _ in range(3):
        started = time.perf_counter()
        recent = snapshots_recompute_recent()
        times.append(time.perf_counter() - started)
    print(
        f"(b) incremental run (current + 3 previous periods, all granularities): "
        f"{min(times):.2f} s best of 3 ({', '.join(f'{t:.2f}' for t in times)}), {recent.rows:,} rows "
        "[target < 2 s]"
    )

    scans = bare_scans()
    print(
        f"(c) bare grouped scans ({len(BASE_SCANS)} tables × {len(GRANULARITIES)} granularities): "
        f"{scans:.1f} s; "
        f"rebuild ÷ scans = {rebuild / scans:.2f} [aim < 3]"
    )
    print(f"snapshot table: {KpiSnapshot.objects.count():,} rows")


if __name__ == "__main__":
    main()
