"""Scoring customers as of any days, from the history alone (KPIS.md G2, §10.10).

``score_as_of`` scores every customer who was active at the start of each of the given days (in the
reporting time zone) in one set-based SQL statement, into the temporary table ``health_score`` (one row per
day and customer). The daily task scores today for the list and the past month starts for the backtest with
the same call, so the backtest tests the score the list shows.

As of a day means: the customer's status from its status history (``CustomerStatusChange``), its owner from
its change history (today's owner where the history has no row that old), and only records dated before the
day's start — activities by their done time, won deals by their close time and amount, survey answers by
their answer time, tickets by their creation and SLA times, renewal deals by their creation and close times.
Nothing reads a field as it is today. Merged duplicates and internal customers are never scored; what a
merge moved to the survivor counts under the survivor (KPIS.md §10.13).

Each large event table (activities, won deals, survey answers) is read once for all the days and summed
per customer and slice of a grid of instants (every instant a day's window starts or ends at, found with
``width_bucket``): a window is then a run of slices, and "the latest before the day" the customer's last
non-empty slice before the day's. The small sets (complaints, SLA breaches, subscriptions due) are joined
to the handful of days by range.
"""

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from psycopg import sql as pg

from metrics.health import components as rules
from metrics.health.models import HealthSettings
from metrics.periods import local_midnight

SCORE_TABLE = "health_score"

# The days and, per day, the instants its windows start at; ``g_at`` and ``g_issues``: their places in the
# grid of the owner's windows (every day's start and the start of its last 90 days, in order).
DAYS_SQL = """
CREATE TEMP TABLE health_days ON COMMIT DROP AS
SELECT d.*, width_bucket(at, %(grid)s::timestamptz[]) AS g_at,
       width_bucket(issues, %(grid)s::timestamptz[]) AS g_issues
FROM unnest(
    %(k)s::int[], %(day)s::date[], %(at)s::timestamptz[], %(recent_full)s::timestamptz[],
    %(recent_half)s::timestamptz[], %(issues)s::timestamptz[], %(survey)s::timestamptz[],
    %(revenue)s::timestamptz[], %(revenue_prior)s::timestamptz[], %(renew_from)s::date[],
    %(renew_until)s::date[]
) AS d(k, day, at, recent_full, recent_half, issues, survey, revenue, revenue_prior, renew_from, renew_until)
"""

# Who is scored on each day: every live customer whose last status change before the day's start made it
# active (each status, and each owner, holds from its change until the next one), with its owner then.
PAIRS_SQL = """
CREATE TEMP TABLE health_pairs ON COMMIT DROP AS
WITH spans AS (
    SELECT customer_id, to_status, at AS since,
           lead(at) OVER (PARTITION BY customer_id ORDER BY at, id) AS until
    FROM crm_customerstatuschange
),
owners AS (
    SELECT id AS customer_id, owner_id, history_date AS since,
           lead(history_date) OVER (PARTITION BY id ORDER BY history_date, history_id) AS until
    FROM crm_historicalcustomer
)
SELECT d.k, c.id AS customer_id,
       CASE WHEN o.customer_id IS NULL THEN c.owner_id ELSE o.owner_id END AS owner_id
FROM health_days d
JOIN spans s ON s.to_status = 'active' AND s.since < d.at AND (s.until IS NULL OR s.until >= d.at)
JOIN crm_customer c ON c.id = s.customer_id
LEFT JOIN owners o ON o.customer_id = c.id AND o.since < d.at AND (o.until IS NULL OR o.until >= d.at)
WHERE c.merged_into_id IS NULL AND NOT c.is_internal
"""

SCORE_SQL = """
CREATE TEMP TABLE health_score ON COMMIT DROP AS
WITH
-- The last contact (a done activity of anyone) or purchase (a won deal) before each day: the latest per
-- customer between two consecutive days (slice b: from day b until day b + 1; 0: before day 1), carried
-- forward to every day up to the customer's next slice with one.
touch_slices AS (
    SELECT customer_id, b, last_at, lead(b) OVER (PARTITION BY customer_id ORDER BY b) AS next_b
    FROM (
        SELECT customer_id, width_bucket(at, %(at)s::timestamptz[]) AS b, max(at) AS last_at
        FROM (
            SELECT customer_id, done_at AS at FROM crm_activity WHERE done_at < %(last)s
            UNION ALL
            SELECT customer_id, closed_at FROM crm_deal WHERE status = 'won' AND closed_at < %(last)s
        ) AS t
        GROUP BY 1, 2
    ) AS s
),
last_touch AS (
    SELECT s.customer_id, k, s.last_at
    FROM touch_slices s, generate_series(s.b + 1, COALESCE(s.next_b, %(n)s)) AS k
),
-- The latest NPS or CSAT answer before each day (carried forward the same way), with its fraction of the
-- points by the survey's own detractor and promoter bounds; the survey window is applied below.
answer_slices AS (
    SELECT a.*, lead(b) OVER (PARTITION BY customer_id ORDER BY b) AS next_b
    FROM (
        SELECT DISTINCT ON (r.customer_id, 2) r.customer_id,
               width_bucket(r.score_submitted_at, %(at)s::timestamptz[]) AS b, r.score_submitted_at AS at,
               r.score, s.kind,
               CASE WHEN r.score >= s.positive_min THEN 1.0 WHEN r.score <= s.negative_max THEN 0.0
                    ELSE 0.5 END AS fraction
        FROM surveys_surveyresponse r JOIN surveys_survey s ON s.id = r.survey_id
        WHERE s.kind IN ('nps', 'csat') AND r.score_submitted_at < %(last)s
        ORDER BY r.customer_id, 2, r.score_submitted_at DESC, r.id DESC
    ) AS a
),
latest_answer AS (
    SELECT a.customer_id, k, a.kind, a.score, a.at, a.fraction
    FROM answer_slices a, generate_series(a.b + 1, COALESCE(a.next_b, %(n)s)) AS k
),
complaints AS (
    SELECT d.k, t.customer_id, count(*) AS n
    FROM health_days d JOIN crm_ticket t ON t.created_at >= d.issues AND t.created_at < d.at
    WHERE t.category = 'complaint' AND NOT t.is_spam AND t.created_at >= %(first)s AND t.created_at < %(last)s
    GROUP BY 1, 2
),
-- A ticket breaches its SLA when a due time passes without the first response (unless solved by then) or
-- without the first solution: at the earlier of the due times it missed. Worked out once per ticket.
ticket_breaches AS MATERIALIZED (
    SELECT customer_id, breached_at
    FROM (
        SELECT customer_id, LEAST(
            CASE WHEN (first_response_at IS NULL OR first_response_at > first_response_due_at)
                      AND (first_solved_at IS NULL OR first_solved_at > first_response_due_at)
                 THEN first_response_due_at END,
            CASE WHEN first_solved_at IS NULL OR first_solved_at > resolution_due_at
                 THEN resolution_due_at END
        ) AS breached_at
        FROM crm_ticket WHERE NOT is_spam AND created_at < %(last)s
    ) AS t
    WHERE breached_at >= %(first)s AND breached_at < %(last)s
),
breaches AS (
    SELECT d.k, t.customer_id, count(*) AS n
    FROM health_days d JOIN ticket_breaches t ON t.breached_at >= d.issues AND t.breached_at < d.at
    GROUP BY 1, 2
),
-- Subscriptions won before the day whose term ends soon (or just ended) without a renewal deal that was
-- open on the day (created before it, not closed before it) or already won.
renewal_due AS (
    SELECT d.k, s.customer_id, min(s.term_end) AS due_on
    FROM health_days d JOIN crm_deal s
        ON s.status = 'won' AND s.term_end >= d.renew_from AND s.term_end < d.renew_until
    WHERE s.kind IN ('new', 'renewal') AND s.closed_at < d.at
      AND NOT EXISTS (
          SELECT 1 FROM crm_deal r
          WHERE r.renewal_of_id = s.id AND r.created_at < d.at
            AND (r.closed_at IS NULL OR r.closed_at >= d.at OR r.status = 'won')
      )
    GROUP BY 1, 2
),
-- Won revenue in cents (whole numbers add up faster than decimals): the last 12 months and the 12 before.
revenue AS (
    SELECT d.k, w.customer_id,
           sum(round(w.amount * 100)::bigint) FILTER (WHERE w.closed_at >= d.revenue) AS now_cents,
           sum(round(w.amount * 100)::bigint) FILTER (WHERE w.closed_at < d.revenue) AS prior_cents
    FROM health_days d JOIN crm_deal w
        ON w.status = 'won' AND w.closed_at >= d.revenue_prior AND w.closed_at < d.at
    WHERE w.amount IS NOT NULL
    GROUP BY 1, 2
),
-- Activities per customer, user and slice of the owner's grid (slice g: from grid[g] until grid[g + 1]),
-- each slice counted for the days whose last 90 days it lies in.
owner_slices AS (
    SELECT customer_id, user_id, width_bucket(done_at, %(grid)s::timestamptz[]) AS g, count(*) AS n
    FROM crm_activity WHERE done_at >= %(first)s AND done_at < %(last)s
    GROUP BY 1, 2, 3
),
owner_activity AS (
    SELECT d.k, o.customer_id, o.user_id, sum(o.n) AS n
    FROM health_days d JOIN owner_slices o ON o.g >= d.g_issues AND o.g < d.g_at
    GROUP BY 1, 2, 3
),
facts AS (
    SELECT p.k, d.day, p.customer_id, p.owner_id, d.recent_full, d.recent_half,
           lt.last_at AS last_touch_at, COALESCE(la.kind, '') AS survey_kind, la.score AS survey_score,
           la.at AS survey_at, COALESCE(la.fraction, 0.5) AS survey_fraction,
           COALESCE(c.n, 0) AS complaints, COALESCE(b.n, 0) AS sla_breaches, rd.due_on AS renewal_due_on,
           COALESCE(rv.now_cents, 0) / 100.0 AS revenue_12m,
           COALESCE(rv.prior_cents, 0) / 100.0 AS revenue_prior_12m,
           COALESCE(oa.n, 0) AS owner_activities
    FROM health_pairs p JOIN health_days d ON d.k = p.k
    LEFT JOIN last_touch lt ON lt.k = p.k AND lt.customer_id = p.customer_id
    LEFT JOIN latest_answer la ON la.k = p.k AND la.customer_id = p.customer_id AND la.at >= d.survey
    LEFT JOIN complaints c ON c.k = p.k AND c.customer_id = p.customer_id
    LEFT JOIN breaches b ON b.k = p.k AND b.customer_id = p.customer_id
    LEFT JOIN renewal_due rd ON rd.k = p.k AND rd.customer_id = p.customer_id
    LEFT JOIN revenue rv ON rv.k = p.k AND rv.customer_id = p.customer_id
    LEFT JOIN owner_activity oa ON oa.k = p.k AND oa.customer_id = p.customer_id AND oa.user_id = p.owner_id
),
points AS (
    SELECT f.*,
        %(recency_weight)s * CASE WHEN last_touch_at >= recent_full THEN 1.0
                                  WHEN last_touch_at >= recent_half THEN 0.5 ELSE 0.0 END AS recency_points,
        %(satisfaction_weight)s * survey_fraction AS satisfaction_points,
        %(complaints_weight)s * CASE complaints WHEN 0 THEN 1.0 WHEN 1 THEN 0.5 ELSE 0.0 END
            AS complaints_points,
        %(sla_weight)s * CASE sla_breaches WHEN 0 THEN 1.0 WHEN 1 THEN 0.5 ELSE 0.0 END AS sla_points,
        %(renewal_weight)s * CASE WHEN renewal_due_on IS NULL THEN 1.0 ELSE 0.0 END AS renewal_points,
        %(revenue_weight)s * CASE
            WHEN revenue_prior_12m = 0 THEN CASE WHEN revenue_12m > 0 THEN 1.0 ELSE 0.5 END
            WHEN revenue_12m >= %(revenue_full)s * revenue_prior_12m THEN 1.0
            WHEN revenue_12m >= %(revenue_half)s * revenue_prior_12m THEN 0.5
            ELSE 0.0 END AS revenue_points,
        %(owner_weight)s * CASE WHEN owner_activities >= %(owner_full)s THEN 1.0
                                WHEN owner_activities >= 1 THEN 0.5 ELSE 0.0 END AS owner_points
    FROM facts f
),
scored AS (
    SELECT *, recency_points + satisfaction_points + complaints_points + sla_points + renewal_points
              + revenue_points + owner_points AS score
    FROM points
)
SELECT k, day, customer_id, owner_id, last_touch_at, survey_kind, survey_score, survey_at, complaints,
       sla_breaches, renewal_due_on, revenue_12m, revenue_prior_12m, owner_activities, recency_points,
       satisfaction_points, complaints_points, sla_points, renewal_points, revenue_points, owner_points,
       score,
       CASE WHEN score < %(critical_below)s THEN 'critical'
            WHEN score < %(at_risk_below)s THEN 'at_risk' ELSE 'healthy' END AS band
FROM scored
"""

# The columns of ``health_score`` a stored score copies (``CustomerHealth``), in this order.
STORED_COLUMNS = (
    "customer_id",
    "score",
    "band",
    "last_touch_at",
    "survey_kind",
    "survey_score",
    "survey_at",
    "complaints",
    "sla_breaches",
    "renewal_due_on",
    "revenue_12m",
    "revenue_prior_12m",
    "owner_activities",
    "recency_points",
    "satisfaction_points",
    "complaints_points",
    "sla_points",
    "renewal_points",
    "revenue_points",
    "owner_points",
)


def _instants(days: Sequence[date], back: int) -> list:
    return [local_midnight(d - timedelta(days=back)) for d in days]


def day_parameters(days: Sequence[date]) -> dict[str, Any]:
    """The days (sorted, without repeats) and the instants each one's windows start at, as SQL arrays:
    local midnights, so a window of 90 days is 90 calendar days in the reporting time zone (KPIS.md G1)."""
    days = sorted(set(days))
    starts = [local_midnight(d) for d in days]
    issues = _instants(days, rules.ISSUE_WINDOW_DAYS)
    return {
        "n": len(days),
        "k": list(range(1, len(days) + 1)),
        "day": days,
        "at": starts,
        "recent_full": _instants(days, rules.RECENT_FULL_DAYS),
        "recent_half": _instants(days, rules.RECENT_HALF_DAYS),
        "issues": issues,
        "survey": _instants(days, rules.SURVEY_WINDOW_DAYS),
        "revenue": _instants(days, rules.REVENUE_WINDOW_DAYS),
        "revenue_prior": _instants(days, 2 * rules.REVENUE_WINDOW_DAYS),
        "renew_from": [d - timedelta(days=rules.RENEWAL_OVERDUE_DAYS) for d in days],
        "renew_until": [d + timedelta(days=rules.RENEWAL_AHEAD_DAYS) for d in days],
        # The owner's windows, every start and end in order: activities are counted per slice between two.
        "grid": sorted({*starts, *issues}),
        "first": min(issues) if days else None,
        "last": starts[-1] if days else None,
    }


def score_as_of(days: Sequence[date], *, settings: HealthSettings) -> list[date]:
    """Score every customer active at the start of each of ``days`` into the temporary table
    ``health_score`` (``k`` numbers the days in order, from 1), with ``settings``' weights and bands.

    Run inside a transaction: the tables are dropped at its end (earlier ones of the same transaction are
    replaced first). Returns the days in ``k`` order.
    """
    params = day_parameters(days)
    params.update({c.weight_field: getattr(settings, c.weight_field) for c in rules.COMPONENTS})
    params.update(
        revenue_full=Decimal(rules.REVENUE_FULL_SHARE),
        revenue_half=Decimal(rules.REVENUE_HALF_SHARE),
        owner_full=rules.OWNER_FULL_ACTIVITIES,
        critical_below=settings.critical_below,
        at_risk_below=settings.at_risk_below,
    )
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS health_score, health_pairs, health_days")
        # Compiling the statement's few hundred expressions just in time costs seconds at 100 000 customers,
        # more than it saves; the grouped scans of activities and deals fit in memory with more of it.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(DAYS_SQL, params)
        cursor.execute(PAIRS_SQL, params)
        # The planner's row estimates of the day × customer pairs decide every join below: real ones.
        cursor.execute("ANALYZE health_days, health_pairs")
        cursor.execute(SCORE_SQL, params)
    return params["day"]


def scores_on(day: date, *, settings: HealthSettings | None = None) -> dict[int, dict[str, Any]]:
    """Every active customer's score as of the start of ``day``, by customer id: the columns of
    ``health_score`` (facts, points, score, band). For a page or a test; the daily task reads the table
    itself."""
    with transaction.atomic(), connection.cursor() as cursor:
        score_as_of([day], settings=settings or HealthSettings.load())
        cursor.execute(pg.SQL("SELECT * FROM {} ORDER BY customer_id").format(pg.Identifier(SCORE_TABLE)))
        names = [c.name for c in cursor.description]
        return {row[2]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
