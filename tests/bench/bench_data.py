"""Data-quality benchmarks on a large database (not run by CI):

    python manage.py seed_demo --deals 1000000 --reset    # ≈ 100 000 customers, 1 000 000 deals
    python tests/bench/bench_data.py [--rows 100000] [--deals 100000]

1. Import of a generated customer CSV (--rows rows, all new, through the same services as the pages:
   upload check, preview of every row, then the run): rows per second. Peak Python memory (tracemalloc)
   of the run at 10 %, 50 % and 100 % of the rows shows whether memory stays flat. The imports are
   rolled back afterwards.
2. Duplicate scan over all customers (seconds, pairs), twice.
3. Export of --deals deals as CSV and as XLSX, as a manager (seconds, peak Python memory, size).

Times are in-process against the PostgreSQL in DATABASE_URL; ru_maxrss is the process's resident peak.
"""

import argparse
import io
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402

from accounts.models import User  # noqa: E402
from crm import selectors  # noqa: E402
from crm.data import dedupe, exports, imports  # noqa: E402
from crm.models import Customer, ImportJob  # noqa: E402

CITIES = ["Berlin", "Hamburg", "München", "Köln", "上海", "北京", "Leipzig", "Dresden"]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def customer_csv(rows: int, offset: int = 0) -> bytes:
    out = io.StringIO()
    out.write("\ufeff名称,邮箱,电话,城市,Industry,Segment,Status\n")
    for i in range(offset, offset + rows):
        out.write(
            f"Bench Import {i} GmbH,contact{i}@bench-import{i % 977}.example,+49 6221 {1_000_000 + i},"
            f"{CITIES[i % len(CITIES)]},Energy,smb,{'active' if i % 3 else 'lead'}\n"
        )
    return out.getvalue().encode("utf-8")


def run_import(manager: User, rows: int, *, measure_memory: bool) -> dict:
    """Upload, preview and run one import inside a transaction that is rolled back."""
    data = customer_csv(rows)
    with transaction.atomic():
        start = time.perf_counter()
        job = imports.import_job_create(actor=manager, kind="customers", file_name="bench.csv", data=data)
        uploaded = time.perf_counter()
        job = imports.import_job_set_mapping(job=job, actor=manager, mapping=job.mapping, date_order="dmy")
        if job.preview.get("checking"):  # a long file: the check_import task's work, done here in-process
            job = imports.import_job_check(job_id=job.pk)
        previewed = time.perf_counter()
        imports.import_job_start(job=job, actor=manager, mode="both", all_or_nothing=True)
        if measure_memory:
            tracemalloc.start()
        run_start = time.perf_counter()
        imports.import_job_run(job_id=job.pk)
        run_end = time.perf_counter()
        peak = tracemalloc.get_traced_memory()[1] / 1024 / 1024 if measure_memory else None
        if measure_memory:
            tracemalloc.stop()
        job = ImportJob.objects.without_content().get(pk=job.pk)
        assert job.status == "done" and job.created_count == rows, (job.status, job.error, job.report[:5])
        transaction.set_rollback(True)
    return {
        "rows": rows,
        "file_mb": len(data) / 1024 / 1024,
        "upload_s": uploaded - start,
        "preview_s": previewed - uploaded,
        "run_s": run_end - run_start,
        "rows_per_s": rows / (run_end - run_start),
        "peak_mb": peak,
    }


def bench_export(manager: User, deals: int, file_format: str, *, measure_memory: bool) -> dict:
    """Export ``deals`` deals and read the whole response, as a client downloading it would."""
    queryset = selectors.deal_list(user=manager).order_by("-created_at", "-id")[:deals]
    if measure_memory:
        tracemalloc.start()
    start = time.perf_counter()
    response = exports.export_response("deals", queryset, file_format)
    size = sum(len(chunk) for chunk in response.streaming_content)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1024 / 1024 if measure_memory else None
    if measure_memory:
        tracemalloc.stop()
    response.close()
    return {"seconds": elapsed, "peak_mb": peak, "size_mb": size / 1024 / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--deals", type=int, default=100_000)
    args = parser.parse_args()
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("id").first()
    if manager is None:
        sys.exit("No manager in the database: run `manage.py seed_demo` first.")
    print(f"customers in the database: {Customer.objects.count():,}")

    timed = run_import(manager, args.rows, measure_memory=False)
    print(
        f"\nimport of {timed['rows']:,} customers ({timed['file_mb']:.1f} MB CSV): upload check "
        f"{timed['upload_s']:.1f} s, preview {timed['preview_s']:.1f} s, run {timed['run_s']:.1f} s "
        f"= {timed['rows_per_s']:,.0f} rows/s (ru_maxrss {rss_mb():.0f} MB)"
    )
    print("peak Python memory of the run (tracemalloc; slower while tracing):")
    for share in (0.1, 0.5, 1.0):
        rows = int(args.rows * share)
        measured = run_import(manager, rows, measure_memory=True)
        print(f"  {rows:>7,} rows: {measured['peak_mb']:6.1f} MB (file {measured['file_mb']:.1f} MB)")

    for attempt in (1, 2):
        start = time.perf_counter()
        result = dedupe.duplicate_scan()
        print(
            f"\nduplicate scan #{attempt}: {time.perf_counter() - start:.1f} s, {result.pairs:,} pairs "
            f"(blocks: {result.blocks})"
        )

    print()
    for file_format in ("csv", "xlsx"):
        timed = bench_export(manager, args.deals, file_format, measure_memory=False)
        print(
            f"export of {args.deals:,} deals as {file_format.upper()}: {timed['seconds']:.1f} s "
            f"({args.deals / timed['seconds']:,.0f} rows/s), file {timed['size_mb']:.1f} MB"
        )
        for share in (0.1, 1.0):
            rows = int(args.deals * share)
            measured = bench_export(manager, rows, file_format, measure_memory=True)
            print(f"  peak Python memory at {rows:>7,} deals: {measured['peak_mb']:5.1f} MB")
    print(f"\nprocess resident peak (ru_maxrss): {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
