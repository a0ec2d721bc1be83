"""Server time of the KPI dashboard on a small and a large database, and their ratio (not run by CI).

    # two databases with seed_demo data and computed snapshots, e.g.
    DATABASE_URL=.../minicrm_1k  python manage.py seed_demo --deals 1000 --reset && ... recompute_kpis
    DATABASE_URL=.../minicrm_1m  python manage.py seed_demo --size large --reset && ... recompute_kpis
    python tests/bench/bench_dashboard.py --small postgres://.../minicrm_1k --large postgres://.../minicrm_1m

Measures /metrics/ for a manager (all families, monthly, 24 months) in-process with the Django test client
(the server's own cost), median and p95 over --runs requests, and prints large/small.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
URL = "/metrics/?granularity=month&count=24"


def measure(runs: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User
    from crm.models import Deal
    from metrics.models import KpiSnapshot

    client = Client()
    client.force_login(User.objects.filter(role=User.Role.MANAGER, is_active=True).first())
    timings = []
    for i in range(runs + 3):
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            response = client.get(URL)
            elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200
        if i >= 3:
            timings.append(elapsed)
    timings.sort()
    return {
        "deals": Deal.objects.count(),
        "snapshots": KpiSnapshot.objects.count(),
        "median_ms": statistics.median(timings),
        "p95_ms": timings[int(len(timings) * 0.95) - 1],
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", required=True, help="DATABASE_URL of the small database")
    parser.add_argument("--large", required=True, help="DATABASE_URL of the large database")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.runs)))
        return
    results = {}
    for name in ("small", "large"):
        env = {**os.environ, "DATABASE_URL": getattr(args, name)}
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--small",
                args.small,
                "--large",
                args.large,
                "--runs",
                str(args.runs),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    for name, r in results.items():
        print(
            f"{name:<6} {r['deals']:>10,} deals {r['snapshots']:>9,} snapshots"
            f"  median {r['median_ms']:6.1f} ms"
            f"  p95 {r['p95_ms']:6.1f} ms  {r['queries']} queries  {r['bytes']:,} bytes"
        )
    print(f"ratio large/small (median): {results['large']['median_ms'] / results['small']['median_ms']:.2f}")


if __name__ == "__main__":
    main()
