"""Campaigns and attribution against hand-worked values (KPIS.md §10.11), in a reporting zone fourteen hours
ahead of UTC (a local day starts at 10:00 the day before in UTC).

The history (all times local, Pacific/Kiritimati), gross margin 60 %:

* campaigns: Fair (event, 1–31 March, 3 100: 100 a day), Webinar (16 March – 14 April, 600: 20 a day, so
  March holds 320 and April 280), Ads (March, free), Banner (1–10 March, 1 000, brings one lead who never
  buys: it loses money);
* c1 comes from the Fair (2 March), the Webinar touches it on 20 March, its deal is created on 25 March (so
  the deal's last touch is the Webinar) and won on 28 March for 5 000: first touch gives the Fair the
  customer and the revenue, last touch the Webinar;
* c2 comes from the Fair (5 March); its deal (last touch: the Fair) is won at 00:30 on 1 April for 2 000 —
  still 31 March in UTC: it counts in April;
* c3 signs up through the Webinar (20 March) and never buys; c4 comes from the Banner (3 March), never buys;
* c5 comes from Ads (4 March) and buys on 15 March for 1 000; c6 has no campaign and buys too (no campaign
  counts it).
"""

import json
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from crm import services
from crm.campaigns.services import campaign_update, customer_touch_add
from crm.data import merge
from crm.models import Customer, Deal
from metrics.campaigns.report import LOSS
from metrics.kpis import facts, get_kpi
from metrics.models import KpiSnapshot, Scope
from metrics.periods import GRANULARITIES, Period, recent_periods
from metrics.services import snapshots_rebuild_all, snapshots_recompute, snapshots_recompute_recent
from tests.factories import make_campaign, make_closed_deal, make_customer, make_manager, make_user
from tests.metrics.kit import compute

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)
NOW = datetime(2026, 6, 15, 12, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def _far_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE)


@pytest.fixture
def history():
    manager, rep = make_manager(), make_user()
    fair = make_campaign(name="Fair", channel="event", start=MARCH, end=date(2026, 3, 31), cost=3100)
    webinar = make_campaign(
        name="Webinar", channel="website", start=date(2026, 3, 16), end=date(2026, 4, 14), cost=600
    )
    ads = make_campaign(name="Ads", start=MARCH, end=date(2026, 3, 31), cost=0)
    banner = make_campaign(name="Banner", start=MARCH, end=date(2026, 3, 10), cost=1000)
    c1 = make_customer(rep, status="lead", at=at(3, 2), campaign=fair)
    customer_touch_add(customer=c1, campaign=webinar, actor=manager, at=at(3, 20))
    d1 = make_closed_deal(c1, created=at(3, 25), closed=at(3, 28), amount=Decimal(5000))
    c2 = make_customer(rep, status="lead", at=at(3, 5), campaign=fair)
    d2 = make_closed_deal(c2, created=at(3, 6), closed=at(4, 1, 0, 30), amount=Decimal(2000))
    make_customer(rep, status="lead", at=at(3, 20), campaign=webinar)
    make_customer(rep, status="lead", at=at(3, 3), campaign=banner)
    c5 = make_customer(rep, status="lead", at=at(3, 4), campaign=ads)
    make_closed_deal(c5, created=at(3, 4), closed=at(3, 15), amount=Decimal(1000))
    c6 = make_customer(rep, status="lead", at=at(3, 12))
    make_closed_deal(c6, created=at(3, 12), closed=at(3, 14), amount=Decimal(9000))
    return {"fair": fair, "webinar": webinar, "ads": ads, "banner": banner, "d1": d1, "d2": d2}


def figures(code: str, first_day: date = MARCH, granularity: str = "month") -> dict[str, Decimal | None]:
    """The KPI's values by campaign id ("" for the company), rounded as snapshots store them."""
    rows = compute(code, granularity=granularity, first_day=first_day, now=NOW)
    return {
        scope_id: None if r.value is None else Decimal(r.value).quantize(Decimal("0.000001"))
        for (scope, scope_id), r in rows.items()
        if scope in (Scope.COMPANY, Scope.CAMPAIGN)
    }


def of(history, values: dict[str, Decimal | None]) -> dict[str, Decimal | None]:
    """``values`` keyed by campaign name (and "company")."""
    names = {str(c.pk): name for name, c in history.items() if name in ("fair", "webinar", "ads", "banner")}
    return {names.get(key, "company"): value for key, value in values.items()}


def d(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.000001"))


def test_the_deal_records_the_campaign_that_touched_its_customer_last(history):
    assert Deal.objects.get(pk=history["d1"].pk).campaign == history["webinar"]
    assert Deal.objects.get(pk=history["d2"].pk).campaign == history["fair"]


def test_cost_is_spread_over_the_days_a_campaign_runs(history):
    march = of(history, figures("campaign_cost"))
    assert march == {
        "fair": d("3100"), "webinar": d("320"), "ads": d("0"), "banner": d("1000"), "company": d("4420"),
    }  # fmt: skip
    assert of(history, figures("campaign_cost", APRIL)) == {"webinar": d("280"), "company": d("280")}
    # Months, quarters and years only: a week holds too little of a campaign.
    assert figures("campaign_cost", date(2026, 3, 16), "week") == {}
    quarter = of(history, figures("campaign_cost", date(2026, 1, 1), "quarter"))
    assert quarter["company"] == d("4420")


def test_leads_and_cost_per_lead_under_both_models(history):
    assert of(history, figures("campaign_leads_first_touch")) == {
        "fair": 2, "webinar": 1, "ads": 1, "banner": 1, "company": 5,
    }  # fmt: skip
    # Last touch: the Webinar also took c1 over on 20 March.
    assert of(history, figures("campaign_leads_last_touch")) == {
        "fair": 2, "webinar": 2, "ads": 1, "banner": 1, "company": 6,
    }  # fmt: skip
    assert of(history, figures("campaign_cpl_first_touch")) == {
        "fair": d("1550"), "webinar": d("320"), "ads": d("0"), "banner": d("1000"), "company": d("884"),
    }  # fmt: skip
    assert of(history, figures("campaign_cpl_last_touch")) == {
        "fair": d("1550"), "webinar": d("160"), "ads": d("0"), "banner": d("1000"),
        "company": d("736.666667"),
    }  # fmt: skip


def test_customers_and_cac_differ_between_the_models(history):
    # c1 became a customer on 28 March: from the Fair (first touch), touched last by the Webinar.
    assert of(history, figures("campaign_customers_first_touch")) == {
        "fair": 1, "webinar": 0, "ads": 1, "banner": 0, "company": 2,
    }  # fmt: skip
    assert of(history, figures("campaign_customers_last_touch")) == {
        "fair": 0, "webinar": 1, "ads": 1, "banner": 0, "company": 2,
    }  # fmt: skip
    # No customers → no CAC (not 0, not infinite); a free campaign's CAC is 0.
    assert of(history, figures("campaign_cac_first_touch")) == {
        "fair": d("3100"), "webinar": None, "ads": d("0"), "banner": None, "company": d("2210"),
    }  # fmt: skip
    assert of(history, figures("campaign_cac_last_touch")) == {
        "fair": None, "webinar": d("320"), "ads": d("0"), "banner": None, "company": d("2210"),
    }  # fmt: skip


def test_revenue_and_roi_under_both_models(history):
    assert of(history, figures("campaign_revenue_first_touch")) == {
        "fair": d("5000"), "webinar": d("0"), "ads": d("1000"), "banner": d("0"), "company": d("6000"),
    }  # fmt: skip
    assert of(history, figures("campaign_revenue_last_touch")) == {
        "fair": d("0"), "webinar": d("5000"), "ads": d("1000"), "banner": d("0"), "company": d("6000"),
    }  # fmt: skip
    # (5000 × 60 % − 3100) ÷ 3100 = −3.225806 %; the free Ads campaign has no ROI; the Banner loses it all.
    assert of(history, figures("campaign_roi_first_touch")) == {
        "fair": d("-3.225806"), "webinar": d("-100"), "ads": None, "banner": d("-100"),
        "company": d("-18.552036"),
    }  # fmt: skip
    # (5000 × 60 % − 320) ÷ 320 = 837.5 %.
    assert of(history, figures("campaign_roi_last_touch")) == {
        "fair": d("-100"), "webinar": d("837.5"), "ads": None, "banner": d("-100"),
        "company": d("-18.552036"),
    }  # fmt: skip
    roi = compute("campaign_roi_last_touch", first_day=MARCH, now=NOW)[
        (Scope.CAMPAIGN, str(history["webinar"].pk))
    ]
    assert (roi.numerator, roi.denominator) == (Decimal("2680"), Decimal("320"))
    assert roi.extra.revenue == 5000.0 and roi.extra.gross_margin_percent == 60.0


def test_a_deal_won_just_after_local_midnight_counts_in_the_local_month(history):
    # c2's deal: 00:30 on 1 April here, still 31 March in UTC.
    assert of(history, figures("campaign_customers_first_touch", APRIL)) == {
        "fair": 1,
        "webinar": 0,
        "company": 1,
    }
    assert of(history, figures("campaign_revenue_last_touch", APRIL)) == {
        "fair": d("2000"), "webinar": d("0"), "company": d("2000"),
    }  # fmt: skip
    # The Fair cost nothing in April: no ROI; the company's: (2000 × 60 % − 280) ÷ 280.
    april = of(history, figures("campaign_roi_first_touch", APRIL))
    assert april == {"fair": None, "webinar": d("-100"), "company": d("328.571429")}


# Merges (KPIS.md §10.13), drill-downs, the report and the KPI pages
# ---------------------------------------------------------------------------------------------------------


def test_a_merge_restates_first_touch_and_keeps_the_deals_last_touch(history):
    # c1 (the Fair's, won 5 000 through the Webinar) absorbs a duplicate the Banner brought, which had won
    # 1 000 on 9 March (its last touch: the Banner).
    manager = make_manager()
    c1 = Customer.objects.get(deals=history["d1"])
    duplicate = make_customer(c1.owner, status="lead", at=at(3, 6), campaign=history["banner"])
    make_closed_deal(duplicate, created=at(3, 7), closed=at(3, 9), amount=Decimal(1000))
    assert of(history, figures("campaign_revenue_first_touch"))["banner"] == d("1000")
    merge.customer_merge(survivor=c1, merged=duplicate, actor=manager)
    # First touch: one customer, from the Fair: its lead and the deal now count there, the Banner's are gone.
    assert of(history, figures("campaign_leads_first_touch"))["banner"] == 1  # c4 only
    first = of(history, figures("campaign_revenue_first_touch"))
    assert (first["fair"], first["banner"]) == (d("6000"), d("0"))
    # Last touch: the deal keeps the campaign that touched it last; the touches moved with it.
    last = of(history, figures("campaign_revenue_last_touch"))
    assert (last["banner"], last["webinar"]) == (d("1000"), d("5000"))
    assert of(history, figures("campaign_leads_last_touch"))["banner"] == 2


def test_a_reps_drilldown_never_shows_a_colleagues_customers(history):
    rep, other = make_user(), make_user()
    mine = make_customer(rep, status="lead", at=at(3, 8), campaign=history["fair"])
    theirs = make_customer(other, status="lead", at=at(3, 9), campaign=history["fair"])
    march, fair = Period("month", MARCH), str(history["fair"].pk)
    for code in ("campaign_leads_first_touch", "campaign_leads_last_touch"):
        part = get_kpi(code).drilldown.parts["value"]
        seen = part.records(rep, march, Scope.CAMPAIGN, fair)
        customers = {getattr(r, "customer", r) for r in seen}
        assert customers == {mine}, code
        assert theirs not in {getattr(r, "customer", r) for r in part.records(rep, march, Scope.COMPANY, "")}
    cost = get_kpi("campaign_cost").drilldown.parts["value"]
    assert not cost.records(rep, march, Scope.CAMPAIGN, fair).exists()  # costs are the managers'
    assert list(cost.records(make_manager(), march, Scope.CAMPAIGN, fair)) == [history["fair"]]


@pytest.fixture
def computed(history):
    snapshots_recompute(
        start=date(2026, 1, 1), end=date(2026, 7, 1), granularities=["month", "quarter"], now=NOW
    )
    return history


def test_the_report_shows_both_models_side_by_side_and_the_loss_in_red(
    client, computed, django_assert_max_num_queries
):
    client.force_login(make_manager())
    with django_assert_max_num_queries(9):
        response = client.get(reverse("metrics:campaigns"), {"granularity": "month", "period": "2026-03-01"})
    body = response.content.decode()
    assert response.status_code == 200
    for name in ("Fair", "Webinar", "Ads", "Banner"):
        assert f">{name}</a>" in body
    assert "First touch" in body and "Last touch" in body and "Two ways to give a campaign credit" in body
    assert body.count('class="kpi-change bad"') >= 4  # the Banner loses everything under both models
    chart = json.loads(
        re.search(r'id="chart-campaign-roi" type="application/json">(.*?)</script>', body).group(1)
    )
    first, last = chart["data"]
    banner = first["x"].index("Banner")
    assert first["y"][banner] == -100.0 and last["y"][banner] == -100.0
    webinar = last["x"].index("Webinar")
    assert last["y"][webinar] == 837.5
    # Losing money is drawn in red, under either model; paying in the models' own colours.
    assert (first["marker"]["color"][banner], last["marker"]["color"][banner]) == LOSS
    assert last["marker"]["color"][webinar] not in LOSS


def test_the_report_reads_the_same_number_of_queries_with_more_campaigns(
    client, computed, django_assert_max_num_queries
):
    for n in range(8):
        make_campaign(name=f"Extra {n}", start=MARCH, end=date(2026, 3, 31), cost=100)
    snapshots_recompute(start=MARCH, end=APRIL, granularities=["month"], now=NOW)
    client.force_login(make_manager())
    with django_assert_max_num_queries(9):
        response = client.get(reverse("metrics:campaigns"), {"granularity": "month", "period": "2026-03-01"})
    body = response.content.decode()
    assert all(f">Extra {n}</a>" in body for n in range(8))  # a linked row each


def test_a_kpi_page_of_one_campaign_lists_the_records_behind_it(client, computed):
    client.force_login(make_manager())
    url = reverse("metrics:kpi_detail", args=["campaign_revenue_last_touch"])
    query = {"granularity": "month", "period": "2026-03-01", "campaign": computed["webinar"].pk}
    body = client.get(url, query).content.decode()
    assert "Webinar" in body and "5,000" in body
    assert computed["d1"].title in body and computed["d2"].title not in body
    # The KPI of another family has no campaign scope: that page does not exist.
    assert client.get(reverse("metrics:kpi_detail", args=["revenue_won"]), query).status_code == 404


def _campaign_rows() -> list[tuple]:
    """The campaign KPIs' rows of the periods the five-minute run recomputes (the current one and three
    before: older ones take an edit at the nightly rebuild, KPIS.md G6)."""
    starts = {(g, p.start) for g in GRANULARITIES for p in recent_periods(g, timezone.now(), 3)}
    fields = ["kpi", "granularity", "period_start", "scope", "scope_id", "value", "numerator", "denominator"]
    rows = KpiSnapshot.objects.filter(kpi__startswith="campaign_").order_by(*fields[:5])
    return [row for row in rows.values_list(*fields) if (row[1], row[2]) in starts]


def test_the_five_minute_run_leaves_what_a_full_rebuild_leaves(monkeypatch):
    """Ordinary work after a run (a new lead from a campaign, a touch, a deal won, a customer's campaign
    corrected, a campaign's cost changed): the incremental run gives the rebuild's numbers."""
    monkeypatch.setattr(facts, "WATERMARK_MARGIN", timedelta(0))
    manager, rep = make_manager(), make_user()
    now = timezone.now()
    today = timezone.localdate()
    fair = make_campaign(name="Fair", start=today - timedelta(days=70), end=today, cost=7100, actor=manager)
    webinar = make_campaign(
        name="Webinar", start=today - timedelta(days=20), end=today, cost=210, actor=manager
    )
    old = make_customer(rep, at=now - timedelta(days=60), campaign=fair)
    make_closed_deal(
        old, created=now - timedelta(days=50), closed=now - timedelta(days=40), amount=Decimal(900)
    )
    lead = make_customer(rep, status="lead", at=now - timedelta(days=30), campaign=fair)
    snapshots_rebuild_all()

    make_customer(rep, status="lead", campaign=webinar)
    customer_touch_add(customer=lead, campaign=webinar, actor=manager)
    make_closed_deal(lead, amount=Decimal(2500))
    services.customer_update(customer=old, actor=manager, data={"campaign": webinar})  # corrected
    campaign_update(campaign=fair, actor=manager, data={"cost": Decimal(7500)}, version=None)
    assert snapshots_recompute_recent().kind == "recent"
    incremental = _campaign_rows()
    assert any(row[0] == "campaign_revenue_first_touch" and row[5] for row in incremental)

    snapshots_rebuild_all()
    assert _campaign_rows() == incremental
