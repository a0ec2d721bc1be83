"""Benchmark ``manage.py seed_demo`` against the database in DATABASE_URL (it replaces its data: --reset).

    DATABASE_URL=postgres://…/minicrm_bench .venv/bin/python tests/bench/bench_seed.py --deals 1000000

Prints rows, seconds, rows/second and the peak memory (RSS) of this process, which generates the rows.
"""

import argparse
import io
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--until", help="YYYY-MM-DD (default today)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from crm import demo

    options = ["--reset", "--deals", str(args.deals), "--years", str(args.years), "--seed", str(args.seed)]
    if args.until:
        options += ["--until", args.until]
    out = io.StringIO()
    started = time.monotonic()
    call_command("seed_demo", *options, "--verbosity", "2", stdout=out)
    seconds = time.monotonic() - started
    print(out.getvalue(), end="")

    rows = {}
    with connection.cursor() as cursor:
        for table in demo.COLUMNS:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (fixed table names)
            rows[table] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    total = sum(rows.values())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"deals:        {rows['crm_deal']:,}")
    print(f"customers:    {rows['crm_customer']:,}")
    print(f"rows:         {total:,}")
    print(f"seconds:      {seconds:.1f}")
    print(f"rows/second:  {total / seconds:,.0f}")
    print(f"peak RSS:     {peak_mib:,.0f} MiB")
    print(f"database:     {size}")


if __name__ == "__main__":
    main()
