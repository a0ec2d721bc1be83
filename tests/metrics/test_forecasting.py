"""Frozen forecasts, their accuracy and bias, and the Brier score (KPIS.md §10.6), worked by hand in a
reporting time zone fourteen hours ahead of UTC (Pacific/Kiritimati).

The company (all times local): team North has reps Anna and Bert; Cleo has no team. Stages of the default
pipeline: Qualified 25 % (pipeline), Proposal 50 % (best case), Negotiation 75 % (commit).

Open on 1 June 2026, expected to close in June:
  a1  Anna  10 000  Proposal                          → 5 000 weighted, best case   — lost 22 June
  a2  Anna   4 000  Negotiation, override 90 %, commit → 3 600                     — lost 26 June
  b1  Bert   8 000  Qualified                          → 2 000, pipeline           — slips to July
  b3  Bert   6 000  Negotiation                        → 4 500, commit             — won 14 June
  c1  Cleo      —   Proposal                           → 0, best case              — still open
Won before: d0 Bert 3 000 won 20 May (Q2 so far). Won in June besides b3: b2 Bert 2 000 (created 5 June).

June, frozen 1 June 00:05: forecast 5 000 + 3 600 + 2 000 + 4 500 + 0 = 15 100 (Anna 8 600, Bert 6 500,
Cleo 0, North 15 100); commit 4 000 + 6 000 = 10 000, best case 10 000, pipeline 8 000.
Won in June: Bert 6 000 + 2 000 = 8 000; Anna 0; Cleo 0.
  company  accuracy 1 − |8 000 − 15 100| ÷ 8 000 = 11.25 %   bias (15 100 − 8 000) ÷ 8 000 = +88.75 %
  Bert     accuracy 1 − 1 500 ÷ 8 000 = 81.25 %              bias −18.75 %
  Anna, Cleo: nothing won → no value (NULL)
Q2, frozen late the same instant: won so far 3 000 (d0) + 15 100 = 18 100.
Brier (month items of closed deals): a1 (0.5 − 0)² = 0.25, a2 (0.9 − 0)² = 0.81, b3 (0.75 − 1)² = 0.0625
→ company 1.1225 ÷ 3 = 0.374167, Anna 1.06 ÷ 2 = 0.53, Bert 0.0625.
"""

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.forms.models import model_to_dict

from crm import services
from crm.forecasting.services import stage_probability_set
from crm.models import ForecastCategory, PipelineStage, StageProbabilityVersion
from metrics.forecasts.models import ForecastCalibration, FrozenForecast, FrozenForecastItem
from metrics.forecasts.selectors import brier_score
from metrics.forecasts.services import forecast_calibration_compute, forecasts_freeze, forecasts_reconstruct
from metrics.kpis import get_kpi
from metrics.kpis.base import Context, Run
from metrics.models import KpiSnapshot, Scope
from metrics.periods import Period, local_midnight
from metrics.services import kpi_rows, snapshots_recompute
from tests.factories import make_customer, make_deal, make_team, make_user, stage

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
ACCURACY, BIAS = "frozen_forecast_accuracy", "frozen_forecast_bias"


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def far_from_utc(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def st(name: str) -> PipelineStage:
    return PipelineStage.objects.get(pipeline__is_default=True, name=name)


def close(deal, *, won: bool, at: datetime):
    return services.deal_move_stage(
        deal=deal,
        stage=stage("won" if won else "lost"),
        actor=deal.owner,
        at=at,
        lost_reason="" if won else "Price",
    )


@pytest.fixture
def company():
    north = make_team(name="North")
    anna, bert = make_user(username="anna", team=north), make_user(username="bert", team=north)
    cleo = make_user(username="cleo")
    ca, cb, cc = make_customer(anna), make_customer(bert), make_customer(cleo)
    may = local(2026, 5, 10)

    def deal(customer, title, amount, stage_name, close_day, **fields):
        return make_deal(
            customer,
            title=title,
            amount=None if amount is None else Decimal(amount),
            at=may,
            stage=st(stage_name),
            expected_close_date=close_day,
            **fields,
        )

    deals = {
        "a1": deal(ca, "a1", "10000", "Proposal", date(2026, 6, 20)),
        "a2": deal(
            ca, "a2", "4000", "Negotiation", date(2026, 6, 25), probability=90, forecast_category="commit"
        ),
        "b1": deal(cb, "b1", "8000", "Qualified", date(2026, 6, 10)),
        "b3": deal(cb, "b3", "6000", "Negotiation", date(2026, 6, 15)),
        "c1": deal(cc, "c1", None, "Proposal", date(2026, 6, 30)),
        "d0": deal(cb, "d0", "3000", "Proposal", date(2026, 5, 25)),
    }
    deals["d0"] = close(deals["d0"], won=True, at=local(2026, 5, 20, 11))
    return {
        "anna": anna,
        "bert": bert,
        "cleo": cleo,
        "north": north,
        "deals": deals,
        "customers": (ca, cb, cc),
    }


FREEZE_AT = local(2026, 6, 1, 0, 5)
JUNE = Period("month", date(2026, 6, 1))
Q2 = Period("quarter", date(2026, 4, 1))


def june_happens(company):
    """What happens after the freeze: losses, wins, a slip, a new deal won, an edited amount."""
    d = company["deals"]
    bert = company["bert"]
    close(d["a1"], won=False, at=local(2026, 6, 22, 10))
    close(d["a2"], won=False, at=local(2026, 6, 26, 10))
    close(d["b3"], won=True, at=local(2026, 6, 14, 10))
    services.deal_update(
        deal=d["b1"], actor=bert, data={"expected_close_date": date(2026, 7, 10), "amount": Decimal("9000")},
        version=None,
    )  # fmt: skip
    b2 = make_deal(company["customers"][1], title="b2", amount=Decimal("2000"), at=local(2026, 6, 5, 9))
    close(b2, won=True, at=local(2026, 6, 12, 9))


def frozen(period: Period, scope: str = Scope.COMPANY, scope_id: object = "") -> FrozenForecast:
    return FrozenForecast.objects.get(
        granularity=period.granularity, period_start=period.start, scope=scope, scope_id=str(scope_id)
    )


def test_the_frozen_forecast_is_the_weighted_forecast_of_that_moment(company):
    written = forecasts_freeze(now=FREEZE_AT)
    assert {(f.granularity, f.period_start) for f in written} == {
        ("week", local(2026, 6, 1)),
        ("month", local(2026, 6, 1)),
        ("quarter", local(2026, 4, 1)),
    }
    june = frozen(JUNE)
    assert june.forecast == Decimal("15100") and june.won_to_date == 0 and june.deals == 5
    assert (june.commit, june.best_case, june.pipeline, june.omitted) == (10000, 10000, 8000, 0)
    assert (june.commit_forecast, june.best_case_forecast) == (10000, 20000)
    assert june.frozen_at == FREEZE_AT and june.is_late and not june.reconstructed
    assert frozen(JUNE, Scope.USER, company["anna"].pk).forecast == Decimal("8600")
    assert frozen(JUNE, Scope.USER, company["bert"].pk).forecast == Decimal("6500")
    assert frozen(JUNE, Scope.USER, company["cleo"].pk).forecast == 0
    assert frozen(JUNE, Scope.TEAM, company["north"].pk).forecast == Decimal("15100")
    # The quarter began on 1 April: frozen late, with what was won by then.
    q2 = frozen(Q2)
    assert (q2.won_to_date, q2.forecast, q2.won_deals) == (Decimal("3000"), Decimal("18100"), 1)
    # The week of 1 June has nothing expected in it, and still has its row.
    assert frozen(Period("week", date(2026, 6, 1))).forecast == 0
    # The items: what each deal carried.
    a2 = FrozenForecastItem.objects.get(
        granularity="month", period_start=JUNE.start, deal=company["deals"]["a2"]
    )
    assert (a2.probability, a2.category, a2.amount, a2.owner, a2.won) == (
        90, ForecastCategory.COMMIT, Decimal("4000.00"), company["anna"], False,
    )  # fmt: skip
    # Exactly what the running weighted forecast said at that moment (one definition, KPIS.md §4).
    for period, expected in ((JUNE, "15100"), (Q2, "18100")):
        ctx = Context(Run(periods={period.granularity: [period]}, now=FREEZE_AT))
        rows, _cover = kpi_rows(ctx, get_kpi("forecast_weighted"))
        company_row = next(r for r, _p in rows if r.scope == Scope.COMPANY)
        assert company_row.value == Decimal(expected)


def test_frozen_rows_never_change_when_deals_change_later(company):
    forecasts_freeze(now=FREEZE_AT)

    first = (
        set(FrozenForecast.objects.values_list("pk", flat=True)),
        set(FrozenForecastItem.objects.values_list("pk", flat=True)),
    )

    def stored():
        return (
            [model_to_dict(f) for f in FrozenForecast.objects.filter(pk__in=first[0]).order_by("pk")],
            [model_to_dict(i) for i in FrozenForecastItem.objects.filter(pk__in=first[1]).order_by("pk")],
        )

    before = stored()
    assert len(before[0]) == len(first[0]) > 5 and len(before[1]) == len(first[1]) > 5
    june_happens(company)
    # A stage's probability changes, and every later tick of the scheduler and a reconstruction run.
    stage_probability_set(
        stage_id=st("Proposal").pk, probability=30, expected=50, actor=make_user(role="manager"),
        at=local(2026, 6, 16),
    )  # fmt: skip
    forecasts_freeze(now=local(2026, 6, 16, 8))
    written = forecasts_reconstruct(since=local(2026, 4, 1), now=local(2026, 6, 16, 9))
    assert written  # April and May, and weeks before June, which had no forecast
    assert stored() == before


def test_accuracy_and_bias_by_hand_and_nothing_won_gives_no_value(company):
    forecasts_freeze(now=FREEZE_AT)
    june_happens(company)
    now = local(2026, 7, 15)
    snapshots_recompute(
        start=JUNE.start, end=JUNE.end, granularities=["month"], kpis=[ACCURACY, BIAS], now=now
    )

    def snap(code, scope=Scope.COMPANY, scope_id=""):
        return KpiSnapshot.objects.get(
            kpi=code, granularity="month", period_start=JUNE.start, scope=scope, scope_id=str(scope_id)
        )

    accuracy, bias = snap(ACCURACY), snap(BIAS)
    assert accuracy.value == Decimal("11.25") and bias.value == Decimal("88.75")
    assert (accuracy.numerator, accuracy.denominator, accuracy.sample_size) == (15100, 8000, 5)
    assert accuracy.extra["commit_forecast"] == 10000 and accuracy.extra["won"] == 8000
    bert = company["bert"].pk
    assert snap(ACCURACY, Scope.USER, bert).value == Decimal("81.25")
    assert snap(BIAS, Scope.USER, bert).value == Decimal("-18.75")
    assert snap(BIAS, Scope.TEAM, company["north"].pk).value == Decimal("88.75")
    for person in ("anna", "cleo"):  # nothing won: NULL, not 0 % or −100 %
        assert snap(ACCURACY, Scope.USER, company[person].pk).value is None
        assert snap(BIAS, Scope.USER, company[person].pk).value is None
    assert snap(ACCURACY, Scope.USER, company["anna"].pk).numerator == Decimal("8600")


def test_a_running_period_and_an_unfrozen_one_have_no_accuracy(company):
    forecasts_freeze(now=FREEZE_AT)
    june_happens(company)
    ctx = Context(Run(periods={"month": [JUNE, JUNE.previous()]}, now=local(2026, 6, 20)))
    rows, _cover = kpi_rows(ctx, get_kpi(ACCURACY))
    assert rows == []  # June runs; May was never frozen


def test_drilldown_gives_the_forecast_and_the_won_revenue(company):
    forecasts_freeze(now=FREEZE_AT)
    june_happens(company)
    kpi = get_kpi(ACCURACY)
    manager = make_user(role="manager")
    for scope, scope_id, forecast, won in (
        (Scope.COMPANY, "", "15100", "8000"),
        (Scope.USER, str(company["anna"].pk), "8600", "0"),
        (Scope.USER, str(company["bert"].pk), "6500", "8000"),
    ):
        numerator = kpi.drilldown.parts["numerator"]
        records = numerator.records(manager, JUNE, scope, scope_id)
        assert numerator.total(records, JUNE, scope, scope_id) == Decimal(forecast)
        denominator = kpi.drilldown.parts["denominator"]
        won_records = denominator.records(manager, JUNE, scope, scope_id)
        assert denominator.total(won_records, JUNE, scope, scope_id) == Decimal(won)
    titles = set(
        kpi.drilldown.records(manager, JUNE, Scope.COMPANY, "", "numerator").values_list("title", flat=True)
    )
    assert titles == {"a1", "a2", "b1", "b3", "c1"}
    # A rep sees only their own customers' deals, even in the company's list.
    bert_sees = kpi.drilldown.records(company["bert"], JUNE, Scope.COMPANY, "", "numerator")
    assert set(bert_sees.values_list("title", flat=True)) == {"b1", "b3"}


def test_reconstruction_reads_the_stage_history_and_the_probability_then(company):
    """Frozen from history as at 1 June: the deals open then, in the stage they were in, with Proposal's
    probability then (50 %; changed to 30 % on 16 June). Close dates are read as they are now: b1, moved
    to July, is not in June's; a deal created on 2 June is not either."""
    d = company["deals"]
    june_happens(company)
    manager = make_user(role="manager")
    stage_probability_set(
        stage_id=st("Proposal").pk, probability=30, expected=50, actor=manager, at=local(2026, 6, 16)
    )
    late = make_deal(company["customers"][0], title="late", amount=Decimal("1000"), at=local(2026, 6, 2),
                     stage=st("Proposal"), expected_close_date=date(2026, 6, 28))  # fmt: skip
    written = forecasts_reconstruct(since=local(2026, 6, 1), until=local(2026, 6, 2), now=local(2026, 7, 15))
    assert {(f.granularity, f.period_start) for f in written} == {
        ("week", local(2026, 6, 1)),
        ("month", local(2026, 6, 1)),
    }
    june = frozen(JUNE)
    assert june.reconstructed and june.frozen_at == JUNE.start
    items = {
        i.deal.title: (i.probability, i.stage.name)
        for i in FrozenForecastItem.objects.filter(
            granularity="month", period_start=JUNE.start
        ).select_related("deal", "stage")
    }
    # b1 slipped (its close date is now in July), "late" was created after 1 June: neither is in it.
    assert items == {
        "a1": (50, "Proposal"),
        "a2": (90, "Negotiation"),
        "b3": (75, "Negotiation"),
        "c1": (50, "Proposal"),
    }
    assert june.forecast == Decimal("5000") + Decimal("3600") + Decimal("4500")
    assert late.pk and d["a1"].status == "open"  # a1 was open on 1 June (lost later)
    # A live freeze of July uses the new version: 30 % for a deal in Proposal now.
    july_deal = make_deal(
        company["customers"][0], title="july", amount=Decimal("1000"), at=local(2026, 6, 20),
        stage=st("Proposal"), expected_close_date=date(2026, 7, 20),
    )  # fmt: skip
    forecasts_freeze(now=local(2026, 7, 1, 0, 1))
    item = FrozenForecastItem.objects.get(granularity="month", period_start=local(2026, 7, 1), deal=july_deal)
    assert item.probability == 30


def test_reconstruction_uses_the_version_in_force_at_each_period_start(company):
    manager = make_user(role="manager")
    proposal = st("Proposal")
    stage_probability_set(
        stage_id=proposal.pk, probability=40, expected=50, actor=manager, at=local(2026, 5, 15)
    )
    customer = company["customers"][0]
    make_deal(customer, title="may", amount=Decimal("1000"), at=local(2026, 4, 20), stage=proposal,
              expected_close_date=date(2026, 5, 20))  # fmt: skip
    make_deal(customer, title="june", amount=Decimal("1000"), at=local(2026, 4, 20), stage=proposal,
              expected_close_date=date(2026, 6, 20))  # fmt: skip
    forecasts_reconstruct(
        since=local(2026, 5, 1), until=local(2026, 6, 2), granularities=["month"], now=local(2026, 7, 1)
    )

    def probability(title, month):
        return FrozenForecastItem.objects.get(
            granularity="month", period_start=local(2026, month, 1), deal__title=title
        ).probability

    assert probability("may", 5) == 50  # 1 May: before the change
    assert probability("june", 6) == 40  # 1 June: after it
    assert StageProbabilityVersion.objects.filter(stage=proposal).count() == 2


def test_freezing_twice_writes_once_and_a_missed_period_is_caught_up(company):
    forecasts_freeze(now=FREEZE_AT)
    count = FrozenForecast.objects.count()
    assert forecasts_freeze(now=local(2026, 6, 1, 0, 20)) == []
    assert FrozenForecast.objects.count() == count
    # Beat was down from 2 June to 16 June: the week of 8 June is reconstructed, the week of 15 June
    # frozen late, at the first tick after.
    written = forecasts_freeze(now=local(2026, 6, 16, 9, 30))
    by_start = {(f.granularity, f.period_start): f for f in written}
    assert by_start[("week", local(2026, 6, 15))].frozen_at == local(2026, 6, 16, 9, 30)
    assert not by_start[("week", local(2026, 6, 15))].reconstructed
    assert by_start[("week", local(2026, 6, 8))].reconstructed


def test_brier_score_by_hand(company):
    forecasts_freeze(now=FREEZE_AT)
    june_happens(company)
    calibration = forecast_calibration_compute(now=local(2026, 7, 15))
    assert calibration.window_start == local(2025, 7, 1) and calibration.window_end == local(2026, 7, 1)
    company_score = brier_score(calibration=calibration, granularity="month", key="company")
    assert company_score.n == 3 and company_score.score == pytest.approx(1.1225 / 3)
    anna = brier_score(calibration=calibration, granularity="month", key=f"user:{company['anna'].pk}")
    assert (anna.n, anna.score) == (2, pytest.approx(0.53))
    bert = brier_score(calibration=calibration, granularity="month", key=f"user:{company['bert'].pk}")
    assert (bert.n, bert.score) == (1, pytest.approx(0.0625))
    team = brier_score(calibration=calibration, granularity="month", key=f"team:{company['north'].pk}")
    assert team.n == 3
    # The quarter's frozen items are the same deals (d0, won before the late freeze, is not a forecast).
    assert brier_score(calibration=calibration, granularity="quarter", key="company").n == 3
    assert brier_score(calibration=calibration, granularity="week", key="company") is None


def test_the_command_reconstructs_once_and_computes_the_kpis(company, settings):
    june_happens(company)
    call_command("reconstruct_forecasts", "--since", "2026-06-01", "--granularity", "month", "-v", "0")
    rows = FrozenForecast.objects.filter(scope=Scope.COMPANY)
    assert rows.count() and all(r.reconstructed for r in rows)
    assert KpiSnapshot.objects.filter(kpi=ACCURACY, scope=Scope.COMPANY, period_start=JUNE.start).exists()
    assert ForecastCalibration.objects.count() == 1
    count = FrozenForecast.objects.count()
    call_command("reconstruct_forecasts", "--since", "2026-06-01", "--if-empty", "-v", "0")
    assert FrozenForecast.objects.count() == count


@pytest.mark.parametrize(
    "bad", [["--since", "2026-13-01"], ["--granularity", "year"], ["--since", "9999-01-01"]]
)
def test_the_command_refuses_bad_options(bad):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("reconstruct_forecasts", *bad, "-v", "0")


def test_the_week_starts_on_local_monday_midnight(company):
    # Sunday 23:59 local is still the week before (in UTC it is Sunday 09:59).
    forecasts_freeze(now=local(2026, 6, 7, 23, 59))
    assert FrozenForecast.objects.filter(granularity="week", period_start=local(2026, 6, 1)).exists()
    forecasts_freeze(now=local(2026, 6, 8, 0, 0))
    assert frozen(Period("week", date(2026, 6, 8))).frozen_at == local_midnight(date(2026, 6, 8))
