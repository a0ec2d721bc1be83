"""Server time of the workspace's hot pages on a large database (not run by CI).

    python manage.py seed_demo --size large --reset          # ≈ 100 000 customers, 1 000 000 deals
    python tests/bench/bench_workspace.py [--runs 30]

Prints the median and p95 of: the customer list (first page, a search, a filtered page), the pipeline board
and the deal list, each for the busiest rep and for a manager, and a deal save (POST of the edit form).
Times are in-process (Django test client against the real PostgreSQL): the server's own cost, no network.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402

from accounts.models import User  # noqa: E402
from crm.models import Customer, Deal  # noqa: E402


def measure(client: Client, method: str, url: str, runs: int, data_for=None) -> dict:
    timings, queries = [], 0
    for i in range(runs + 2):
        data = data_for(i) if data_for else None
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = (
                getattr(client, method)(url, data) if data is not None else getattr(client, method)(url)
            )
            elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code in (200, 302), (url, response.status_code)
        if i >= 2:  # the first two warm caches
            timings.append(elapsed)
            queries = len(captured.captured_queries)
    timings.sort()
    return {
        "median": statistics.median(timings),
        "p95": timings[int(len(timings) * 0.95) - 1],
        "queries": queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    customers, deals = Customer.objects.count(), Deal.objects.count()
    print(f"database: {customers:,} customers, {deals:,} deals")
    rep = (
        User.objects.filter(role=User.Role.REP, is_active=True)
        .annotate(n=Count("customers"))
        .order_by("-n")
        .first()
    )
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).first()
    rows = []
    for user in (rep, manager):
        client = Client()
        client.force_login(user)
        label = f"{user.get_role_display()} ({user.username}, {user.customers.count():,} own customers)"
        pages = {
            "customer list": reverse("crm:customer_list"),
            "customer search": reverse("crm:customer_list") + "?q=gmbh",
            "customer filter+sort": reverse("crm:customer_list") + "?status=active&sort=-created&page=3",
            "pipeline board": reverse("crm:deal_board"),
            "deal list": reverse("crm:deal_list"),
            "workspace": reverse("crm:workspace"),
        }
        for name, url in pages.items():
            rows.append((label, name, measure(client, "get", url, args.runs)))

    deal = (
        Deal.objects.filter(customer__owner=rep, status=Deal.Status.OPEN).select_related("customer").first()
    )
    client = Client()
    client.force_login(rep)

    def payload(i: int) -> dict:
        current = Deal.objects.get(pk=deal.pk)
        return {
            "customer": deal.customer_id,
            "title": f"{deal.title.split(' #')[0]} #{i}",
            "amount": "1234.00",
            "kind": deal.kind,
            "source": deal.source,
            "version": current.version,
        }

    rows.append(
        (
            f"Sales rep ({rep.username})",
            "deal save (POST)",
            measure(client, "post", reverse("crm:deal_update", args=[deal.pk]), args.runs, payload),
        )
    )

    print(f"{'who':<52} {'page':<22} {'median ms':>10} {'p95 ms':>8} {'queries':>8}")
    for who, name, result in rows:
        print(f"{who:<52} {name:<22} {result['median']:>10.1f} {result['p95']:>8.1f} {result['queries']:>8}")


if __name__ == "__main__":
    main()
