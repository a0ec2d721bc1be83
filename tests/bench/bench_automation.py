"""What custom fields and automation rules cost a deal save, and how fast one worker runs rules (not run
by CI).

    DATABASE_URL=.../minicrm_bench REDIS_URL=redis://…/12 python tests/bench/bench_automation.py

1. Deal saves, in one run so that the machine's drift hits both sides alike: first with no custom field
   and no rule, then with 20 deal custom fields (every type) and 20 active rules (10 on "a deal is
   created", 10 on "a deal changes stage", each with two conditions and a task). Each save is one
   committed transaction through the service (create, edit with every custom value, stage move), and
   the edit also through the whole request (the deal edit page's POST, as a rep); medians of --saves.
2. Rule throughput: --runs waiting runs (a task each) handed to one Celery worker process
   (``--concurrency 1``, then 2), timed from the hand-over until every run is done: runs per second.

Everything it creates (deals, tasks, runs, rules, fields) is deleted at the end.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client  # noqa: E402

from accounts.models import User  # noqa: E402
from crm import services  # noqa: E402
from crm.automation.events import automation_emit, enqueue  # noqa: E402
from crm.automation.services import rule_create  # noqa: E402
from crm.custom_fields.services import field_create  # noqa: E402
from crm.models import Activity, AutomationRule, AutomationRun, CustomField, Deal, PipelineStage  # noqa: E402
from tests.bench.machine import cpu_check  # noqa: E402

KINDS = [
    "text", "text", "text", "text", "long_text", "long_text", "integer", "integer", "decimal", "decimal",
    "money", "money", "date", "date", "yes_no", "choice", "choice", "multi_choice", "user", "url",
]  # fmt: skip
OPTIONS = [{"key": f"o{i}", "en": f"Option {i}", "zh": f"选项{i}"} for i in range(5)]


def value_for(kind: str, i: int, user: User) -> object:
    return {
        "text": f"Text {i}",
        "long_text": "A longer note " * 20,
        "integer": 42 + i,
        "decimal": "12.5",
        "money": "1250.50",
        "date": "2026-12-24",
        "yes_no": True,
        "choice": "o1",
        "multi_choice": ["o1", "o3"],
        "user": user.pk,
        "url": "https://example.com/lot",
    }[kind]


def median_ms(samples: list[float]) -> str:
    p90 = statistics.quantiles(samples, n=10)[-1]
    return f"{statistics.median(samples) * 1000:6.1f} ms (p90 {p90 * 1000:6.1f})"


def timed(action, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        with transaction.atomic():
            action(i)
        samples.append(time.perf_counter() - started)
    return samples


def saves(
    rep: User, customer, stages: list[PipelineStage], fields: list[CustomField], count: int, made: list[int]
):
    custom = {f.key: value_for(f.kind, n, rep) for n, f in enumerate(fields)}

    def create(i: int) -> None:
        made.append(
            services.deal_create(
                actor=rep, customer=customer, title=f"Bench {i}", amount=Decimal("9000"), custom=custom
            ).pk
        )

    create_times = timed(create, count)
    deal = Deal.objects.get(pk=made[-1])

    def edit(i: int) -> None:
        services.deal_update(
            deal=deal, actor=rep, data={"amount": Decimal(9000 + i), "custom": custom}, version=None
        )

    def move(i: int) -> None:
        services.deal_move_stage(deal=deal, stage=stages[1 + i % 2], actor=rep)

    edit_times, move_times = timed(edit, count), timed(move, count)
    client = Client()
    client.force_login(rep)
    request_times = []
    for i in range(count):
        deal.refresh_from_db()
        data = {
            "customer": customer.pk,
            "title": deal.title,
            "amount": str(9000 + i),
            "kind": deal.kind,
            "source": deal.source,
            "version": deal.version,
            **{f"cf_{key}": value for key, value in custom.items() if not isinstance(value, list)},
        }
        data |= {f"cf_{key}": value for key, value in custom.items() if isinstance(value, list)}
        data |= {f"cf_{f.key}": "on" for f in fields if f.kind == "yes_no"}
        started = time.perf_counter()
        response = client.post(f"/crm/deals/{deal.pk}/edit/", data)
        request_times.append(time.perf_counter() - started)
        assert response.status_code == 302, (response.status_code, response.content[:2000])
    return create_times, edit_times, move_times, request_times


def throughput(rep: User, deal_ids: list[int], runs: int, concurrency: int) -> float:
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("pk").first()
    rule = rule_create(
        actor=manager,
        name=f"bench throughput {concurrency}",
        trigger="deal.created",
        params={},
        conditions=[{"field": "amount", "op": "gte", "value": "1"}],
        actions=[
            {"type": "create_task", "assignee": "owner", "days": 2, "subject_en": "Call {{ customer }}"}
        ],
        is_active=True,
    )
    deals = list(Deal.objects.filter(status="open", amount__isnull=False).order_by("-pk")[: runs + 40])
    warm_up: list[int] = []
    ids: list[int] = []
    with transaction.atomic():
        for n, deal in enumerate(deals):
            made = automation_emit(trigger="deal.created", obj=deal, key=f"bench:{concurrency}", rules=[rule])
            (warm_up if n < 40 else ids).extend(made)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "crm", "worker", "--concurrency", str(concurrency),
         "--loglevel", "warning", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        enqueue(warm_up)  # the worker's start and its processes' first tasks, apart from the rate
        while AutomationRun.objects.filter(pk__in=warm_up, status="pending").exists():
            time.sleep(0.05)
        started = time.perf_counter()
        enqueue(ids)
        while AutomationRun.objects.filter(pk__in=ids, status="pending").exists():
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)
    done = AutomationRun.objects.filter(pk__in=ids, status="done").count()
    print(f"  {len(ids)} runs, {done} done, concurrency {concurrency}: {len(ids) / elapsed:6.1f} runs/s")
    rule.delete()
    return len(ids) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--saves", type=int, default=40)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    settings.ALLOWED_HOSTS = ["*"]
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    print(f"deals: {Deal.objects.count():,}")
    rep = User.objects.filter(role=User.Role.REP, is_active=True).order_by("pk").first()
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("pk").first()
    customer = rep.customers.filter(status="active").order_by("pk").first()
    stages = list(PipelineStage.objects.filter(pipeline__is_default=True, kind="open").order_by("order"))
    AutomationRule.objects.filter(builtin="").update(is_active=False)
    from accounts.models import UsageEvent

    last_activity = Activity.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    last_usage = UsageEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    made: list[int] = []
    rules: list[AutomationRule] = []
    fields: list[CustomField] = []
    try:
        baseline = saves(rep, customer, stages, [], args.saves, made)
        for n, kind in enumerate(KINDS):
            choices = OPTIONS if kind in ("choice", "multi_choice") else None
            fields.append(
                field_create(
                    actor=manager,
                    entity="deal",
                    key=f"bench_{n}",
                    label_en=f"Bench {n}",
                    kind=kind,
                    choices=choices,
                )
            )
        for n in range(20):
            rules.append(
                rule_create(
                    actor=manager,
                    name=f"bench {n}",
                    trigger="deal.created" if n < 10 else "deal.stage_changed",
                    params={},
                    conditions=[
                        {"field": "amount", "op": "gte", "value": "5000"},
                        {"field": "custom.bench_15", "op": "eq", "value": "o1"},
                    ],
                    actions=[
                        {
                            "type": "create_task",
                            "assignee": "owner",
                            "days": 3,
                            "subject_en": "Rule {{ deal }}",
                        }
                    ],
                    is_active=True,
                )
            )
        loaded = saves(rep, customer, stages, fields, args.saves, made)
        print(f"\nDeal saves (median of {args.saves}, committed):   none            20 fields + 20 rules")
        for name, before, after in zip(
            ("create", "edit", "stage move", "edit request"), baseline, loaded, strict=True
        ):
            added = (statistics.median(after) - statistics.median(before)) * 1000
            print(f"  {name:<13} {median_ms(before)}   {median_ms(after)}   added {added:+.1f} ms")
        AutomationRule.objects.filter(pk__in=[r.pk for r in rules]).update(is_active=False)
        print("\nRule throughput in one worker (a task per run):")
        for concurrency in (1, 2):
            throughput(rep, made, args.runs, concurrency)
    finally:
        Activity.objects.filter(pk__gt=last_activity).delete()
        UsageEvent.objects.filter(pk__gt=last_usage).delete()
        AutomationRun.objects.filter(rule__builtin="").delete()
        AutomationRule.objects.filter(pk__in=[r.pk for r in rules]).delete()
        AutomationRule.objects.filter(name__startswith="bench throughput").delete()
        Deal.objects.filter(pk__in=made).delete()
        CustomField.objects.filter(pk__in=[f.pk for f in fields]).delete()
        Deal.objects.filter(custom__has_key="bench_0").update(custom={})


if __name__ == "__main__":
    main()
