"""EXPLAIN ANALYZE of the queries the index choices rest on (a script, not collected by pytest).

    DATABASE_URL=postgres://…/minicrm_bench10 .venv/bin/python tests/bench/bench_explain.py

For each query: the plan's top nodes, the indexes it used, rows a lossy bitmap rechecked and threw
away, planning and execution milliseconds (the second of two runs: cached pages, as on a busy server;
the first run's time is printed too). Then the correlation of each time column with the rows' physical
order (``pg_stats``): a BRIN index only filters where it is near 1. The BRIN on ``crm_deal.created_at``
that migration ``crm 0029`` dropped is created again inside a transaction that is rolled back, and the
same month of deals is read through it and through the btree ``deal_created_id``.
"""

import argparse
import json
import os
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from tests.bench.machine import cpu_check  # noqa: E402

# Name -> (SQL, why it matters). %(...)s are filled from the data (a busy month, a busy deal, a rep).
QUERIES: dict[str, tuple[str, str]] = {
    "usage month by user": (
        "SELECT user_id, count(*) FROM accounts_usageevent WHERE at >= %(lo)s AND at < %(hi)s "
        "GROUP BY user_id",
        "adoption KPIs: one partition read straight through",
    ),
    "day facts of a month": (
        "SELECT * FROM metrics_kpifact WHERE dataset = %(dataset)s AND grain = 'day' "
        "AND day >= %(lo_day)s AND day < %(hi_day)s",
        "the 5-minute run's like-for-like reads: one partition's unique index",
    ),
    "one deal's stage history": (
        "SELECT * FROM crm_dealstagechange WHERE deal_id = %(deal)s ORDER BY at",
        "the deal page: the price of partitions (every partition planned)",
    ),
    "deals created in a month (btree)": (
        "SELECT count(*) FROM crm_deal WHERE created_at >= %(lo)s AND created_at < %(hi)s",
        "the btree deal_created_id",
    ),
    "customers created in a month (BRIN)": (
        "SELECT count(*) FROM crm_customer WHERE created_at >= %(lo)s AND created_at < %(hi)s",
        "the BRIN customer_created_brin (customers are stored in creation order)",
    ),
    "rep's deals, newest first": (
        "SELECT id, title, amount, created_at FROM crm_deal WHERE owner_id = %(rep)s "
        "ORDER BY created_at DESC LIMIT 50",
        "the rep's deal list: deal_owner_created",
    ),
    "all deals, newest first, page 2 000": (
        "SELECT id, title FROM crm_deal WHERE (created_at, id) < (%(mid)s, %(mid_id)s) "
        "ORDER BY created_at DESC, id DESC LIMIT 50",
        "a manager's deal list deep in the keyset pages: deal_created_id",
    ),
    "rep's customers by name": (
        "SELECT id, name FROM crm_customer WHERE owner_id = %(rep)s ORDER BY name LIMIT 50",
        "the rep's customer list: customer_owner_name",
    ),
}
PARTITION = re.compile(r"_p(\d{6}|default)$")
BRIN_DEALS = "deals created in a month (BRIN, dropped in crm 0029)"
CORRELATIONS = [
    ("crm_deal", "created_at"),
    ("crm_activity", "created_at"),
    ("crm_customer", "created_at"),
]


def parameters(cursor) -> dict:
    cursor.execute("SELECT max(created_at) FROM crm_deal")
    (newest,) = cursor.fetchone()
    hi = newest.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    lo = (hi - timedelta(days=1)).replace(day=1)  # the last whole month
    cursor.execute("SELECT owner_id FROM crm_deal GROUP BY owner_id ORDER BY count(*) DESC LIMIT 1")
    (rep,) = cursor.fetchone()
    cursor.execute(
        "SELECT deal_id FROM crm_dealstagechange WHERE at >= %s GROUP BY deal_id "
        "ORDER BY count(*) DESC LIMIT 1",
        [lo],
    )
    (deal,) = cursor.fetchone()
    cursor.execute(  # 2 000 pages of 50 down, or the oldest deal of a smaller database
        "SELECT created_at, id FROM (SELECT created_at, id FROM crm_deal ORDER BY created_at DESC, id DESC "
        "LIMIT 100000) newest ORDER BY created_at, id LIMIT 1"
    )
    mid, mid_id = cursor.fetchone()
    # the dataset with the most day facts (the facts exist once a rebuild ran)
    cursor.execute(
        "SELECT dataset FROM metrics_kpifact WHERE grain = 'day' AND day >= %s GROUP BY dataset "
        "ORDER BY count(*) DESC LIMIT 1",
        [lo.date()],
    )
    dataset = (cursor.fetchone() or ["(none: run a rebuild first)"])[0]
    return {
        "lo": lo, "hi": hi, "lo_day": lo.date(), "hi_day": hi.date(), "dataset": dataset,
        "rep": rep, "deal": deal, "mid": mid, "mid_id": mid_id,
    }  # fmt: skip


def explain(cursor, query: str, params: dict) -> dict:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params)
    (document,) = cursor.fetchone()
    return (json.loads(document) if isinstance(document, str) else document)[0]


def nodes(plan: dict):
    """The plan's nodes, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def summary(result: dict) -> str:
    plan = result["Plan"]
    all_nodes = list(nodes(plan))
    indexes = sorted({n["Index Name"] for n in all_nodes if "Index Name" in n})
    rechecked = sum(n.get("Rows Removed by Index Recheck", 0) for n in all_nodes)
    partitions = sum(1 for n in all_nodes if PARTITION.search(n.get("Relation Name", "")))
    shape = " > ".join(n["Node Type"] for n in all_nodes[:4])
    parts = [shape]
    if indexes:
        parts.append(
            "indexes " + ", ".join(indexes[:3]) + (f" (+{len(indexes) - 3})" if len(indexes) > 3 else "")
        )
    if partitions:
        parts.append(f"{partitions} partition scan(s)")
    if rechecked:
        parts.append(f"{rechecked:,} rows rechecked and dropped")
    return "; ".join(parts)


def run(cursor, name: str, query: str, params: dict) -> None:
    first = explain(cursor, query, params)
    second = explain(cursor, query, params)
    print(
        f"{name}: plan {second['Planning Time']:.1f} ms, execute {second['Execution Time']:.1f} ms "
        f"(first run {first['Planning Time'] + first['Execution Time']:.1f} ms); {summary(second)}"
    )


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM crm_deal")
        (deals,) = cursor.fetchone()
        print(f"{deals:,} deals; CPU check {cpu_check():.2f} s")
        params = parameters(cursor)
        print(
            f"month {params['lo']:%Y-%m}, rep {params['rep']}, deal {params['deal']}, "
            f"facts of {params['dataset']}"
        )
        for name, (query, why) in QUERIES.items():
            run(cursor, name, query, params)
            print(f"    ({why})")
        started = time.perf_counter()
        with transaction.atomic():
            cursor.execute("CREATE INDEX bench_deal_created_brin ON crm_deal USING brin (created_at)")
            built = time.perf_counter() - started
            cursor.execute("DROP INDEX deal_created_id")  # rolled back below: the planner must take the BRIN
            run(cursor, BRIN_DEALS, QUERIES["deals created in a month (btree)"][0], params)
            print(f"    (built in {built:.1f} s; rolled back)")
            transaction.set_rollback(True)
        for table, column in CORRELATIONS:
            cursor.execute(
                "SELECT correlation FROM pg_stats WHERE tablename = %s AND attname = %s", [table, column]
            )
            row = cursor.fetchone()
            print(f"correlation of {table}.{column} with the row order: {row[0] if row else 'no statistics'}")
        for table in ("accounts_usageevent", "crm_dealstagechange", "metrics_kpifact"):
            cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [table])
            print(f"{table}: {cursor.fetchone()[0]} partitions")


if __name__ == "__main__":
    main()
