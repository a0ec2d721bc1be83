"""Time in stage (KPIS.md §10.7): median and p90 days per stage from the stage history, worked out by hand
in a reporting zone fourteen hours ahead of UTC; a deal still in a stage counted at its time so far in the
running period; the stays behind each stage for those who may see them; a task of its own computes it."""

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from crm import services
from metrics.kpis.base import Context, Run
from metrics.kpis.velocity import TIME_IN_STAGE, open_stages, stage_stays
from metrics.models import KpiSnapshot, Scope, SnapshotRun
from metrics.periods import Period
from metrics.services import snapshots_rebuild_all, snapshots_recompute, snapshots_recompute_recent
from metrics.services.velocity import time_in_stage_recompute
from metrics.tasks import recompute_time_in_stage
from metrics.velocity.pages import StageRow, time_in_stage_chart
from tests import sweep_kit
from tests.factories import make_agent, make_customer, make_deal, make_manager, make_team, make_user, stage
from tests.metrics.kit import compute

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")  # UTC+14: local midnight is 10:00 the day before in UTC
MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)
JUNE = datetime(2026, 6, 15, 12, tzinfo=ZONE)


def kt(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def _reporting_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def _walk(customer, title: str, moves: list[tuple[str, datetime]]):
    """A deal created in the first stage at the first move's time, then moved along ``moves``."""
    (_first, created), *rest = moves
    deal = make_deal(customer, title=title, at=created)
    for name, at in rest:
        target = STAGES[name]()
        reason = "Price too high" if name == "lost" else ""
        deal = services.deal_move_stage(
            deal=deal, stage=target, actor=customer.owner, at=at, lost_reason=reason
        )
    return deal


STAGES = {
    "lead": lambda: stage("open", 10),
    "qualified": lambda: stage("open", 20),
    "proposal": lambda: stage("open", 30),
    "won": lambda: stage("won"),
    "lost": lambda: stage("lost"),
}


@pytest.fixture
def history():
    """Rep A (team North): D1 through every stage to won, D2 straight from the first stage to won, D3 back
    and forth between Qualified and Proposal, then lost. Rep B (team South): D4, still in Qualified."""
    rep_a, rep_b = make_user(team=make_team(name="North")), make_user(team=make_team(name="South"))
    a, b = make_customer(rep_a, at=kt(1, 5)), make_customer(rep_b, at=kt(1, 5))
    deals = {
        "D1": _walk(a, "D1", [("lead", kt(3, 1)), ("qualified", kt(3, 3)), ("proposal", kt(3, 13)),
                               ("won", kt(3, 20))]),
        "D2": _walk(a, "D2", [("lead", kt(3, 2)), ("won", kt(3, 6))]),
        "D3": _walk(a, "D3", [("lead", kt(3, 1)), ("qualified", kt(3, 2)), ("proposal", kt(3, 5)),
                               ("qualified", kt(3, 6)), ("proposal", kt(3, 10)), ("lost", kt(3, 30))]),
        "D4": _walk(b, "D4", [("lead", kt(3, 10)), ("qualified", kt(3, 11))]),
    }  # fmt: skip
    return {"a": rep_a, "b": rep_b, "deals": deals}


def _rows(first_day: date = MARCH, now: datetime = JUNE, also: tuple[date, ...] = ()):
    return compute(TIME_IN_STAGE.code, first_day=first_day, now=now, also=also)


def _stages(row) -> dict[str, dict]:
    names = {s.pk: s.name for s in open_stages()}
    return {names[s["stage"]]: s for s in row.extra.stages}


def test_median_and_p90_per_stage_worked_out_by_hand(history):
    row = _rows()[(Scope.COMPANY, "")]
    # Lead in: D1 2, D2 4 (then straight to won), D3 1, D4 1 day. Qualified: D1 10, D3 3 and, back in it, 4.
    # Proposal: D1 7, D3 1 and 20 (then lost). percentile_cont: p90 of [1, 1, 2, 4] = 2 + 0.7 × 2.
    by_stage = _stages(row)
    assert [(s["n"], s["median"], s["p90"]) for s in by_stage.values()] == [
        (4, 1.5, 3.4),
        (3, 4.0, 8.8),
        (3, 7.0, 17.4),
    ]
    assert list(by_stage) == ["Lead in", "Qualified", "Proposal"]  # no stay in Negotiation
    # Every stay: [1, 1, 1, 2, 3, 4, 4, 7, 10, 20].
    assert (row.value, row.sample_size, row.extra.p90) == (Decimal("3.5"), 10, 11.0)
    # A past period counts the stays that ended in it only.
    assert row.extra.n_open is None and "n_open" not in row.extra.stages[0]


def test_each_scope_counts_its_own_deals(history):
    rows = _rows()
    rep_a, rep_b = history["a"], history["b"]
    a = rows[(Scope.USER, str(rep_a.pk))]
    assert (a.value, a.sample_size) == (Decimal(4), 9)  # [1, 1, 2, 3, 4, 4, 7, 10, 20]
    assert _stages(a)["Lead in"]["median"] == 2.0 and _stages(a)["Lead in"]["p90"] == 3.6
    b = rows[(Scope.USER, str(rep_b.pk))]
    assert (b.value, b.sample_size, list(_stages(b))) == (Decimal(1), 1, ["Lead in"])
    assert rows[(Scope.TEAM, str(rep_b.team_id))].value == Decimal(1)


def test_a_deal_still_in_a_stage_counts_at_its_time_so_far_while_the_period_runs(history):
    row = _rows(now=kt(3, 31, 12))[(Scope.COMPANY, "")]
    qualified = _stages(row)["Qualified"]
    # D4 has been in Qualified since 11 March 00:00: 20.5 days. [3, 4, 10, 20.5]: p90 = 10 + 0.7 × 10.5.
    assert (qualified["n"], qualified["median"]) == (3, 4.0)  # the stays that ended, as before
    assert (qualified["n_open"], qualified["median_open"], qualified["p90_open"], qualified["still_in"]) == (
        4,
        7.0,
        17.35,
        1,
    )
    assert _stages(row)["Lead in"]["still_in"] == 0
    assert (row.extra.n_open, row.extra.median_open, row.extra.p90_open, row.extra.still_in) == (
        11,
        4.0,
        20.0,
        1,
    )
    assert row.value == Decimal("3.5")  # the headline stays the stays that ended


def test_a_stay_ending_at_local_midnight_belongs_to_the_new_month(history):
    a = make_customer(history["a"], at=kt(1, 5))
    _walk(a, "D5", [("lead", kt(3, 25)), ("won", kt(4, 1))])  # 10:00 UTC on 31 March
    march = _stages(_rows()[(Scope.COMPANY, "")])
    april = _stages(_rows(APRIL)[(Scope.COMPANY, "")])
    assert march["Lead in"]["n"] == 4
    assert (april["Lead in"]["n"], april["Lead in"]["median"]) == (1, 7.0)


def test_a_running_month_is_compared_with_the_same_days_of_the_one_before(history):
    row = _rows(APRIL, now=kt(4, 15, 12), also=(MARCH,))[(Scope.COMPANY, "")]
    # April: no stay ended yet; D4 in Qualified for 35.5 days. 1–15 March: [1, 1, 1, 2, 3, 4, 4, 10].
    assert (row.value, row.sample_size, row.extra.median_open, row.extra.still_in) == (None, 0, 35.5, 1)
    compared = row.extra.compared
    assert (compared["value"], compared["n"], compared["until"]) == (2.5, 8, "2026-03-16")


def test_a_scan_of_years_gives_what_a_scan_of_months_gives(history):
    kpis = [TIME_IN_STAGE.code]
    snapshots_recompute(
        start=date(2026, 3, 1), end=date(2026, 4, 1), granularities=["month"], kpis=kpis, now=JUNE
    )
    months = dict(KpiSnapshot.objects.filter(kpi=TIME_IN_STAGE.code).values_list("scope_id", "extra"))
    # More than FILTER_DAYS of history: the whole stage history is read, not the deals moved in the range.
    snapshots_recompute(
        start=date(2024, 1, 1), end=date(2026, 4, 1), granularities=["month"], kpis=kpis, now=JUNE
    )
    march = KpiSnapshot.objects.filter(kpi=TIME_IN_STAGE.code, period_start=Period("month", MARCH).start)
    assert dict(march.values_list("scope_id", "extra")) == months


def test_the_stays_of_a_stage_longest_first_and_only_those_one_may_see(history):
    qualified, period = stage("open", 20), Period("month", MARCH)
    deals = history["deals"]

    def stays(user, now=JUNE, scope=Scope.COMPANY, scope_id=""):
        found = stage_stays(
            user=user, period=period, scope=scope, scope_id=scope_id, stage=qualified, now=now, limit=100
        )
        return [(s.deal_id, s.days, s.left is None) for s in found]

    manager = make_manager()
    d1, d3, d4 = deals["D1"].pk, deals["D3"].pk, deals["D4"].pk
    assert stays(manager) == [(d1, 10.0, False), (d3, 4.0, False), (d3, 3.0, False)]  # D3 entered it twice
    assert stays(manager, now=kt(3, 31, 12))[0] == (d4, 20.5, True)
    # Rep A sees their own stays, also when asking for the company or for rep B.
    assert {s[0] for s in stays(history["a"], now=kt(3, 31, 12))} == {d1, d3}
    assert stays(history["a"], scope=Scope.USER, scope_id=str(history["b"].pk), now=kt(3, 31, 12)) == []
    assert stays(history["b"], now=kt(3, 31, 12)) == [(d4, 20.5, True)]
    assert stays(make_agent()) == []


def test_the_snapshot_runs_leave_it_to_its_own_task(history):
    snapshots_rebuild_all(now=JUNE)
    snapshots_recompute_recent(now=JUNE)
    assert not KpiSnapshot.objects.filter(kpi=TIME_IN_STAGE.code).exists()
    assert KpiSnapshot.objects.filter(kpi="pipeline_velocity").exists()

    def stored() -> list:
        return list(
            KpiSnapshot.objects.filter(kpi=TIME_IN_STAGE.code)
            .order_by("granularity", "period_start", "scope", "scope_id")
            .values_list("granularity", "period_start", "scope", "scope_id", "value", "sample_size", "extra")
        )

    run = time_in_stage_recompute(full=True, now=JUNE)
    rows = stored()
    assert run.status == SnapshotRun.Status.OK and run.rows == len(rows) > 0
    time_in_stage_recompute(full=True, now=JUNE)  # idempotent: the same rows, upserted
    assert stored() == rows
    recent = time_in_stage_recompute(now=JUNE)
    assert recent.granularities == "week,month" and recent.kpis == [TIME_IN_STAGE.code]
    assert stored() == rows
    # The task, as beat runs it (now is now: only the running periods' time so far moves).
    assert SnapshotRun.objects.get(pk=recompute_time_in_stage(full=True)).status == SnapshotRun.Status.OK
    assert SnapshotRun.objects.get(pk=recompute_time_in_stage()).status == SnapshotRun.Status.OK


def test_the_chart_draws_the_median_with_a_whisker_to_the_p90(history):
    row = _rows(now=kt(3, 31, 12))[(Scope.COMPANY, "")]
    detail = TIME_IN_STAGE.details_of(row.extra.to_json())
    by_stage = {s.stage: s for s in detail.per_stage}
    rows = [StageRow(s, by_stage.get(s.pk)) for s in open_stages()]
    spec = time_in_stage_chart(rows, running=True)
    ended, running = spec["data"]
    assert ended["x"] == ["Lead in", "Qualified", "Proposal", "Negotiation"]
    assert ended["y"] == [1.5, 4.0, 7.0, None]
    assert ended["error_y"]["array"] == [1.9, 4.8, 10.4, None]
    assert running["y"][1] == 7.0 and running["error_y"]["array"][1] == 10.35


# The page and its download
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def computed(history):
    time_in_stage_recompute(full=True, now=JUNE)
    return history


def _page(client, headers=None, **params):
    url = reverse("metrics:kpi_detail", args=[TIME_IN_STAGE.code])
    return client.get(url, {"period": "2026-03-01", **params}, headers=headers)


def test_the_page_shows_each_stage_and_the_slowest_stages_deals(
    client, computed, django_assert_max_num_queries
):
    client.force_login(make_manager())
    with django_assert_max_num_queries(20):
        response = _page(client)
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-plotly="chart-time-in-stage"' in body and "Days in each stage" in body
    assert "1.5 d" in body and "17.4 d" in body
    # Proposal has the highest median: its stays first, D3's 20 days at the top.
    assert body.index(">D3<") < body.index(">D1<")
    assert "20.0" in body
    assert "Rotting deals" in body


def test_a_rep_sees_their_own_stays_in_page_partial_and_download(
    client, computed, django_assert_max_num_queries
):
    rep_a, rep_b = computed["a"], computed["b"]
    client.force_login(rep_a)
    qualified = stage("open", 20)
    with django_assert_max_num_queries(20):
        response = _page(client, stage=qualified.pk, rep=rep_b.pk, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert "<html" not in body and 'id="drilldown"' in body
    assert ">D1<" in body and ">D3<" in body and ">D4<" not in body
    export = client.get(reverse("metrics:stays_export"), {"period": "2026-03-01", "stage": qualified.pk})
    lines = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert [line[0] for line in lines[1:]] == ["D1", "D3", "D3"] and lines[0][-1] == "Days in stage"
    assert [line[-1] for line in lines[1:]] == ["10.0", "4.0", "3.0"]
    client.force_login(rep_b)
    export = client.get(reverse("metrics:stays_export"), {"period": "2026-03-01", "stage": qualified.pk})
    assert len(list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))) == 1


def test_the_download_is_for_those_who_see_deals_and_an_open_stage_only(client, computed):
    url = reverse("metrics:stays_export")
    client.force_login(make_agent())
    assert client.get(url, {"stage": stage("open", 20).pk}).status_code == 404
    client.force_login(make_manager())
    for bad in ("", "abc", "\x00", "9" * 40, str(stage("won").pk), "-1"):
        assert client.get(url, {"stage": bad}).status_code == 404
    response = client.get(url, {"stage": stage("open", 20).pk, "format": "xlsx"})
    assert response.status_code == 200 and response["Content-Disposition"].endswith('.xlsx"')


@pytest.mark.parametrize("name", ["stage", "page", "period", "granularity", "count", "rep", "team", "part"])
def test_hostile_query_parameters_never_fail_the_page_or_the_download(client, computed, name):
    client.force_login(make_manager())
    for url in (
        reverse("metrics:kpi_detail", args=[TIME_IN_STAGE.code]),
        reverse("metrics:kpi_detail", args=["pipeline_velocity"]),
        reverse("metrics:stays_export"),
    ):
        for value in sweep_kit.HOSTILE.values():
            query = sweep_kit.encode_pairs([("stage", str(stage("open", 20).pk)), (name, value)])
            response = client.get(f"{url}?{query}")
            assert response.status_code in (200, 404), (url, name, value)
            if response.streaming:
                b"".join(response.streaming_content)


def test_context_of_a_run_without_its_granularities_gives_no_rows(history):
    ctx = Context(Run(periods={}, now=JUNE))
    assert list(TIME_IN_STAGE.compute(ctx, TIME_IN_STAGE)) == []
