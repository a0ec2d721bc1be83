"""Customers who slip before they churn, so the health score's backtest has something to find (KPIS.md
§10.10, issue 20 item 8).

Runs after the CRM and survey seeds and reads what they wrote. In the generated history a customer churns
at the end of a term, mostly for reasons the records do not show. Here most of those who churn show it first,
as real accounts do: in the months before they leave, a complaint that waited too long for an answer (an SLA
breach), their latest survey answer turns sour, and the account manager's check-in calls stop. About a third
of churners leave without a warning, and nothing is added to anyone who stays, so the score is useful but not
perfect. Everything comes from one ``random.Random(seed)``: the tickets are written with COPY, the other
changes with one statement each over the warned churns.
"""

import random
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.utils import translation
from psycopg import sql as pg

from crm.demo.surveys import FOLLOW_UP_TEXT, _business_days_later
from crm.demo.world import COLUMNS, NULL, TICKET_SUBJECTS, _t, copy_from_stdin

# Share of churns the records warn of, and how long before the churn the warning signs come.
WARNED = 0.65
COMPLAINT_DAYS_BEFORE = (25, 80)
QUIET_DAYS_BEFORE = 120
SOUR_ANSWER_WINDOW = (10, 200)  # the latest answer between these many days before the churn turns sour
# The complaint is high priority and waits hours past its first-response and resolution times.
PRIORITY = "high"
TICKET_TABLES = ("crm_ticket", "crm_ticketstatuschange", "crm_ticketmessage")
CHECK_IN_KINDS = ["call", "meeting", "email", "note"]
# A detractor's score on each kind's scale (NPS 0–6, CSAT 1–2).
SOUR_SCORES = {"nps": (1, 5), "csat": (1, 2)}

CHURNS_SQL = """
    SELECT s.customer_id, s.at
    FROM crm_customerstatuschange s JOIN crm_customer c ON c.id = s.customer_id
    WHERE s.to_status = 'churned' AND NOT c.is_internal AND c.merged_into_id IS NULL AND s.at < %s
    ORDER BY s.id
"""
WARNED_TABLE = """
    CREATE TEMP TABLE demo_warned (customer_id bigint, churned_at timestamptz, nps smallint, csat smallint)
    ON COMMIT DROP
"""
# The account manager's touches (no deal, no ticket) in the days before the churn stop.
QUIET_SQL = """
    DELETE FROM crm_activity a USING demo_warned w
    WHERE a.customer_id = w.customer_id AND a.done_at >= w.churned_at - make_interval(days => %s)
      AND a.done_at < w.churned_at AND a.kind = ANY(%s) AND a.deal_id IS NULL AND a.ticket_id IS NULL
"""
# The latest NPS or CSAT answer in the months before the churn becomes a detractor's (a dissatisfied one).
SOUR_SQL = """
    UPDATE surveys_surveyresponse r SET score = latest.score
    FROM (
        SELECT DISTINCT ON (w.customer_id, w.churned_at) r.id,
               CASE s.kind WHEN 'nps' THEN w.nps ELSE w.csat END AS score
        FROM demo_warned w
        JOIN surveys_surveyresponse r ON r.customer_id = w.customer_id
        JOIN surveys_survey s ON s.id = r.survey_id AND s.kind IN ('nps', 'csat')
        WHERE r.score_submitted_at >= w.churned_at - make_interval(days => %s)
          AND r.score_submitted_at < w.churned_at - make_interval(days => %s)
        ORDER BY w.customer_id, w.churned_at, r.score_submitted_at DESC, r.id DESC
    ) AS latest
    WHERE r.id = latest.id
"""
# A low score gets its closed-loop task for the owner (as the survey seed gives every low score): the answers
# turned sour that had none get one, due two days later and left open.
SOUR_UNFOLLOWED_SQL = """
    SELECT r.id, r.customer_id, r.owner_id, r.score, r.score_submitted_at, s.kind, s.name, s.scale_max
    FROM surveys_surveyresponse r JOIN surveys_survey s ON s.id = r.survey_id
    WHERE r.customer_id IN (SELECT customer_id FROM demo_warned) AND r.owner_id IS NOT NULL
      AND r.followup_task_id IS NULL AND r.score <= s.negative_max
    ORDER BY r.id
"""


def _ts(moment: datetime) -> str:
    return moment.isoformat()


class _Tickets:
    """Complaint tickets with their status history and first reply, as COPY lines (ids after the seed's)."""

    def __init__(self, cursor: Any, rng: random.Random, end: datetime) -> None:
        self.rng, self.end = rng, end
        self.lines: dict[str, list[str]] = {table: [] for table in TICKET_TABLES}
        self.next_id: dict[str, int] = {}
        for table in TICKET_TABLES:
            cursor.execute(pg.SQL("SELECT COALESCE(MAX(id), 0) FROM {}").format(pg.Identifier(table)))
            self.next_id[table] = cursor.fetchone()[0] + 1
        cursor.execute(
            "SELECT first_response_hours, resolution_hours FROM crm_slapolicy WHERE priority = %s", [PRIORITY]
        )
        self.sla = cursor.fetchone()
        cursor.execute("SELECT id FROM accounts_user WHERE role = 'agent' AND is_active ORDER BY id")
        self.agents = [row[0] for row in cursor.fetchall()]

    def _id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    def complaint(self, customer_id: int, created: datetime) -> bool:
        """One complaint answered and solved late; False when the SLA or the agents are missing."""
        if self.sla is None or not self.agents:
            return False
        rng = self.rng
        response_due = created + timedelta(hours=self.sla[0])
        resolution_due = created + timedelta(hours=self.sla[1])
        replied = response_due + timedelta(hours=rng.uniform(2, 30))
        solved = max(resolution_due, replied) + timedelta(hours=rng.uniform(4, 72))
        closed = solved + timedelta(days=4)
        if closed >= self.end:
            return False
        agent = rng.choice(self.agents)
        ticket = self._id("crm_ticket")
        subject = _t(rng.choice(TICKET_SUBJECTS["complaint"]))
        self.lines["crm_ticket"].append(
            f"{ticket}\t{customer_id}\t{agent}\t{NULL}\t{subject}\tReceived by email.\t{PRIORITY}\tclosed\t"
            f"complaint\temail\tf\t{_ts(created)}\t{_ts(closed)}\t{_ts(replied)}\t{_ts(solved)}\t{_ts(solved)}\t"
            f"{_ts(closed)}\t0\t{_ts(response_due)}\t{_ts(resolution_due)}\n"
        )
        previous = ""
        for status, at, by in (("new", created, NULL), ("open", replied, agent), ("solved", solved, agent),
                               ("closed", closed, NULL)):  # fmt: skip
            self.lines["crm_ticketstatuschange"].append(
                f"{self._id('crm_ticketstatuschange')}\t{ticket}\t{previous}\t{status}\t{_ts(at)}\t{by}\n"
            )
            previous = status
        self.lines["crm_ticketmessage"].append(
            f"{self._id('crm_ticketmessage')}\t{ticket}\t{agent}\tSorry for the wait – we are on it.\tt\t"
            f"{_ts(replied)}\n"
        )
        return True

    def write(self, cursor: Any) -> dict[str, int]:
        for table in TICKET_TABLES:
            with cursor.copy(copy_from_stdin(table, COLUMNS[table])) as copy:
                copy.write("".join(self.lines[table]))
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, self.next_id[table]]
            )
        return {table: len(lines) for table, lines in self.lines.items()}


def seed_health(*, until: date, seed: int, language: str = "en") -> dict[str, int]:
    """Give most churns of the seeded history their warning signs; returns the rows added per table (the
    check-ins removed and the answers changed are not counted).

    Call inside the seeding transaction, after the CRM and survey seeds. The signs of one churn, all before
    it: a late complaint 25–80 days earlier, the latest NPS or CSAT answer of the 200 to 10 days before
    turned into a detractor's, and no check-in calls, meetings, e-mails or notes (without a deal or ticket)
    in the last 120 days.
    """
    end = datetime.combine(until, datetime.min.time(), tzinfo=ZoneInfo(settings.TIME_ZONE))
    rng = random.Random(seed * 7717 + 3)
    with transaction.atomic(), connection.cursor() as cursor, translation.override(language):
        tickets = _Tickets(cursor.cursor, rng, end)
        cursor.execute(CHURNS_SQL, [end])
        warned = []
        for customer_id, churned_at in cursor.fetchall():
            if rng.random() >= WARNED:
                continue
            before = timedelta(days=rng.randint(*COMPLAINT_DAYS_BEFORE), hours=rng.randint(8, 17))
            tickets.complaint(customer_id, churned_at - before)
            scores = (rng.randint(*SOUR_SCORES["nps"]), rng.randint(*SOUR_SCORES["csat"]))
            warned.append((customer_id, churned_at, *scores))
        cursor.execute("DROP TABLE IF EXISTS demo_warned")  # a second seed in the same transaction (tests)
        cursor.execute(WARNED_TABLE)
        with cursor.cursor.copy("COPY demo_warned (customer_id, churned_at, nps, csat) FROM STDIN") as copy:
            for row in warned:
                copy.write_row(row)
        cursor.execute(QUIET_SQL, [QUIET_DAYS_BEFORE, CHECK_IN_KINDS])
        cursor.execute(SOUR_SQL, list(reversed(SOUR_ANSWER_WINDOW)))
        counts = tickets.write(cursor.cursor)
        counts["crm_activity"] = _follow_up_sour_answers(cursor.cursor, language)
    return counts


def _follow_up_sour_answers(cursor: Any, language: str) -> int:
    """The follow-up task of every answer turned sour that has none; returns how many were added."""
    cursor.execute(SOUR_UNFOLLOWED_SQL)
    answers = cursor.fetchall()
    if not answers:
        return 0
    subject, notes = FOLLOW_UP_TEXT["zh-hans" if language == "zh-hans" else "en"]
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM crm_activity")
    next_id = cursor.fetchone()[0] + 1
    links = []
    with cursor.copy(copy_from_stdin("crm_activity", COLUMNS["crm_activity"])) as copy:
        for task_id, (response, customer, owner, score, at, kind, survey, top) in enumerate(answers, next_id):
            names = {"kind": kind.upper(), "score": score, "max": top, "survey": survey}
            copy.write_row(
                (
                    task_id,
                    "task",
                    subject.format(customer=f"#{customer}", **names)[:200],
                    notes.format(**names),
                    owner,
                    customer,
                    None,
                    None,
                    at,
                    _business_days_later(at, 2),
                    None,
                )
            )
            links.append((task_id, response))
    cursor.execute(
        "SELECT setval(pg_get_serial_sequence('crm_activity', 'id'), %s, false)", [next_id + len(links)]
    )
    cursor.executemany("UPDATE surveys_surveyresponse SET followup_task_id = %s WHERE id = %s", links)
    return len(links)
