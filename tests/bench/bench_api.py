"""Server time and query count of the API's list and read endpoints, as a manager and as the busiest rep
(not run by CI).

    DATABASE_URL=.../minicrm_1m python tests/bench/bench_api.py [--runs 9]

In-process with the Django test client and a personal token (made for the run, revoked after): each
endpoint once to warm up, then the median of --runs requests and the queries of the last one. "deep"
follows the ``next`` cursor 20 pages in and times that page: keyset pages cost the same wherever they are.
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

from accounts.models import ApiToken, User  # noqa: E402
from accounts.services.api_tokens import api_token_create, api_token_revoke  # noqa: E402
from crm.models import Deal  # noqa: E402
from tests.bench.machine import cpu_check  # noqa: E402

ENDPOINTS = (
    "/api/v1/customers/",
    "/api/v1/customers/?order=-updated_at",
    "/api/v1/customers/?q=gmbh",
    "/api/v1/deals/",
    "/api/v1/deals/?status=open",
    "/api/v1/tickets/",
    "/api/v1/tickets/?queue=open",
    "/api/v1/activities/",
    "/api/v1/surveys/responses",
    "/api/v1/pipelines/",
    "/api/v1/users/",
    "/api/v1/kpis/",
    "/api/v1/kpis/win_rate",
    "/api/v1/kpis/revenue_won?granularity=week",
)


def _deep(client: Client, headers: dict, url: str, pages: int = 20) -> str:
    separator = "&" if "?" in url else "?"
    for _ in range(pages):
        data = client.get(url, headers=headers).json()
        if not data.get("next"):
            break
        url = f"{url.split('cursor=')[0].rstrip('&?')}{separator}cursor={data['next']}"
    return url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    settings.ALLOWED_HOSTS = ["*"]
    settings.CRM_API_RATE = "1000000/min"
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    print(f"data: {Deal.objects.count():,} deals")
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("id").first()
    rep = (
        User.objects.filter(role=User.Role.REP, is_active=True)
        .annotate(n=Count("customers"))
        .order_by("-n", "id")
        .first()
    )
    medians = []
    for role, user in (("manager", manager), ("rep", rep)):
        new = api_token_create(actor=user, user=user, name="bench", scope=ApiToken.Scope.READ)
        headers = {"Authorization": f"Bearer {new.secret}"}
        client = Client()
        urls = [*ENDPOINTS]
        for list_url in ("/api/v1/customers/", "/api/v1/deals/", "/api/v1/tickets/"):
            urls.append(_deep(client, headers, list_url))
        for url in urls:
            client.get(url, headers=headers)
            times = []
            for _ in range(args.runs):
                with CaptureQueriesContext(connection) as queries:
                    started = time.perf_counter()
                    response = client.get(url, headers=headers)
                    times.append(time.perf_counter() - started)
            median = statistics.median(times) * 1000
            medians.append(median)
            label = url if len(url) < 48 else url[:30] + "… (page 21)"
            print(
                f"{role:8} {label:50} {response.status_code}  {median:7.1f} ms "
                f"{len(queries.captured_queries):3} queries"
            )
        api_token_revoke(actor=user, token=new.token)
    print(f"all endpoints: median of medians {statistics.median(medians):.1f} ms, max {max(medians):.1f} ms")


if __name__ == "__main__":
    main()
