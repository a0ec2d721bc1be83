"""The incremental KPI runs against full rebuilds: after ordinary work, both leave the same numbers.

The every-few-minutes run rewrites only the facts of the days whose records changed since the last
run and recomputes the periods those days count for; the hourly run does the same for the medians and
percentiles of quarters and years. Whatever they skip must be what a full rebuild would leave as is.
"""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from crm import services
from crm.models import Customer, Deal
from metrics import services as metrics_services
from metrics.kpis import facts, family_datasets, registry
from metrics.kpis.base import Context, Run
from metrics.models import KpiFact, KpiFactState, KpiSnapshot, SnapshotRun
from metrics.periods import GRANULARITIES, recent_periods
from metrics.services import (
    kpi_rows,
    snapshots_rebuild_all,
    snapshots_recompute_long_statistics,
    snapshots_recompute_recent,
)
from surveys import services as survey_services
from tests.conftest import seed_defaults
from tests.factories import (
    make_agent,
    make_answer,
    make_closed_deal,
    make_customer,
    make_deal,
    make_invitation,
    make_login,
    make_survey,
    make_team,
    make_ticket,
    make_usage_event,
    make_user,
    stage,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_margin(monkeypatch):
    """Rows written before a run are not "changed since" it (the margin covers slow commits in production)."""
    monkeypatch.setattr(facts, "WATERMARK_MARGIN", timedelta(0))


def recent_table() -> list[tuple]:
    """The snapshot rows of the recent periods, without ids and computation times, in key order."""
    starts = {(g, p.start) for g in GRANULARITIES for p in recent_periods(g, timezone.now(), 3)}
    fields = [f.name for f in KpiSnapshot._meta.fields if f.name not in ("id", "computed_at")]
    rows = KpiSnapshot.objects.order_by("kpi", "granularity", "scope", "scope_id", "period_start")
    return [row for row in rows.values_list(*fields) if (row[1], row[2]) in starts]


def facts_table() -> list[tuple]:
    return list(
        KpiFact.objects.order_by("dataset", "grain", "day", "scope", "scope_id").values_list(
            "dataset", "grain", "day", "scope", "scope_id", "values"
        )
    )


@pytest.fixture
def company(no_auto_assign):
    """A little company with history in the recent weeks, months and years."""
    now = timezone.now()
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    r1, r2 = make_user(team=make_team()), make_user(team=make_team())
    agent = make_agent()
    c1 = make_customer(r1, at=ago(days=400))
    c2 = make_customer(r1, at=ago(days=60))
    c3 = make_customer(r2, at=ago(days=10))
    lead = make_customer(r2, status=Customer.Status.LEAD, at=ago(days=30))
    churned = make_customer(r2, at=ago(days=200))
    services.customer_set_status(
        customer=churned, status=Customer.Status.CHURNED, actor=r2, at=ago(days=40), reason="price"
    )
    won_earlier = make_closed_deal(c1, created=ago(days=50), closed=ago(days=20), amount=Decimal(800))
    make_closed_deal(c1, created=ago(days=30), closed=ago(days=3), amount=Decimal(300))
    make_closed_deal(c2, created=ago(days=30), closed=ago(days=5), won=False)
    make_closed_deal(c2, created=ago(days=300), closed=ago(days=100), amount=Decimal(1200))
    open_deal = make_deal(c3, at=ago(days=9), amount=Decimal(500))
    services.deal_move_stage(deal=open_deal, stage=stage("open", 20), actor=r2, at=ago(days=6))
    other_open = make_deal(c2, at=ago(days=12), amount=Decimal(700))
    solved = make_ticket(c1, at=ago(days=10), assignee=agent)
    services.ticket_reply(ticket=solved, actor=agent, body="On it", at=ago(days=9))
    services.ticket_set_status(ticket=solved, status="solved", actor=agent, at=ago(days=8))
    waiting = make_ticket(c2, at=ago(days=2), assignee=agent, priority="high")
    for days in (1, 4, 15):
        make_usage_event(r1, ago(days=days))
        make_login(r2, ago(days=days))
    survey = make_survey("nps")
    make_answer(survey, c1, 9, ago(days=12))
    invitation = make_invitation(survey, c3, sent_at=ago(days=5))
    return {
        "reps": (r1, r2),
        "agent": agent,
        "lead": lead,
        "churned": churned,
        "c2": c2,
        "won_earlier": won_earlier,
        "open_deal": open_deal,
        "other_open": other_open,
        "solved": solved,
        "waiting": waiting,
        "invitation": invitation,
    }


def work_now(company) -> None:
    """A few minutes of ordinary work, through the services, after the last run."""
    r1, r2 = company["reps"]
    agent = company["agent"]
    services.deal_move_stage(deal=company["open_deal"], stage=stage("won"), actor=r2)
    # Reopened: leaves the day it was won, 20 days ago.
    services.deal_move_stage(deal=company["won_earlier"], stage=stage("open", 20), actor=r1)
    services.deal_move_stage(
        deal=company["other_open"], stage=stage("lost"), actor=r1, lost_reason="Went elsewhere"
    )
    # A lead created a month ago converts: counts for the month it was created in.
    services.customer_set_status(customer=company["lead"], status=Customer.Status.ACTIVE, actor=r2)
    services.customer_set_status(customer=company["c2"], status=Customer.Status.CHURNED, actor=r1, reason="x")
    # A customer moves segment: its deals closed weeks ago count for the new one.
    Customer.objects.filter(pk=company["won_earlier"].customer_id).update(
        segment=Customer.Segment.ENTERPRISE, updated_at=timezone.now()
    )
    services.customer_set_status(customer=company["churned"], status=Customer.Status.ACTIVE, actor=r2)
    make_customer(r2)
    services.ticket_reply(ticket=company["waiting"], actor=agent, body="Answer")
    services.ticket_set_status(ticket=company["waiting"], status="solved", actor=agent)
    # Reopened: leaves the day it was solved on, 8 days ago.
    services.ticket_set_status(ticket=company["solved"], status="open", actor=agent)
    make_usage_event(r2, timezone.now())
    make_login(r1, timezone.now())
    survey_services.invitation_mark_opened(invitation=company["invitation"])
    survey_services.response_submit_score(invitation_id=company["invitation"].pk, score=3)


@pytest.mark.parametrize("learned", [True, False], ids=["reads-learned", "reads-unknown"])
def test_incremental_runs_leave_what_a_full_rebuild_leaves(company, monkeypatch, learned):
    """``learned``: the datasets each KPI reads are known from the rebuild before (datasets read together
    are widened up front), or not (a KPI that finds a dataset short has it computed again)."""
    snapshots_rebuild_all()
    if not learned:
        forget_reads(monkeypatch)
    work_now(company)
    recent = snapshots_recompute_recent()
    long = snapshots_recompute_long_statistics()
    assert (recent.kind, recent.status, long.kind, long.status) == ("recent", "ok", "long", "ok")
    incremental, incremental_facts = recent_table(), facts_table()
    assert len(incremental) > 500

    snapshots_rebuild_all()
    assert recent_table() == incremental
    assert facts_table() == incremental_facts


def test_stored_facts_name_what_each_of_their_values_holds(company):
    snapshots_rebuild_all()
    states = dict(KpiFactState.objects.values_list("dataset", "measures"))
    for dataset, values in KpiFact.objects.values_list("dataset", "values"):
        assert len(values) == len(states[dataset]), dataset
    closed = states["closed_deals"]
    assert closed[:4] == ["won", "closed", "won_amount", "closed_amount"]
    # Read by name: the month facts of the deals won in the last year (800 + 300 + 1200), in cents.
    months = KpiFact.objects.filter(dataset="closed_deals", grain="month", scope="user")
    won_cents = sum(v[closed.index("won_amount")] for v in months.values_list("values", flat=True))
    assert won_cents == 230_000
    # A measure counted per granularity is named per granularity.
    assert any("@" in name for names in states.values() for name in names)


def test_recent_run_recomputes_only_the_periods_changes_count_for(company):
    snapshots_rebuild_all()
    quiet = snapshots_recompute_recent()
    # Nothing changed: only the current periods (the day since the last run) are rewritten.
    current = {(g, recent_periods(g, timezone.now(), 0)[0].start) for g in GRANULARITIES}
    touched = set(
        KpiSnapshot.objects.filter(computed_at__gte=quiet.started_at).values_list(
            "granularity", "period_start"
        )
    )
    assert touched <= current
    # Statistics of quarters and years wait for the hourly run.
    assert not KpiSnapshot.objects.filter(
        computed_at__gte=quiet.started_at, kpi="median_deal_size", granularity__in=["quarter", "year"]
    ).exists()


def scanned_spans(monkeypatch) -> dict[str, list[tuple[date, date]]]:
    """Dataset name -> the spans of days an incremental run scans from its records, as the run goes."""
    scanned: dict[str, list[tuple[date, date]]] = {}
    scan = facts.create_day_table

    def recording(ctx, ds, table, *, spans, opening_before):
        scanned.setdefault(ds.name, []).extend(spans)
        return scan(ctx, ds, table, spans=spans, opening_before=opening_before)

    monkeypatch.setattr(facts, "create_day_table", recording)
    return scanned


@pytest.mark.parametrize("kept", ["recorded", "fewer-months", "built-before-recorded"])
def test_a_change_months_ago_rescans_its_day_only_where_day_facts_reach_back(
    company, monkeypatch, settings, kept
):
    """The rebuild stores day facts of the last KPI_DAY_FACTS_MONTHS months: a deal won 100 days ago and
    reopened now has that day scanned again, not its month. Where day facts do not reach back that far
    (fewer months kept, or facts built before their first day was recorded, which kept the days from the
    Monday before the previous month), the whole week and month are rescanned."""
    if kept == "fewer-months":
        settings.KPI_DAY_FACTS_MONTHS = 2
    snapshots_rebuild_all()
    first_days = dict(KpiFactState.objects.values_list("dataset", "days_from"))
    days = KpiFact.objects.filter(dataset="closed_deals", grain="day").order_by("day")
    assert first_days["closed_deals"] == facts.horizon(timezone.now(), settings.KPI_DAY_FACTS_MONTHS)
    assert days.first().day >= first_days["closed_deals"]
    # Every dataset with facts knows where its day facts start.
    assert None not in {first_days[name] for name in KpiFact.objects.values_list("dataset", flat=True)}
    if kept == "built-before-recorded":
        KpiFactState.objects.update(days_from=None)
        KpiFact.objects.filter(grain="day", day__lt=facts.horizon(timezone.now())).delete()
    snapshots_recompute_recent()
    old = Deal.objects.get(status=Deal.Status.WON, amount=Decimal(1200))
    day = old.closed_at.astimezone(timezone.get_current_timezone()).date()
    spans = scanned_spans(monkeypatch)
    services.deal_move_stage(deal=old, stage=stage("open", 20), actor=old.owner)  # reopened

    snapshots_recompute_recent()
    old_spans = [(lo, hi) for lo, hi in spans["closed_deals"] if lo <= day < hi]
    if kept == "recorded":
        assert old_spans == [(day, day + timedelta(days=1))]
    else:
        assert old_spans and all(hi - lo >= timedelta(days=28) for lo, hi in old_spans)
    snapshots_recompute_long_statistics()
    incremental, incremental_facts = recent_table(), facts_table()
    snapshots_rebuild_all()
    assert recent_table() == incremental
    if kept == "built-before-recorded":  # the rebuild stores the old days again
        assert [f for f in facts_table() if f[1] != "day"] == [f for f in incremental_facts if f[1] != "day"]
    else:
        assert facts_table() == incremental_facts


def test_a_reassigned_deal_rescans_its_day_for_its_owners_now_and_before(company, monkeypatch):
    """The funnel's and the deals' data quality facts are kept per user: a deal handed from one rep to
    another rescans its day for those two only, and leaves the facts a rebuild would."""
    snapshots_rebuild_all()
    snapshots_recompute_recent()
    r1, r2 = company["reps"]
    deal = Deal.objects.get(pk=company["other_open"].pk)  # r1's, created 12 days ago
    day = deal.created_at.astimezone(timezone.get_current_timezone()).date()
    narrowed: dict[str, list] = {}
    scan = facts.create_day_table

    def recording(ctx, ds, table, *, spans, opening_before):
        if ctx.scan_users is not None:
            narrowed.setdefault(ds.name, []).append((spans, sorted(ctx.scan_users)))
        return scan(ctx, ds, table, spans=spans, opening_before=opening_before)

    monkeypatch.setattr(facts, "create_day_table", recording)
    manager = make_user(role="manager")
    services.deal_update(deal=deal, actor=manager, data={"owner": r2}, version=deal.version)

    snapshots_recompute_recent()
    kept_per_user = ("funnel", "dq_deals")
    for name in kept_per_user:
        assert narrowed[name] == [([(day, day + timedelta(days=1))], sorted([r1.pk, r2.pk]))], name
    incremental = [f for f in facts_table() if f[0] in kept_per_user]
    assert any(f[2] == day and f[4] == str(r2.pk) for f in incremental)
    # (Datasets kept by other dates, such as the pipeline's stage moves, take an owner's change on earlier
    # days at the nightly rebuild, as before.)
    snapshots_rebuild_all()
    assert [f for f in facts_table() if f[0] in kept_per_user] == incremental


def forget_reads(monkeypatch) -> None:
    """This process and the cache forget which datasets each KPI read."""
    monkeypatch.setattr(metrics_services, "LAST_READS", {})
    cache.delete(metrics_services.READS_CACHE_KEY)


def answered(*codes: str) -> dict[str, set[tuple[str, date]]]:
    """The periods an incremental run now would recompute for each KPI of ``codes`` (nothing written)."""
    now = timezone.now()
    ctx = Context(
        Run(periods={g: recent_periods(g, now, 3) for g in GRANULARITIES}, now=now, incremental=True)
    )
    facts.prepare(ctx, family_datasets(ctx))
    ctx.widen_ahead(metrics_services.LAST_READS[c] for c in codes if c in metrics_services.LAST_READS)
    return {code: {(g, p.first_day) for g, p in kpi_rows(ctx, registry()[code])[1]} for code in codes}


@pytest.mark.parametrize("learned", [True, False], ids=["reads-learned", "reads-unknown"])
def test_an_old_change_recomputes_that_period_only_for_the_kpis_whose_data_it_changes(
    company, monkeypatch, learned
):
    snapshots_rebuild_all()
    snapshots_recompute_recent()  # the current periods' changes are taken in
    if not learned:
        forget_reads(monkeypatch)
    won = Deal.objects.get(pk=company["won_earlier"].pk)
    week = recent_periods("week", won.closed_at, 0)[0]  # 20 days ago: a recent week, never the current one
    this_week = recent_periods("week", timezone.now(), 0)[0]
    services.deal_move_stage(deal=won, stage=stage("open", 20), actor=won.owner)  # reopened
    kpis = (
        "win_rate",
        "revenue_won",
        "clv",
        "pipeline_velocity",
        "frt_median",
        "tickets_created",
        "nps_relationship",
    )
    periods = answered(*kpis)
    # The deals closed in that week changed: the KPIs read from them (alone or with other data) again.
    assert all(("week", week.first_day) in periods[k] for k in kpis[:4])
    # Its tickets and answers did not: their KPIs stand as computed; the current week is recomputed.
    assert all(("week", week.first_day) not in periods[k] for k in kpis[4:])
    assert all(("week", this_week.first_day) in periods[k] for k in kpis)
    # With the hourly run's medians of quarters and years, the same numbers a full rebuild gives.
    snapshots_recompute_recent()
    snapshots_recompute_long_statistics()
    incremental = recent_table()
    snapshots_rebuild_all()
    assert recent_table() == incremental


def test_recent_run_without_facts_rebuilds_everything(company):
    run = snapshots_recompute_recent()
    assert run.kind == SnapshotRun.Kind.FULL and run.status == SnapshotRun.Status.OK
    assert KpiFactState.objects.filter(dataset="closed_deals").exists()
    # A changed definition (here: a stored signature that no longer matches) also rebuilds.
    KpiFactState.objects.filter(dataset="closed_deals").update(signature="old")
    assert snapshots_recompute_recent().kind == SnapshotRun.Kind.FULL
    assert snapshots_recompute_recent().kind == SnapshotRun.Kind.RECENT


def test_team_change_recomputes_every_recent_period(company):
    snapshots_rebuild_all()
    r1, _r2 = company["reps"]
    new_team = make_team()
    type(r1).objects.filter(pk=r1.pk).update(team=new_team)
    snapshots_recompute_recent()
    snapshots_recompute_long_statistics()
    team_rows = recent_table()
    assert any(row[4:6] == ("team", str(new_team.pk)) for row in team_rows)
    snapshots_rebuild_all()
    assert recent_table() == team_rows


def test_current_pipeline_takes_amount_edits_at_once(company):
    snapshots_rebuild_all()
    deal = Deal.objects.get(pk=company["open_deal"].pk)
    services.deal_update(deal=deal, actor=deal.owner, data={"amount": Decimal(5000)}, version=deal.version)
    run = snapshots_recompute_recent()
    # The run notes where its time went: the changed day's facts rewritten, the open deals read.
    assert any(t.get("changed_days_ms", -1) >= 0 for t in run.datasets.values())
    assert run.datasets["open_pipeline_now"]["rows"] >= 1
    current = recent_periods("month", timezone.now(), 0)[0]
    pipeline = KpiSnapshot.objects.get(
        kpi="pipeline_value", granularity="month", scope="company", period_start=current.start
    )
    assert pipeline.value == Decimal(5700)
    # The running month's pipeline still carries the pipeline at the same day of the month before.
    assert pipeline.extra["compared"]["from"] == current.previous().first_day.isoformat()


@pytest.mark.django_db(transaction=True)
def test_full_rebuild_scanning_on_a_second_connection_gives_the_same_numbers(settings, no_auto_assign):
    """The records are committed here, so the second connection sees them as the first one does."""
    seed_defaults()  # an earlier transactional test may have flushed the migrations' pipeline stages
    now = timezone.now()
    rep = make_user(team=make_team())
    customer = make_customer(rep, at=now - timedelta(days=90))
    make_closed_deal(customer, created=now - timedelta(days=40), closed=now - timedelta(days=9))
    make_closed_deal(customer, created=now - timedelta(days=30), closed=now - timedelta(days=2), won=False)
    make_ticket(customer, at=now - timedelta(days=3), assignee=make_agent())
    make_usage_event(rep, now - timedelta(days=1))
    settings.KPI_PREFETCH_SCANS = False
    snapshots_rebuild_all()
    alone = recent_table(), facts_table()
    settings.KPI_PREFETCH_SCANS = True
    run = snapshots_rebuild_all()
    assert run.status == SnapshotRun.Status.OK
    assert (recent_table(), facts_table()) == alone
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'kpi_prefetch_%%'")
        assert cursor.fetchone()[0] == 0


def test_every_family_declares_the_datasets_its_kpis_read(company):
    """The incremental run prepares, and a full one releases, the datasets the families declare."""
    ctx = Context(
        Run(periods={g: recent_periods(g, timezone.now(), 3) for g in GRANULARITIES}, now=timezone.now())
    )
    for kpi in registry().values():
        kpi_rows(ctx, kpi)
        declared = {ds.name for ds in family_datasets(ctx, [kpi.family])}
        assert ctx.reads <= declared, f"{kpi.code} reads {sorted(ctx.reads - declared)} undeclared"


def test_a_rebuild_releases_each_dataset_after_the_last_kpi_that_reads_it(company, monkeypatch):
    snapshots_rebuild_all()  # learns which datasets each KPI reads; the cache shares it
    monkeypatch.setattr(metrics_services, "LAST_READS", {})  # a new worker process: recalled from the cache
    kept: dict[str, set[str]] = {}
    computed: list[str] = []
    release = Context.release

    def recording(self, keep):
        kept[computed[-1]] = set(keep)
        return release(self, keep)

    monkeypatch.setattr(Context, "release", recording)
    snapshots_rebuild_all(progress=computed.append)
    # The funnel's stages are read by the funnel's KPI alone: held until it is computed, not to the end
    # of the sales KPIs; the closed deals are still read by later ones.
    before = computed[computed.index("funnel_conversion") - 1]
    assert "funnel" in kept[before]
    assert "funnel" not in kept["funnel_conversion"]
    assert "closed_deals" in kept["funnel_conversion"]
    # Without what the runs before learned, a family's declared datasets are held to its end.
    forget_reads(monkeypatch)
    kept.clear()
    snapshots_rebuild_all(progress=computed.append)
    assert "funnel" in kept["funnel_conversion"]
