"""Every write of customer health: the daily scoring with its backtest, and the manager's settings."""

import logging
import time
import zlib
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from psycopg import sql
from redis.exceptions import RedisError

from accounts.models import User
from metrics.health.backtest import Cell, evaluate
from metrics.health.components import COMPONENTS
from metrics.health.models import Band, CustomerHealth, CustomerHealthRun, HealthSettings
from metrics.health.scoring import SCORE_TABLE, STORED_COLUMNS, score_as_of
from metrics.periods import local_date, local_midnight

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: one scoring at a time, released at commit.
HEALTH_LOCK = zlib.crc32(b"metrics.health_refresh")
BACKTEST_MONTHS = 12
CHURN_HORIZON_DAYS = 90
# What a manager sets: each component's weight and the two band thresholds.
SETTING_FIELDS = (*(c.weight_field for c in COMPONENTS), "critical_below", "at_risk_below")

STORE_SQL = sql.SQL("""
    INSERT INTO {table} (as_of, {columns})
    SELECT %(as_of)s, {columns} FROM {scores} WHERE k = %(k)s
""").format(
    table=sql.Identifier(CustomerHealth._meta.db_table),
    columns=sql.SQL(", ").join(map(sql.Identifier, STORED_COLUMNS)),
    scores=sql.Identifier(SCORE_TABLE),
)
# The scored month starts' observations by band, score and outcome: churned when the status history turns
# the customer churned within the horizon after the month start.
CELLS_SQL = sql.SQL("""
    SELECT h.k, h.band, h.score, (c.customer_id IS NOT NULL) AS churned, count(*)
    FROM {scores} h
    LEFT JOIN (
        SELECT DISTINCT d.k, s.customer_id
        FROM unnest(%(k)s::int[], %(at)s::timestamptz[], %(until)s::timestamptz[]) AS d(k, at, until)
        JOIN crm_customerstatuschange s ON s.to_status = 'churned' AND s.at >= d.at AND s.at < d.until
    ) AS c ON c.k = h.k AND c.customer_id = h.customer_id
    WHERE h.k = ANY(%(k)s)
    GROUP BY 1, 2, 3, 4
""").format(scores=sql.Identifier(SCORE_TABLE))


def backtest_month_starts(today: date, *, months: int = BACKTEST_MONTHS) -> list[date]:
    """The last ``months`` first days of a month whose following 90 days are over by ``today``, oldest
    first: a younger month start would count only part of its churn."""
    found: list[date] = []
    first = today.replace(day=1)
    while len(found) < months:
        if first + timedelta(days=CHURN_HORIZON_DAYS) <= today:
            found.append(first)
        first = (first - timedelta(days=1)).replace(day=1)
    return sorted(found)


def _try_lock(key: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def health_refresh(*, now: datetime | None = None) -> CustomerHealthRun | None:
    """Score every active customer as of the start of today (replacing the stored scores) and backtest the
    same score over the last 12 month starts whose next 90 days are over; None when another scoring holds
    the lock.

    One ``score_as_of`` call scores all 13 days (set-based, see ``scoring``); the run row keeps the settings
    it used and the backtest (one per day: a re-scoring the same day replaces it).
    """
    now = now or timezone.now()
    today = local_date(now)
    months = backtest_month_starts(today)
    clock = time.perf_counter()
    with transaction.atomic():
        if not _try_lock(HEALTH_LOCK):
            logger.info("customer health: another scoring is running, skipped")
            return None
        settings = HealthSettings.load()
        # The month starts come before today: they are days 1–12, today is day 13.
        score_as_of([*months, today], settings=settings)
        month_ks = list(range(1, len(months) + 1))
        with connection.cursor() as cursor:
            CustomerHealth.objects.all().delete()
            cursor.execute(STORE_SQL, {"as_of": today, "k": len(months) + 1})
            scored = cursor.rowcount
            by_owner = _counts_by_owner()
            cursor.execute(
                CELLS_SQL,
                {
                    "k": month_ks,
                    "at": [local_midnight(m) for m in months],
                    "until": [local_midnight(m + timedelta(days=CHURN_HORIZON_DAYS)) for m in months],
                },
            )
            cells = [Cell(*row) for row in cursor.fetchall()]
        result = evaluate(cells, months)
        run, _created = CustomerHealthRun.objects.update_or_create(
            as_of=today,
            defaults={
                "computed_at": timezone.now(),
                "duration_seconds": round(time.perf_counter() - clock, 3),
                "scored": scored,
                "bands": {band: sum(counts[band] for counts in by_owner.values()) for band in Band.values},
                "by_owner": by_owner,
                "settings": settings.as_json(),
                "backtest": result.to_json(),
                "observations": result.observations,
                "churned": result.churned,
                "base_rate": result.base_rate,
                "lift": result.lift,
                "precision": result.precision,
                "recall": result.recall,
                "auc": result.auc,
                "auc_margin": result.auc_margin,
                "verdict": result.verdict,
            },
        )
        # A new table of tens of thousands of rows each night: fresh statistics for the list's plans.
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(CustomerHealth._meta.db_table)))
    return run


def _counts_by_owner() -> dict[str, dict[str, float]]:
    """The stored scores per owner of the customer ("" for none): customers per band and the sum of their
    scores (a multiple of 0.5, exact as a float)."""
    rows = (
        CustomerHealth.objects.values_list("customer__owner_id", "band")
        .annotate(n=Count("pk"), total=Sum("score"))
        .order_by()
    )
    found: dict[str, dict[str, float]] = {}
    for owner_id, band, n, total in rows:
        counts = found.setdefault(
            "" if owner_id is None else str(owner_id), dict.fromkeys((*Band.values, "score"), 0)
        )
        counts[band] = n
        counts["score"] += float(total)
    return found


def health_settings_update(*, actor: User, **values: Any) -> HealthSettings:
    """Change the weights and band thresholds (managers only), then re-score everyone with them once the
    change is committed (queued: a broker that is down leaves it to the nightly run)."""
    if not actor.is_manager:
        raise PermissionError("only managers change the health score's settings")
    unknown = set(values) - set(SETTING_FIELDS)
    if unknown:
        raise TypeError(f"unknown health settings: {sorted(unknown)}")
    with transaction.atomic():
        # The one row, created by the first save and locked by each (two managers saving at once).
        current, _created = HealthSettings.objects.select_for_update().get_or_create(pk=1)
        for name, value in values.items():
            setattr(current, name, value)
        current.updated_at = timezone.now()
        current.updated_by = actor
        current.full_clean()
        current.save()
        transaction.on_commit(_queue_refresh, robust=True)
    return current


def _queue_refresh() -> None:
    from metrics.tasks import refresh_customer_health

    try:
        refresh_customer_health.delay()
    except (BrokerError, RedisError, OSError):
        logger.warning("customer health re-scoring not queued; the nightly run will do it", exc_info=True)
