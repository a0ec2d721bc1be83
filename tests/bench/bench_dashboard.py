"""Server time of the KPI dashboard on a small and a large database, and their ratio (not run by CI).

    # two databases with seed_demo data and computed snapshots, e.g.
    DATABASE_URL=.../minicrm_1k  python manage.py seed_demo --deals 1000 --reset && ... recompute_kpis
    DATABASE_URL=.../minicrm_1m  python manage.py seed_demo --size large --reset && ... recompute_kpis
    python tests/bench/bench_dashboard.py --small postgres://.../minicrm_1k --large postgres://.../minicrm_1m

Measures /metrics/ (monthly, 24 months) for a manager and for the busiest rep, cold (fragments rendered
again, as after each recompute) and warm (from the cache), in-process with the Django test client (the
server's own cost): median and p95 over --runs requests, queries, and the large/small ratios.
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
sys.path.insert(0, str(ROOT))

from tests.bench.machine import cpu_check  # noqa: E402

URL = "/metrics/?granularity=month&count=24"


def measure(runs: int) -> dict:
    """Per viewer (a manager: every family and the scorecard; the busiest rep: their own numbers) and per
    state (cold: the fragments rendered again, as after a recompute; warm: from the cache)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User
    from crm.models import Deal
    from metrics.models import KpiSnapshot
    from metrics.services import bump_generation

    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).first()
    rep = (
        User.objects.filter(role=User.Role.REP, is_active=True)
        .annotate(deal_count=Count("deals"))
        .order_by("-deal_count")
        .first()
    )
    found = {"deals": Deal.objects.count(), "snapshots": KpiSnapshot.objects.count()}
    for viewer, user in (("manager", manager), ("rep", rep)):
        client = Client()
        client.force_login(user)
        for state in ("cold", "warm"):
            timings = []
            for i in range(runs + 3):
                if state == "cold":
                    bump_generation()
                with CaptureQueriesContext(connection) as queries:
                    start = time.perf_counter()
                    response = client.get(URL)
                    elapsed = (time.perf_counter() - start) * 1000
                assert response.status_code == 200
                if i >= 3:
                    timings.append(elapsed)
            timings.sort()
            found[f"{viewer} {state}"] = {
                "median_ms": statistics.median(timings),
                "p95_ms": timings[int(len(timings) * 0.95) - 1],
                "queries": len(queries.captured_queries),
                "bytes": len(response.content),
            }
    return found


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
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    for name, r in results.items():
        print(f"{name}: {r['deals']:,} deals, {r['snapshots']:,} snapshots")
        for key, m in r.items():
            if isinstance(m, dict):
                print(
                    f"  {key:<13} median {m['median_ms']:6.1f} ms  p95 {m['p95_ms']:6.1f} ms  "
                    f"{m['queries']} queries  {m['bytes']:,} bytes"
                )
    for key, m in results["large"].items():
        if isinstance(m, dict):
            print(f"ratio large/small, {key}: {m['median_ms'] / results['small'][key]['median_ms']:.2f}")


if __name__ == "__main__":
    main()
