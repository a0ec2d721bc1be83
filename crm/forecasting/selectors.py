"""Reads of stage calibration that the CRM and the metrics share."""

from django.db import connection
from django.db.models import F, QuerySet

from crm.models import Deal

# Per open stage, the closed deals that reached it (or a later open stage of their pipeline; a won deal
# reached every open stage, as in the funnel) and how many of those were won. Backward moves do not
# un-reach a stage.
_REACHED_SQL = """
    WITH closed AS ({closed}),
    top AS (
        SELECT c.deal_id, max(s."order") AS top
        FROM crm_dealstagechange c JOIN crm_pipelinestage s ON s.id = c.to_stage_id
        WHERE s.kind = 'open' AND c.deal_id IN (SELECT id FROM closed)
        GROUP BY c.deal_id
    )
    SELECT s.id, count(*) AS reached, count(*) FILTER (WHERE closed.status = 'won') AS won
    FROM closed
    LEFT JOIN top ON top.deal_id = closed.id
    JOIN crm_pipelinestage s ON s.pipeline_id = closed.pipeline_id AND s.kind = 'open'
         AND (closed.status = 'won' OR s."order" <= top.top)
    GROUP BY s.id
"""


def stage_reached_counts(*, closed: QuerySet[Deal]) -> dict[int, tuple[int, int]]:
    """(deals that reached the stage, of those won) per open stage id, over the ``closed`` deals (won or
    lost; the caller decides which count). One pass over their stage history."""
    rows = closed.order_by().values("id", "status", pipeline_id=F("stage__pipeline_id"))
    closed_sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(_REACHED_SQL.format(closed=closed_sql), params)
        return {stage_id: (reached, won) for stage_id, reached, won in cursor.fetchall()}
