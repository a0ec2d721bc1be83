"""Server time and query count of the everyday pages, as a manager and as the busiest rep (not run by CI).

    DATABASE_URL=.../minicrm_1m python tests/bench/bench_pages.py [--runs 5] [/crm/ /surveys/ ...]

In-process with the Django test client (the server's own cost, no network): each page once to warm up
(its time is shown as "first": what the first visitor after a KPI run waits for cached parts), then the
median of --runs requests, and the queries of the last one. A page a role may not open answers
404 and is listed as such.
"""

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts.models import User  # noqa: E402
from crm.models import Deal  # noqa: E402
from tests.bench.machine import cpu_check  # noqa: E402

PAGES = (
    "/crm/",
    "/crm/customers/",
    "/crm/customers/new/",
    "/crm/deals/",
    "/crm/deals/board/",
    "/crm/deals/new/",
    "/crm/tickets/",
    "/metrics/",
    "/metrics/kpi/win_rate/",
    "/metrics/kpi/renewal_rate/",
    "/metrics/kpi/backlog/",
    "/metrics/adoption/",
    "/metrics/adoption/?granularity=year",
    "/metrics/segments/",
    "/metrics/data-quality/",
    "/surveys/",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("pages", nargs="*", default=PAGES)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    settings.ALLOWED_HOSTS = ["*"]
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    print(f"data: {Deal.objects.count():,} deals")
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("id").first()
    rep = (
        User.objects.filter(role=User.Role.REP, is_active=True)
        .annotate(n=Count("customers"))
        .order_by("-n", "id")
        .first()
    )
    for role, user in (("manager", manager), ("rep", rep)):
        client = Client()
        client.force_login(user)
        for url in args.pages:
            started = time.perf_counter()
            client.get(url)
            first = time.perf_counter() - started
            times = []
            for _ in range(args.runs):
                with CaptureQueriesContext(connection) as queries:
                    started = time.perf_counter()
                    response = client.get(url)
                    times.append(time.perf_counter() - started)
            shown = (
                f"{statistics.median(times) * 1000:8.1f} ms {len(queries.captured_queries):3} queries"
                f"  (first {first * 1000:.0f} ms)"
            )
            print(f"{role:8} {url:36} {response.status_code}  {shown if response.status_code == 200 else ''}")


if __name__ == "__main__":
    main()
