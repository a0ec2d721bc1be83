"""The deal list filtered by a custom choice field on a large database, as a manager and a rep (not in CI).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/minicrm_bench python tests/bench/bench_custom_fields.py \
        [--runs 15] [--explain]

Creates the deal field ``product_line`` (five options) if it is missing and gives every deal a value in one
SQL UPDATE (skewed, 40/25/15/12/8 %, by deal id: a second run changes nothing), then VACUUM ANALYZE. Then
the median of --runs requests of the whole deal list view (Django test client, in process: the server's own
cost, no network) for the most and the least common option, and an option together with a search, as the
first manager and as the busiest rep, with the queries of the last request. ``--explain`` prints the plans
(EXPLAIN ANALYZE) of the page's list and count queries for each.
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
from django.urls import reverse  # noqa: E402

from accounts.models import User  # noqa: E402
from crm.custom_fields.models import CustomField  # noqa: E402
from crm.custom_fields.services import field_create  # noqa: E402
from crm.models import Deal  # noqa: E402
from tests.bench.machine import cpu_check  # noqa: E402

KEY = "product_line"
OPTIONS = [
    {"key": "hardware", "en": "Hardware", "zh": "硬件"},
    {"key": "software", "en": "Software", "zh": "软件"},
    {"key": "services", "en": "Services", "zh": "服务"},
    {"key": "subscription", "en": "Subscription", "zh": "订阅"},
    {"key": "training", "en": "Training", "zh": "培训"},
]
# The option of deal id n: by n mod 100, the first 40 hardware, the next 25 software, … (idempotent).
FILL = """
    UPDATE crm_deal SET custom = custom || jsonb_build_object(%s::text, v.option)
    FROM (SELECT id, CASE WHEN id %% 100 < 40 THEN 'hardware' WHEN id %% 100 < 65 THEN 'software'
                          WHEN id %% 100 < 80 THEN 'services' WHEN id %% 100 < 92 THEN 'subscription'
                          ELSE 'training' END AS option FROM crm_deal) AS v
    WHERE crm_deal.id = v.id AND crm_deal.custom ->> %s IS DISTINCT FROM v.option
"""


def prepare(manager: User) -> None:
    if not CustomField.objects.filter(entity="deal", key=KEY).exists():
        field_create(
            actor=manager, entity="deal", key=KEY, label_en="Product line", kind="choice", choices=OPTIONS
        )
        print(f"created the deal field {KEY!r}")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL, [KEY, KEY])
        changed = cursor.rowcount
        cursor.execute("VACUUM ANALYZE crm_deal" if changed else "ANALYZE crm_deal")
    print(f"filled {changed:,} deals, analysed in {time.perf_counter() - started:.1f} s")


def timed(client: Client, url: str, runs: int) -> tuple[float, int, float]:
    """Median ms of ``runs`` requests (after one to warm up), the last one's queries, and the first's ms."""
    started = time.perf_counter()
    response = client.get(url)
    first = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(queries.captured_queries), first


def explain(client: Client, url: str) -> None:
    """EXPLAIN ANALYZE of the page's queries that read deals."""
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    for query in queries.captured_queries:
        if "crm_deal" not in query["sql"] or 'FROM "crm_deal"' not in query["sql"]:
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query['sql']}")
            print("\n".join(f"    {row[0]}" for row in cursor.fetchall()))
        print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    settings.ALLOWED_HOSTS = ["*"]
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("id").first()
    rep = (
        User.objects.filter(role=User.Role.REP, is_active=True)
        .annotate(n=Count("customers"))
        .order_by("-n", "id")
        .first()
    )
    assert manager is not None and rep is not None, "the database has no manager or rep: seed it first"
    prepare(manager)
    print(f"data: {Deal.objects.count():,} deals; rep {rep.username} owns {rep.n:,} customers")
    base = reverse("crm:deal_list")
    # The built-in filters alone first: what the list costs without a custom field, to read the others by.
    urls = [
        base,
        f"{base}?status=won",
        f"{base}?q=renewal",
        f"{base}?cf_{KEY}=hardware",
        f"{base}?cf_{KEY}=training",
        f"{base}?cf_{KEY}=training&status=won",
        f"{base}?cf_{KEY}=software&q=renewal",
    ]
    for role, user in (("manager", manager), ("rep", rep)):
        client = Client()
        client.force_login(user)
        for url in urls:
            median, queries, first = timed(client, url, args.runs)
            print(f"{role:8} {url:60} {median:8.1f} ms  {queries:3} queries  (first {first:.0f} ms)")
            if args.explain and f"cf_{KEY}" in url:
                explain(client, url)


if __name__ == "__main__":
    main()
