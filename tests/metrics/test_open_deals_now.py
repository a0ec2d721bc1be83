"""What every 5-minute run reads of every open deal (the pipeline, rotting and staleness of the current
periods) comes from the ``deal_open_owner`` index alone: at 10 M deals there are 818 000 open ones, and
fetching each from the table cost a second per dataset."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metrics.kpis.base import Context, Run
from metrics.kpis.data_quality import STALE
from metrics.kpis.shared import OPEN_PIPELINE_NOW, ROTTING_NOW
from metrics.kpis.sql import current_grouped
from metrics.periods import GRANULARITIES, recent_periods
from tests.factories import make_customer, make_deal, make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("dataset", [OPEN_PIPELINE_NOW, ROTTING_NOW, STALE], ids=lambda ds: ds.name)
def test_the_open_deals_now_are_read_from_their_index_alone(no_auto_assign, dataset):
    rep = make_user()
    for _ in range(3):
        make_deal(make_customer(rep))
    now = timezone.now()
    ctx = Context(Run(periods={g: recent_periods(g, now, 1) for g in GRANULARITIES}, now=now))
    with CaptureQueriesContext(connection) as queries:
        grouped = current_grouped(ctx, dataset, GRANULARITIES)
    assert grouped[("month", ctx.current("month").first_day, "user", str(rep.pk))]["open"] == 3
    (scan,) = [q["sql"] for q in queries.captured_queries if "crm_deal" in q["sql"]]
    with connection.cursor() as cursor:
        # A few rows make any plan about as cheap as any other: only index-only scans are left to the
        # planner, and only an index holding every column the query reads allows one.
        for plan in ("seqscan", "bitmapscan", "indexscan"):
            cursor.execute(f"SET LOCAL enable_{plan} = off")
        cursor.execute(f"EXPLAIN {scan}")
        plan = "\n".join(line for (line,) in cursor.fetchall())
    assert "Index Only Scan using deal_open_owner on crm_deal" in plan, plan
