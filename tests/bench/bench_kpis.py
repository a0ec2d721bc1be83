"""Benchmark of the KPI engine on seed_demo data (a script, not collected by pytest).

    .venv/bin/python manage.py seed_demo --size large --reset     # ≈ 1 000 000 deals, 3 years
    .venv/bin/python tests/bench/bench_kpis.py [--runs 12] [--skip-rebuild]

First ``VACUUM ANALYZE`` (a freshly seeded database has no statistics and, where autovacuum is off,
millions of dead rows). Then prints (a) the full rebuild: every KPI, week + month + quarter + year, every
scope, the whole history: seconds and this process's peak memory (targets: < 60 s, < 500 MB); (b) the
every-5-minutes run of the current and three previous periods, each run after one deal was edited and one
won, as reps do between runs: median, best and worst of ``--runs`` (target: < 2 s); (c) the hourly run of
the current quarters' and years' medians and percentiles; (d) the rebuild time divided by the time of the
bare grouped scans any implementation must make: one GROUP BY per base table and granularity (aim: < 3).

    .venv/bin/python tests/bench/bench_kpis.py --variants base,no_prefetch,no_plans_off --rounds 2

measures what each piece of the engine's machinery buys: every variant runs in its own process (so its
peak memory is its own), rounds interleave the variants (the shared machine drifts), and each prints its
rebuild (after a warm-up rebuild: the facts stored) and its incremental runs. ``no_prefetch`` scans
without the second connection (``facts.Prefetch``); ``no_plans_off`` keeps every plan on
(``metrics.kpis.sql.with_plans_off``); ``no_random_page_cost`` and ``with_jit`` drop one of the 5-minute
run's settings (``metrics.kpis.sql.INCREMENTAL_SETTINGS``); ``none`` all of them. (The run-wide planner
settings this compared too, work_mem, jit and parallel costs for both runs, bought under 15 % each and were
removed.)
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
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
from metrics.kpis import sql  # noqa: E402
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
    data = {"amount": (edited.amount or 0) + 1}
    services.deal_update(deal=edited, actor=edited.owner, data=data, version=edited.version)
    services.deal_move_stage(deal=closing, stage=won, actor=closing.owner, version=closing.version)


def apply_variant(variant: str) -> None:
    """Switch off the piece of machinery ``variant`` names (see the module's docstring)."""
    if variant in ("no_prefetch", "none"):
        settings.KPI_PREFETCH_SCANS = False
    if variant in ("no_plans_off", "none"):
        sql.PLAN_SWITCHES["on"] = False
    if variant in ("no_random_page_cost", "none"):
        sql.INCREMENTAL_SETTINGS.pop("random_page_cost")
    if variant in ("with_jit", "none"):
        sql.INCREMENTAL_SETTINGS.pop("jit")
    if variant not in ("base", "none", "no_prefetch", "no_plans_off", "no_random_page_cost", "with_jit"):
        raise SystemExit(
            f"unknown variant {variant!r}: base, no_prefetch, no_plans_off, no_random_page_cost, with_jit "
            "or none"
        )


def one_variant(variant: str, runs: int, first_step: int) -> None:
    """A child process: the variant's rebuild and incremental runs, as one JSON line."""
    apply_variant(variant)
    started = time.perf_counter()
    snapshots_rebuild_all()
    rebuild = time.perf_counter() - started
    memory = peak_mb()
    vacuum("metrics_kpifact", "metrics_kpisnapshot")
    snapshots_recompute_recent()
    times = []
    for step in range(first_step, first_step + runs):
        reps_work(step)
        started = time.perf_counter()
        snapshots_recompute_recent()
        times.append(time.perf_counter() - started)
    print(json.dumps({"rebuild": rebuild, "peak_mb": memory, "recent": statistics.median(times)}))


def compare_variants(variants: list[str], rounds: int, runs: int) -> None:
    """Each variant in its own process, ``rounds`` times interleaved; medians, and the change from base."""
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    print(f"VACUUM ANALYZE of the database: {vacuum():.1f} s")
    started = time.perf_counter()
    snapshots_rebuild_all()
    print(f"warm-up rebuild (stores the facts): {time.perf_counter() - started:.1f} s")
    found: dict[str, list[dict]] = {v: [] for v in variants}
    step = 0
    for r in range(rounds):
        for variant in variants:
            command = [sys.executable, __file__, "--variant", variant, "--runs", str(runs)]
            command += ["--step", str(step)]
            for attempt in (1, 2):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode == 0:
                    break
                print(f"  {variant} failed (attempt {attempt}): {done.stderr.strip().splitlines()[-1:]}")
            done.check_returncode()
            result = json.loads(done.stdout.strip().splitlines()[-1])
            found[variant].append(result)
            step += runs
            print(
                f"  round {r + 1} {variant:<22} rebuild {result['rebuild']:6.1f} s  "
                f"incremental median {result['recent']:5.2f} s  peak {result['peak_mb']:4.0f} MB",
                flush=True,
            )
    print(f"CPU check after: {cpu_check():.2f} s")
    medians = {
        v: {k: statistics.median(r[k] for r in results) for k in ("rebuild", "recent", "peak_mb")}
        for v, results in found.items()
    }
    base = medians.get("base")
    print("variant                 rebuild    incremental   peak     (change from base: + means slower)")
    for variant, m in medians.items():
        change = ""
        if base and variant != "base":
            change = (
                f"  {100 * (m['rebuild'] / base['rebuild'] - 1):+5.1f} % / "
                f"{100 * (m['recent'] / base['recent'] - 1):+5.1f} % / "
                f"{100 * (m['peak_mb'] / base['peak_mb'] - 1):+5.1f} %"
            )
        print(f"{variant:<22} {m['rebuild']:6.1f} s   {m['recent']:6.2f} s   {m['peak_mb']:5.0f} MB{change}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="incremental runs to time (default 12)")
    parser.add_argument("--variants", help="compare these variants (comma-separated), e.g. base,no_prefetch")
    parser.add_argument("--rounds", type=int, default=1, help="with --variants: rounds to interleave")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--step", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--skip-rebuild",
        action="store_true",
        help="only (b) and (c), on the facts a rebuild stored (at 10 M deals a rebuild is long)",
    )
    options = parser.parse_args()
    if options.variant:
        one_variant(options.variant, options.runs, options.step)
        return
    if options.variants:
        compare_variants(options.variants.split(","), options.rounds, options.runs)
        return
    deals = Deal.objects.count()
    print(f"data: {deals:,} deals; CPU check (10 M Python additions): {cpu_check():.2f} s")
    if deals < 900_000:
        print("  (run `manage.py seed_demo --size large --reset` for the 1 000 000-deal benchmark)")
    if options.skip_rebuild:
        incremental_runs(options.runs)
        return
    print(f"VACUUM ANALYZE of the database: {vacuum():.1f} s")
    baseline_mb = peak_mb()

    started = time.perf_counter()
    run = snapshots_rebuild_all()
    rebuild = time.perf_counter() - started
    print(
        f"(a) full rebuild: {rebuild:.1f} s, {run.rows:,} snapshot rows, peak memory {peak_mb():.0f} MB "
        f"(before: {baseline_mb:.0f} MB) [target < 60 s, < 500 MB]"
    )
    incremental_runs(options.runs)

    scans = bare_scans()
    print(
        f"(d) bare grouped scans ({len(BASE_SCANS)} tables × {len(GRANULARITIES)} granularities): "
        f"{scans:.1f} s; "
        f"rebuild ÷ scans = {rebuild / scans:.2f} [aim < 3]"
    )
    print(f"snapshot table: {KpiSnapshot.objects.count():,} rows")


def incremental_runs(runs: int) -> None:
    """(b) and (c), after a rebuild."""
    # What autovacuum does after the nightly rebuild rewrote the facts and snapshots.
    print(
        f"VACUUM ANALYZE of the facts and snapshots: {vacuum('metrics_kpifact', 'metrics_kpisnapshot'):.1f} s"
    )

    snapshots_recompute_recent()  # the first run after a rebuild: its watermark is the rebuild's
    times = []
    for step in range(runs):
        reps_work(step)
        started = time.perf_counter()
        recent = snapshots_recompute_recent()
        times.append(time.perf_counter() - started)
    print(
        f"(b) incremental run (current + 3 previous periods, all granularities), {runs} runs: "
        f"median {statistics.median(times):.2f} s, best {min(times):.2f} s, worst {max(times):.2f} s, "
        f"{recent.rows:,} rows written by the last [target < 2 s]"
    )

    started = time.perf_counter()
    snapshots_recompute_long_statistics()
    seconds = time.perf_counter() - started
    print(f"(c) hourly run of the current quarters' and years' medians and percentiles: {seconds:.2f} s")
    print(f"peak memory of this process: {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
