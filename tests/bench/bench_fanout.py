"""The full KPI rebuild in one process and fanned out across Celery worker processes (a script, not
collected by pytest).

    .venv/bin/python manage.py seed_demo --size large --reset     # ≈ 1 000 000 deals, 3 years
    .venv/bin/python tests/bench/bench_fanout.py [--rounds 2] [--workers local,1,2] [--skip-warmup]

Needs PostgreSQL (``DATABASE_URL``) and Redis (``REDIS_URL``: a database no running worker consumes, or
that worker takes parts too). First a warm-up rebuild in this process (the facts
stored, the tables analysed), with the seconds each family took (``--skip-warmup`` when they are stored
already: at 10 M deals a rebuild is long). Then, in rounds that interleave the
variants (the shared machine drifts): the rebuild in this process, and the chord
(``KPI_REBUILD_FANOUT``) on one worker with ``--concurrency N`` for each N of ``--workers`` (with the
parts scanning ahead on a second connection or not, ``--part-prefetch on|off|both``): wall seconds
from the task's start to the last step's commit, each part's seconds, and the peak memory (VmHWM) of this
process or of each worker process.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django  # noqa: E402

django.setup()

from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from metrics.models import SnapshotRun  # noqa: E402
from metrics.services import snapshots_rebuild_all  # noqa: E402
from metrics.services.fanout import REBUILD_PARTS  # noqa: E402
from tests.bench.machine import cpu_check  # noqa: E402


def family_seconds() -> dict[str, float]:
    """A rebuild in this process, timed per family module (from the progress of its KPIs)."""
    from importlib import import_module

    from metrics.kpis import FAMILY_MODULES

    module_of = {k.code: name for name in FAMILY_MODULES for k in import_module(f"metrics.kpis.{name}").KPIS}
    seconds: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(code: str) -> None:
        now = time.perf_counter()
        seconds[module_of[code]] = seconds.get(module_of[code], 0.0) + now - last[0]
        last[0] = now

    snapshots_rebuild_all(progress=progress)
    return seconds


def peak_mb_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def in_process() -> tuple[float, float]:
    started = time.perf_counter()
    run = snapshots_rebuild_all()
    assert run.status == SnapshotRun.Status.OK, run.error
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fanned_out(processes: int, *, prefetch: bool) -> tuple[float, list[float], list[float]]:
    """The chord on a worker with ``processes`` pool processes: wall seconds, each part's seconds, each pool
    process's peak memory. ``prefetch``: the parts scan ahead on a second connection (KPI_PREFETCH_SCANS)."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "KPI_REBUILD_FANOUT": "1",
        "KPI_PREFETCH_SCANS": "1" if prefetch else "0",
        "DJANGO_CONN_MAX_AGE": "0",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "crm", "worker", "--pool", "prefork",
        "--concurrency", str(processes), "--queues", "kpis", "--loglevel", "warning",
        "--hostname", f"{name}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    worker = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        time.sleep(8)  # the pool up
        latest = SnapshotRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        sender = Celery("bench-fanout", broker=settings.CELERY_BROKER_URL, set_as_current=False)
        started = time.perf_counter()
        sender.send_task("metrics.tasks.rebuild_all_kpi_snapshots", queue="kpis")
        sender.close()
        while True:
            run = SnapshotRun.objects.filter(pk__gt=latest, kind=SnapshotRun.Kind.FULL).first()
            if run is not None and run.status != SnapshotRun.Status.RUNNING:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - started
        assert run.status == SnapshotRun.Status.OK, run.error
        parts = [run.datasets[f"part {i}"]["seconds"] for i in range(len(REBUILD_PARTS))]
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        return wall, parts, [peak_mb_of(int(pid)) for pid in children]
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--workers",
        default="local,1,2",
        help="what to measure: local (the rebuild in this process) and worker pool sizes (default local,1,2)",
    )
    parser.add_argument(
        "--skip-warmup",
        action="store_true",
        help="no warm-up rebuild (the facts are already stored, e.g. by bench_kpis.py)",
    )
    parser.add_argument(
        "--part-prefetch", default="on", help="on, off or both: the parts scan ahead on a second connection"
    )
    args = parser.parse_args()
    variants = args.workers.split(",")
    local, sizes = "local" in variants, [int(n) for n in variants if n != "local"]
    prefetches = {"on": [True], "off": [False], "both": [True, False]}[args.part_prefetch]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM crm_deal")
        deals = cursor.fetchone()[0]
    print(f"{deals:,} deals; CPU check {cpu_check():.2f} s; parts {[list(p) for p in REBUILD_PARTS]}")
    if not args.skip_warmup:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        warm = family_seconds()
        print("warm-up rebuild per family (s): " + ", ".join(f"{k} {v:.1f}" for k, v in warm.items()))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE metrics_kpifact, metrics_kpisnapshot")
    for round_ in range(1, args.rounds + 1):
        if local:
            seconds, peak = in_process()
            print(f"round {round_}: one process        {seconds:6.1f} s, peak {peak:.0f} MB")
        for n, prefetch in [(n, p) for n in sizes for p in prefetches]:
            wall, parts, peaks = fanned_out(n, prefetch=prefetch)
            print(
                f"round {round_}: chord, {n} process(es), prefetch {'on' if prefetch else 'off'}"
                f" {wall:6.1f} s, parts "
                + ", ".join(f"{p:.1f}" for p in parts)
                + " s, peak per process "
                + ", ".join(f"{p:.0f}" for p in peaks)
                + " MB"
            )
    print(f"CPU check after: {cpu_check():.2f} s")


if __name__ == "__main__":
    main()
