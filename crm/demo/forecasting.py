"""Forecast calibration in the demo (KPIS.md §10.6), after the bulk load: stage probabilities that mean
something, and two reps whose forecasts cannot be trusted.

- The default pipeline's open stages get probabilities calibrated on the generated history (each
  stage's win rate over the deals closed in the last four whole quarters, as the calibration page counts
  it), except Proposal, configured far too high: the page flags it and suggests its win rate.
- Negotiation was too optimistic until about ten months ago, when the manager lowered it: its versions
  show the change, and forecasts frozen before it keep the old probability.
- Two reps over-forecast (those whose lost deals weigh most in their forecasts): on most of their deals
  that were later lost or slipped past their expected close date (and on their open ones) they set an
  80–90 % probability override and the commit category, and each such deal was "closing this month"
  right up to the month it was lost or won.

``manage.py reconstruct_forecasts`` then freezes the history's forecasts from this (``make demo`` runs it
after seeding), so accuracy and bias have a trend and the two reps stand out.
"""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet

from accounts.models import User
from crm.forecasting.models import StageProbabilityVersion
from crm.forecasting.selectors import stage_reached_counts
from crm.forecasting.services import SINCE_EVER, default_forecast_category
from crm.models import Customer, Deal, ForecastCategory, PipelineStage

# How much too high the mis-set stage is configured (percentage points), and Negotiation before its fix.
MIS_SET_BY = 25
NEGOTIATION_WAS_OVER_BY = 15
FIXED_DAYS_AGO = 300
# How many reps over-forecast.
OVER_FORECASTERS = 2
MIN_DEALS = 20


def _quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _quarters_back(day: date, quarters: int) -> date:
    index = day.year * 12 + day.month - 1 - 3 * quarters
    return date(index // 12, index % 12 + 1, 1)


def _calibration_window(until: date) -> tuple[datetime, datetime]:
    """The last four whole quarters before ``until`` (the calibration page's window), local midnights."""
    tz = ZoneInfo(settings.TIME_ZONE)
    end = _quarter_start(until)
    return (
        datetime.combine(_quarters_back(end, 4), time(), tzinfo=tz),
        datetime.combine(end, time(), tzinfo=tz),
    )


def _closed(start: datetime, end: datetime) -> QuerySet[Deal]:
    """Closed deals counted as the win rate counts them: no merged or internal customers, no deals lost
    as duplicate or invalid (the rule of metrics.kpis.shared.INVALID_LOST)."""
    excluded = Customer.objects.filter(Q(merged_into__isnull=False) | Q(is_internal=True)).values("pk")
    return (
        Deal.objects.filter(
            status__in=[Deal.Status.WON, Deal.Status.LOST], closed_at__gte=start, closed_at__lt=end
        )
        .exclude(customer__in=excluded)
        .exclude(status=Deal.Status.LOST, lost_reason__iregex=r"^\s*(duplicate|invalid)")
    )


def _calibrate_stages(until: date) -> None:
    """Configure the default pipeline's open stages from the generated win rates (Proposal too high,
    Negotiation too high until it was fixed) and write their versions."""
    start, end = _calibration_window(until)
    counts = stage_reached_counts(closed=_closed(start, end))
    stages = list(PipelineStage.objects.filter(pipeline__is_default=True).order_by("order"))
    opens = [stage for stage in stages if stage.kind == PipelineStage.Kind.OPEN]
    # The middle stage (Proposal) is mis-set; the last open one (Negotiation) was, until it was fixed.
    mis_set, fixed = opens[len(opens) // 2] if len(opens) > 2 else None, opens[-1] if len(opens) > 1 else None
    history_end = datetime.combine(until, time(), tzinfo=ZoneInfo(settings.TIME_ZONE))
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("pk").first()
    StageProbabilityVersion.objects.filter(stage__in=stages).delete()
    versions = []
    for stage in stages:
        reached, won = counts.get(stage.pk, (0, 0))
        if stage in opens and reached >= MIN_DEALS:
            stage.probability = max(1, min(99, round(100 * won / reached)))
            if stage == mis_set:
                stage.probability = min(95, stage.probability + MIS_SET_BY)
        stage.forecast_category = _category(stage, opens)
        stage.save(update_fields=["probability", "forecast_category"])
        first = stage.probability
        if stage == fixed and reached >= MIN_DEALS:
            first = min(95, stage.probability + NEGOTIATION_WAS_OVER_BY)
            versions.append(
                StageProbabilityVersion(
                    stage=stage,
                    probability=stage.probability,
                    valid_from=history_end - timedelta(days=FIXED_DAYS_AGO),
                    reason=StageProbabilityVersion.Reason.ADMIN,
                    note="Lowered after a year of lost negotiations",
                    set_by=manager,
                )
            )
        versions.append(
            StageProbabilityVersion(
                stage=stage,
                probability=first,
                valid_from=SINCE_EVER,
                reason=StageProbabilityVersion.Reason.DEMO,
            )
        )
    StageProbabilityVersion.objects.bulk_create(versions)


def _category(stage: PipelineStage, opens: list[PipelineStage]) -> str:
    """Early stages pipeline, middle ones best case, the last open one commit (won and lost as usual)."""
    if stage not in opens:
        return default_forecast_category(stage.kind, stage.probability)
    position = opens.index(stage)
    if position == len(opens) - 1:
        return ForecastCategory.COMMIT
    return ForecastCategory.BEST_CASE if position >= len(opens) // 2 else ForecastCategory.PIPELINE


# Per active rep, over the calibration window: the amount of the deals they lost that were open when the
# month they were lost began (such a deal sits in that month's frozen forecast), their number, and the
# amount they won.
_EXPOSED_SQL = """
    SELECT d.owner_id,
           sum(d.amount) FILTER (WHERE d.status = 'lost' AND d.created_at < month_start) AS exposed,
           count(*) FILTER (WHERE d.status = 'lost' AND d.created_at < month_start) AS n,
           sum(d.amount) FILTER (WHERE d.status = 'won') AS won
    FROM (
        SELECT *, date_trunc('month', closed_at AT TIME ZONE %s) AT TIME ZONE %s AS month_start
        FROM crm_deal WHERE closed_at >= %s AND closed_at < %s
    ) AS d
    JOIN accounts_user u ON u.id = d.owner_id AND u.role = 'rep' AND u.is_active AND NOT u.is_service_account
    GROUP BY d.owner_id
    HAVING count(*) FILTER (WHERE d.status = 'lost' AND d.created_at < month_start) >= %s
    ORDER BY sum(d.amount) FILTER (WHERE d.status = 'lost' AND d.created_at < month_start)
             / NULLIF(sum(d.amount) FILTER (WHERE d.status = 'won'), 0) DESC NULLS LAST, d.owner_id
    LIMIT %s
"""


def _over_forecasters(until: date) -> list[int]:
    """The two active reps whose lost deals weigh most in their forecasts against what they won (each with
    at least 15 such deals, so their bias is not noise): their optimism shows most."""
    start, end = _calibration_window(until)
    with connection.cursor() as cursor:
        cursor.execute(
            _EXPOSED_SQL, [settings.TIME_ZONE, settings.TIME_ZONE, start, end, 15, OVER_FORECASTERS]
        )
        return [row[0] for row in cursor.fetchall()]


# Nine in ten (by id) of their deals that were lost, won after the expected close date, or are still open
# get an optimistic override and the commit category; a closed one was "closing this month" every month
# until it closed (its expected close date is now the day it closed), so it sat in that month's forecast
# at 80–90 %, lost or not.
_OVER_FORECAST_SQL = """
    UPDATE crm_deal SET probability = CASE WHEN id %% 2 = 0 THEN 90 ELSE 80 END, forecast_category = 'commit',
        expected_close_date = CASE WHEN status = 'open' THEN expected_close_date
                                   ELSE (closed_at AT TIME ZONE %s)::date END
    WHERE owner_id = ANY(%s) AND id %% 10 < 9 AND expected_close_date IS NOT NULL
      AND (status IN ('lost', 'open')
           OR (status = 'won' AND (closed_at AT TIME ZONE %s)::date > expected_close_date))
"""
# A few of everybody else's deals that were then won on time are marked commit (an accurate call), so the
# category means something for the rest of the team too.
_ACCURATE_COMMIT_SQL = """
    UPDATE crm_deal SET forecast_category = 'commit'
    WHERE owner_id <> ALL(%s) AND id %% 10 = 3 AND status = 'won'
      AND (closed_at AT TIME ZONE %s)::date <= expected_close_date
"""


def seed_forecasting(*, until: date) -> None:
    """Post-process the loaded demo for forecast calibration (see the module's docstring)."""
    _calibrate_stages(until)
    reps = _over_forecasters(until)
    with connection.cursor() as cursor:
        cursor.execute(_OVER_FORECAST_SQL, [settings.TIME_ZONE, reps, settings.TIME_ZONE])
        cursor.execute(_ACCURATE_COMMIT_SQL, [reps, settings.TIME_ZONE])
