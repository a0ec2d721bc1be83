"""Every write of forecast calibration: freezing forecasts when their periods begin, reconstructing past
ones from history, and the stored stage calibration with its Brier scores (KPIS.md §10.6).

A frozen forecast is the weighted forecast of section 4 as the ``forecast_weighted`` KPI computes it for a
running period: what was won in the period so far plus Σ amount × probability ÷ 100 of the open deals
expected to close in it (probability: the deal's override, else its stage's), over the same deals (no
merged duplicates, no internal customers), per company, team and rep. It is written once, with one item
per deal (the probability and category the deal carried), and never recomputed.
"""

import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Count, F, FloatField, Sum, Value, When
from django.db.models.functions import Power
from django.utils import timezone
from psycopg import sql as pg

from accounts.models import User
from crm.forecasting.models import StageProbabilityVersion
from crm.forecasting.selectors import stage_reached_counts
from crm.forecasting.services import stage_probability_set
from crm.models import Deal, PipelineStage
from metrics.forecasts import selectors
from metrics.forecasts.models import (
    FROZEN_GRANULARITIES,
    ForecastCalibration,
    FrozenForecast,
    FrozenForecastItem,
)
from metrics.kpis.shared import EXCLUDED_CUSTOMERS_SQL, INVALID_LOST, LOST, WON, live
from metrics.models import Scope
from metrics.periods import Period, period_of, periods_between

logger = logging.getLogger(__name__)

FREEZE_LOCK = zlib.crc32(b"metrics.forecasts_freeze")
CALIBRATION_LOCK = zlib.crc32(b"metrics.forecast_calibration")
# The freeze task also fills periods missed altogether (the scheduler down for a whole week) from
# history, as far back as this many periods of each granularity, once forecasts have begun.
CATCH_UP_PERIODS = 8
# Calibration reads the deals closed in this many whole quarters before the current one.
CALIBRATION_QUARTERS = 4
CALIBRATIONS_KEPT = 10


def forecasts_freeze(*, now: datetime | None = None) -> list[FrozenForecast]:
    """Freeze the forecast of the current week, month and quarter, each once (idempotent): a run after the
    period's start freezes it late, and its ``frozen_at`` says so. Periods missed altogether since
    forecasts began are reconstructed from history (marked so). Returns the company rows written."""
    now = now or timezone.now()
    with transaction.atomic():
        _lock(FREEZE_LOCK)
        current = [period_of(now, g) for g in FROZEN_GRANULARITIES]
        missing = [p for p in current if p not in _frozen_periods(current)]
        written = _freeze(missing, at=now, reconstructed=False) if missing else []
        gaps = _gaps(now)
        if gaps:
            logger.warning("reconstructing %d forecast periods the scheduler missed", len(gaps))
            written += _freeze(gaps, at=now, reconstructed=True)
    return written


def forecasts_reconstruct(
    *,
    since: datetime,
    until: datetime | None = None,
    granularities: Sequence[str] = FROZEN_GRANULARITIES,
    now: datetime | None = None,
) -> list[FrozenForecast]:
    """Reconstruct the forecasts of every period of ``granularities`` that began in ``[since, until)``
    (and by now) and has none: as they stood at the period's start, from the stage history and the
    versions of the stage probabilities; amounts, overrides, categories, expected close dates and owners
    as they are now. Marked reconstructed; existing rows are never touched. Returns the company rows."""
    now = now or timezone.now()
    until = min(until or now, now)
    periods = [p for g in granularities for p in periods_between(g, since, until) if since <= p.start <= now]
    with transaction.atomic():
        _lock(FREEZE_LOCK)
        existing = _frozen_periods(periods)
        missing = [p for p in periods if p not in existing]
        return _freeze(missing, at=now, reconstructed=True) if missing else []


def _lock(key: int) -> None:
    """One freeze at a time: the second waits, then finds the periods frozen and writes nothing."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _frozen_periods(periods: Iterable[Period]) -> set[Period]:
    """Those of ``periods`` that have a frozen forecast (its company row)."""
    periods = list(periods)
    if not periods:
        return set()
    rows = FrozenForecast.objects.filter(
        scope=Scope.COMPANY,
        period_start__in={p.start for p in periods},
        granularity__in={p.granularity for p in periods},
    ).values_list("granularity", "period_start")
    found = {(g, start) for g, start in rows}
    return {p for p in periods if (p.granularity, p.start) in found}


def _gaps(now: datetime) -> list[Period]:
    """Periods before the current ones with no forecast, since forecasts began (at most
    ``CATCH_UP_PERIODS`` back per granularity)."""
    gaps = []
    for g in FROZEN_GRANULARITIES:
        first = FrozenForecast.objects.filter(granularity=g, scope=Scope.COMPANY, reconstructed=False)
        first_start = first.order_by("period_start").values_list("period_start", flat=True).first()
        if first_start is None:
            continue
        current = period_of(now, g)
        candidates = [current.previous(n) for n in range(CATCH_UP_PERIODS, 0, -1)]
        candidates = [p for p in candidates if p.start > first_start]
        existing = _frozen_periods(candidates)
        gaps += [p for p in candidates if p not in existing]
    return gaps


# Writing the items and the scope rows
# ---------------------------------------------------------------------------------------------------------

_PERIODS_TABLE = """
    CREATE TEMP TABLE forecast_periods (
        granularity varchar(8), period_start timestamptz, period_end timestamptz, first_day date,
        next_day date, frozen_at timestamptz, reconstructed boolean
    ) ON COMMIT DROP
"""

_ITEM_COLUMNS = pg.SQL(
    "granularity, period_start, deal_id, owner_id, team_id, stage_id, amount, probability, category, won"
)

# The periods a deal's expected close date falls in, joined by hash (one pass over all deals, not one per
# period, when years are reconstructed): ``g`` is each granularity, ``p`` the period being frozen.
_BY_CLOSE_DATE = pg.SQL("""
    FROM crm_deal d
    CROSS JOIN (VALUES ('week'), ('month'), ('quarter')) AS g(granularity)
    JOIN forecast_periods p ON p.granularity = g.granularity
         AND p.first_day = date_trunc(g.granularity, d.expected_close_date::timestamp)::date
""")

# Now: the open deals expected to close in the period, as they are (a range over the open deals' index),
# and those won in it so far.
_LIVE_ITEMS = pg.SQL("""
    INSERT INTO metrics_frozenforecastitem ({columns})
    SELECT p.granularity, p.period_start, d.id, d.owner_id, u.team_id, d.stage_id, d.amount,
           COALESCE(d.probability, s.probability),
           COALESCE(NULLIF(d.forecast_category, ''), s.forecast_category), false
    FROM forecast_periods p
    JOIN crm_deal d ON d.status = 'open'
         AND d.expected_close_date >= p.first_day AND d.expected_close_date < p.next_day
    JOIN crm_pipelinestage s ON s.id = d.stage_id
    LEFT JOIN accounts_user u ON u.id = d.owner_id
    WHERE NOT p.reconstructed AND d.customer_id NOT IN ({excluded})
    UNION ALL
    SELECT p.granularity, p.period_start, d.id, d.owner_id, u.team_id, d.stage_id, d.amount, 100, '', true
    FROM forecast_periods p
    CROSS JOIN LATERAL (
        -- per period, a range scan of the won deals' close-time index (OFFSET 0 keeps it apart)
        SELECT * FROM crm_deal d
        WHERE d.status = 'won' AND d.closed_at >= p.period_start AND d.closed_at < p.frozen_at
        OFFSET 0
    ) AS d
    LEFT JOIN accounts_user u ON u.id = d.owner_id
    WHERE NOT p.reconstructed AND d.customer_id NOT IN ({excluded})
    ON CONFLICT DO NOTHING
""")

# From history: the deals open at the period's start (their last stage move before it went to an open
# stage) and expected to close in it, with that stage's probability then (its version in force then, else
# its first one). Worked out in steps the planner cannot misjudge: the candidates (one pass over the
# deals), each one's stage then (an index lookup per candidate), each stage's probability per period (a
# handful of stages × periods), then hash joins.
_RECONSTRUCTED_ITEMS = pg.SQL("""
    WITH candidates AS MATERIALIZED (
        SELECT p.granularity, p.period_start, d.id AS deal_id, d.owner_id, d.amount, d.probability,
               d.forecast_category
        {by_close_date}
        WHERE p.reconstructed AND d.expected_close_date IS NOT NULL AND d.created_at < p.period_start
          AND (d.closed_at IS NULL OR d.closed_at >= p.period_start) AND d.customer_id NOT IN ({excluded})
    ),
    placed AS MATERIALIZED (
        SELECT k.*, (
            SELECT c.to_stage_id FROM crm_dealstagechange c
            WHERE c.deal_id = k.deal_id AND c.at < k.period_start ORDER BY c.at DESC, c.id DESC LIMIT 1
        ) AS stage_id
        FROM candidates k
    ),
    stage_then AS MATERIALIZED (
        SELECT s.id AS stage_id, p.granularity, p.period_start, s.forecast_category,
               COALESCE((
                   SELECT v.probability FROM crm_stageprobabilityversion v WHERE v.stage_id = s.id
                   ORDER BY v.valid_from <= p.period_start DESC,
                            CASE WHEN v.valid_from <= p.period_start THEN v.valid_from END DESC NULLS LAST,
                            v.valid_from, v.id DESC
                   LIMIT 1
               ), s.probability) AS probability
        FROM crm_pipelinestage s CROSS JOIN forecast_periods p
        WHERE s.kind = 'open' AND p.reconstructed
    )
    INSERT INTO metrics_frozenforecastitem ({columns})
    SELECT k.granularity, k.period_start, k.deal_id, k.owner_id, u.team_id, k.stage_id, k.amount,
           COALESCE(k.probability, t.probability),
           COALESCE(NULLIF(k.forecast_category, ''), t.forecast_category), false
    FROM placed k
    JOIN stage_then t ON t.stage_id = k.stage_id AND t.granularity = k.granularity
         AND t.period_start = k.period_start
    LEFT JOIN accounts_user u ON u.id = k.owner_id
    ON CONFLICT DO NOTHING
""")

# Per period: the company's sums, each team's and each rep's (the owner and team when frozen).
_SCOPE_ROWS = """
    INSERT INTO metrics_frozenforecast (
        granularity, period_start, period_end, scope, scope_id, frozen_at, reconstructed, won_to_date,
        open_weighted, forecast, commit, best_case, pipeline, omitted, deals, won_deals
    )
    SELECT granularity, period_start, period_end, scope, scope_id, frozen_at, reconstructed, won_to_date,
           open_weighted, won_to_date + open_weighted, commit, best_case, pipeline, omitted, deals, won_deals
    FROM (
        SELECT p.granularity, p.period_start, p.period_end, p.frozen_at, p.reconstructed,
               CASE WHEN GROUPING(i.owner_id) = 0 THEN 'user'
                    WHEN GROUPING(i.team_id) = 0 THEN 'team' ELSE 'company' END AS scope,
               CASE WHEN GROUPING(i.owner_id) = 0 THEN COALESCE(i.owner_id::text, '')
                    WHEN GROUPING(i.team_id) = 0 THEN COALESCE(i.team_id::text, '') ELSE '' END AS scope_id,
               COALESCE(sum(i.amount) FILTER (WHERE i.won), 0) AS won_to_date,
               COALESCE(sum(i.amount * i.probability) FILTER (WHERE NOT i.won), 0) / 100 AS open_weighted,
               COALESCE(sum(i.amount) FILTER (WHERE NOT i.won AND i.category = 'commit'), 0) AS commit,
               COALESCE(sum(i.amount) FILTER (WHERE NOT i.won AND i.category = 'best_case'), 0) AS best_case,
               COALESCE(sum(i.amount) FILTER (WHERE NOT i.won AND i.category = 'pipeline'), 0) AS pipeline,
               COALESCE(sum(i.amount) FILTER (WHERE NOT i.won AND i.category = 'omitted'), 0) AS omitted,
               count(i.id) FILTER (WHERE NOT i.won) AS deals,
               count(i.id) FILTER (WHERE i.won) AS won_deals
        FROM forecast_periods p
        LEFT JOIN metrics_frozenforecastitem i
               ON i.granularity = p.granularity AND i.period_start = p.period_start
        GROUP BY GROUPING SETS (
            (p.granularity, p.period_start, p.period_end, p.frozen_at, p.reconstructed),
            (p.granularity, p.period_start, p.period_end, p.frozen_at, p.reconstructed, i.team_id),
            (p.granularity, p.period_start, p.period_end, p.frozen_at, p.reconstructed, i.owner_id)
        )
    ) AS rows
    WHERE scope = 'company' OR scope_id <> ''
    ON CONFLICT DO NOTHING
"""


def _freeze(periods: Sequence[Period], *, at: datetime, reconstructed: bool) -> list[FrozenForecast]:
    """Write the items and the scope rows of ``periods``: now (``at``), or as at each period's start."""
    with connection.cursor() as cursor:
        cursor.execute(_PERIODS_TABLE)
        with cursor.cursor.copy(
            "COPY forecast_periods (granularity, period_start, period_end, first_day, next_day, frozen_at, "
            "reconstructed) FROM STDIN"
        ) as copy:
            for p in periods:
                frozen_at = p.start if reconstructed else max(at, p.start)
                copy.write_row(
                    (p.granularity, p.start, p.end, p.first_day, p.next().first_day, frozen_at, reconstructed)
                )
        items = _RECONSTRUCTED_ITEMS if reconstructed else _LIVE_ITEMS
        cursor.execute(
            items.format(columns=_ITEM_COLUMNS, by_close_date=_BY_CLOSE_DATE, excluded=EXCLUDED_CUSTOMERS_SQL)
        )
        cursor.execute(_SCOPE_ROWS)
        cursor.execute("DROP TABLE forecast_periods")
    return list(
        FrozenForecast.objects.filter(
            scope=Scope.COMPANY,
            granularity__in={p.granularity for p in periods},
            period_start__in={p.start for p in periods},
        ).order_by("granularity", "period_start")
    )


# Calibration: stage win rates and Brier scores, stored for the page
# ---------------------------------------------------------------------------------------------------------


def calibration_window(now: datetime) -> tuple[datetime, datetime]:
    """The deals closed in the last four whole quarters: [start of the quarter four before, start of this)."""
    quarter = period_of(now, "quarter")
    return quarter.previous(CALIBRATION_QUARTERS).start, quarter.start


def _closed_deals(start: datetime, end: datetime) -> Any:
    """The deals closed in ``[start, end)`` that count as won or lost (the win rate's rule: no merged or
    internal customers, no deals lost as duplicate or invalid)."""
    return Deal.objects.filter(
        live("customer__"), status__in=[WON, LOST], closed_at__gte=start, closed_at__lt=end
    ).exclude(INVALID_LOST)


def _stage_counts(start: datetime, end: datetime) -> list[dict[str, int]]:
    counts = stage_reached_counts(closed=_closed_deals(start, end))
    stages = PipelineStage.objects.filter(kind=PipelineStage.Kind.OPEN).order_by("pipeline_id", "order")
    return [
        {"stage": pk, "reached": counts.get(pk, (0, 0))[0], "won": counts.get(pk, (0, 0))[1]}
        for pk in stages.values_list("pk", flat=True)
    ]


def _brier_sums(start: datetime, end: datetime) -> dict[str, dict[str, list[float]]]:
    """Σ (p − outcome)² and n per granularity and scope, over the frozen items (not the already won ones)
    of the deals closed in ``[start, end)``: outcome 1 when the deal was won, 0 when lost; p in 0–1."""
    outcome = Case(When(deal__status=WON, then=Value(1.0)), default=Value(0.0), output_field=FloatField())
    error = Power(F("probability") / Value(100.0) - outcome, 2, output_field=FloatField())
    rows = (
        FrozenForecastItem.objects.filter(won=False, deal__in=_closed_deals(start, end).values("pk"))
        .values("granularity", "owner_id", "team_id")
        .annotate(squared=Sum(error), n=Count("pk"))
        .order_by()
    )
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    for row in rows:
        keys = ["company"]
        if row["team_id"] is not None:
            keys.append(f"team:{row['team_id']}")
        if row["owner_id"] is not None:
            keys.append(f"user:{row['owner_id']}")
        for key in keys:
            cell = sums[row["granularity"]][key]
            cell[0] += float(row["squared"] or 0)
            cell[1] += int(row["n"])
    return {g: dict(by_scope) for g, by_scope in sums.items()}


def forecast_calibration_compute(*, now: datetime | None = None) -> ForecastCalibration:
    """Count, over the deals closed in the last four whole quarters, each open stage's reached and won
    deals and the Brier sums of the frozen forecasts' items; store them for the page (the latest few
    computations are kept)."""
    now = now or timezone.now()
    start, end = calibration_window(now)
    with transaction.atomic():
        _lock(CALIBRATION_LOCK)
        calibration = ForecastCalibration.objects.create(
            computed_at=now,
            window_start=start,
            window_end=end,
            stages=_stage_counts(start, end),
            brier=_brier_sums(start, end),
        )
        old = ForecastCalibration.objects.order_by("-computed_at", "-id").values_list("pk", flat=True)
        ForecastCalibration.objects.filter(pk__in=list(old[CALIBRATIONS_KEPT:])).delete()
    return calibration


def stage_probability_apply(
    *, stage: PipelineStage, probability: int, expected: int, actor: User
) -> StageProbabilityVersion:
    """The calibration page's one click: ``stage``'s probability becomes the suggested ``probability``,
    with what the latest calibration's suggestion rested on as the version's note. Refused (ValidationError)
    as ``stage_probability_set`` refuses, e.g. when the stage no longer has ``expected``."""
    return stage_probability_set(
        stage_id=stage.pk,
        probability=probability,
        expected=expected,
        actor=actor,
        note=_calibration_note(stage.pk),
    )


def _calibration_note(stage_id: int) -> str:
    """What the suggestion rested on, kept with the version."""
    for row in selectors.stage_calibration_list(calibration=selectors.calibration_latest()):
        if row.stage.pk == stage_id and row.reached:
            return f"{row.won} / {row.reached} won ({row.percent:.1f} %)"
    return ""
