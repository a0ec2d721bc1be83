"""Demo survey history for ``seed_demo``: invitations, answers and follow-up tasks for the seeded company.

Runs after the CRM seed and reads what it wrote (customers, tickets, staff, go-live date). From go-live
on it replays the product's rules: the relationship NPS trickle every 90 days per active customer, CES
24 h after each solved ticket, one CSAT campaign, the 7-day cooldown and the per-kind cadence, opt-outs,
one reminder, expiry and the closed-loop task for low scores. Scores differ by account owner (NPS, CSAT)
and by support agent (CES), improve over time and dip in one bad quarter, so the charts tell a story.
Everything comes from one ``random.Random(seed)`` and is written with COPY.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql as pg

from accounts.models import User
from crm.demo.world import copy_from_stdin
from crm.models import CompanySettings, Customer, Ticket
from surveys.models import Survey
from surveys.services import default_surveys_seed

DAY = timedelta(days=1)
INVITATION_COLUMNS = (
    "id, survey_id, customer_id, ticket_id, campaign_id, trigger, status, suppression_reason, email, "
    "language, token_hash, reminder_token_hash, created_at, scheduled_for, sent_at, expires_at, opened_at, "
    "started_at, completed_at, reminder_count, last_reminder_at"
)
RESPONSE_COLUMNS = (
    "id, invitation_id, survey_id, customer_id, owner_id, agent_id, score, scale_min, scale_max, comment, "
    "score_submitted_at, finished, finished_at, updated_at, followup_task_id"
)
ACTIVITY_COLUMNS = (
    "id, kind, subject, notes, user_id, customer_id, deal_id, ticket_id, created_at, due_at, done_at"
)
SUPPRESSION_COLUMNS = "id, customer_id, reason, created_at, invitation_id"
CAMPAIGN_COLUMNS = "id, survey_id, filters, matched, status, created_by_id, created_at, finished_at"
TABLES = {
    "surveys_surveyinvitation": INVITATION_COLUMNS,
    "surveys_surveyresponse": RESPONSE_COLUMNS,
    "crm_activity": ACTIVITY_COLUMNS,
    "surveys_surveysuppression": SUPPRESSION_COLUMNS,
    "surveys_surveycampaign": CAMPAIGN_COLUMNS,
}
FLUSH_ROWS = 20_000

RESPONSE_RATE = {"nps": 0.30, "ces": 0.38, "csat": 0.45}
COMMENT_STEP_DONE = 0.72
COMMENT_WRITTEN = 0.55
OPENED_WITHOUT_ANSWER = 0.4
UNSUBSCRIBE_AFTER_ANSWER = 0.015
FOLLOW_UP_DONE = 0.85

COMMENTS = {
    ("en", "negative"): (
        "Support took far too long to get back to us.",
        "The last invoice was wrong and nobody explained why.",
        "We had to explain the same problem three times.",
        "Prices went up but the service did not get better.",
        "Our account manager never calls back.",
    ),
    ("en", "neutral"): (
        "Good product, but onboarding new colleagues is hard.",
        "Mostly fine. Faster answers would make it a 9.",
        "The reporting could be more flexible.",
    ),
    ("en", "positive"): (
        "Always friendly and quick to help.",
        "Our account manager really knows our business.",
        "Reliable, and the team listens to feedback.",
        "Solved in one call – thank you!",
    ),
    ("zh-hans", "negative"): ("客服回复太慢了。", "同一个问题我们解释了三遍。", "价格涨了，服务却没有改善。"),
    ("zh-hans", "neutral"): ("产品不错，但新同事上手比较难。", "总体还行，回复再快一点就更好了。"),
    ("zh-hans", "positive"): (
        "服务热情，响应迅速。",
        "客户经理非常了解我们的业务。",
        "一次通话就解决了，谢谢！",
    ),
}
FOLLOW_UP_TEXT = {
    "en": (
        "Follow up on {kind} {score}/{max} from {customer}",
        "Low score in “{survey}”. Call within two days.",
    ),
    "zh-hans": ("跟进{customer}的{kind}评分 {score}/{max}", "“{survey}”中的低分。请在两个工作日内联系。"),
}


@dataclass
class _Writer:
    """Buffers rows per table and streams them with COPY; hands out primary keys."""

    cursor: Any
    next_id: dict[str, int]
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def new_id(self, table: str) -> int:
        self.next_id[table] += 1
        return self.next_id[table]

    def add(self, table: str, row: tuple) -> None:
        self.rows.setdefault(table, []).append(row)
        self.counts[table] = self.counts.get(table, 0) + 1
        if len(self.rows[table]) >= FLUSH_ROWS:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        # Parents first: invitations reference campaigns, responses reference invitations and tasks.
        order = [
            "surveys_surveycampaign",
            "crm_activity",
            "surveys_surveyinvitation",
            "surveys_surveyresponse",
        ]
        for name in [table] if table else [*order, "surveys_surveysuppression"]:
            rows = self.rows.pop(name, [])
            if rows:
                with self.cursor.copy(copy_from_stdin(name, TABLES[name])) as copy:
                    for row in rows:
                        copy.write_row(row)


def _hash(*parts: int) -> float:
    """A stable pseudo-random number in [0, 1) for a tuple of integers (no RNG state involved)."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = ((h ^ part) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return (h % 1_000_003) / 1_000_003


def _quality(user_id: int | None, seed: int) -> float:
    """How well a member of staff's customers are looked after: −1.6 … +1.6 score points."""
    return 0.0 if user_id is None else (_hash(user_id, seed, 7) - 0.5) * 3.2


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def _business_days_later(moment: datetime, days: int) -> datetime:
    local = timezone.localtime(moment)
    while days:
        local += DAY
        days -= local.weekday() < 5
    return local


@dataclass
class _Plan:
    """One invitation to simulate: when it is due, which survey, for which ticket or campaign."""

    at: datetime
    survey: Survey
    ticket_id: int | None = None
    agent_id: int | None = None
    reopened: bool = False
    campaign_id: int | None = None


@dataclass
class _Contact:
    """What one customer has been sent so far: the 7-day cooldown, the per-kind cadence, an opt-out."""

    last_sent: datetime | None = None
    last_by_kind: dict[str, datetime] = field(default_factory=dict)
    unsubscribed: datetime | None = None

    def held_back(self, plan: _Plan) -> str:
        """Why the rules hold this invitation back ("" if they do not)."""
        at, kind = plan.at, plan.survey.kind
        if self.unsubscribed is not None and at >= self.unsubscribed:
            return "unsubscribed"
        if kind in self.last_by_kind and at - self.last_by_kind[kind] < timedelta(
            days=plan.survey.cadence_days
        ):
            return "cadence"
        if self.last_sent is not None and at - self.last_sent < timedelta(days=7):
            return "cooldown"
        return ""


@dataclass(frozen=True)
class _Moments:
    status: str
    expires: datetime
    answered_at: datetime | None
    reminded_at: datetime | None
    opened_at: datetime | None
    finished_at: datetime | None


class _History:
    def __init__(
        self, *, writer: _Writer, rng: random.Random, seed: int, start: datetime, end: datetime
    ) -> None:
        self.writer, self.rng, self.seed, self.start, self.end = writer, rng, seed, start, end
        self.languages = dict(User.objects.values_list("id", "language"))

    def trend(self, at: datetime) -> float:
        """Satisfaction improves after go-live, with one bad quarter around 55–65 % of the way."""
        span = max((self.end - self.start).total_seconds(), 1.0)
        progress = min(max((at - self.start).total_seconds() / span, 0.0), 1.0)
        dip = -1.4 if 0.55 <= progress < 0.65 else 0.0
        return 1.3 * progress + dip

    def score(self, plan: _Plan, owner_id: int | None) -> int:
        kind, g = plan.survey.kind, self.rng.gauss
        if kind == Survey.Kind.NPS:
            # A healthy but imperfect company: NPS around +10 before go-live, +30 to +40 after it.
            return _clamp(g(7.6 + _quality(owner_id, self.seed) + self.trend(plan.at), 2.0), 0, 10)
        if kind == Survey.Kind.CES:
            mean = (
                4.7
                + 0.7 * _quality(plan.agent_id, self.seed)
                + 0.6 * self.trend(plan.at)
                - 1.4 * plan.reopened
            )
            return _clamp(g(mean, 1.3), 1, 7)
        # CSAT about a ticket follows the agent who solved it; about the company, the account owner.
        quality = _quality(plan.agent_id if plan.ticket_id else owner_id, self.seed)
        mean = 3.9 + 0.45 * quality + 0.35 * self.trend(plan.at) - 0.8 * plan.reopened
        return _clamp(g(mean, 0.95), 1, 5)

    def customer(self, row: tuple, plans: list[_Plan]) -> None:
        cid, _owner_id, language, email, internal = row
        w, contact = self.writer, _Contact()
        for plan in sorted(plans, key=lambda p: p.at):
            survey, at = plan.survey, plan.at
            reason = "internal" if internal else "no_email" if not email else contact.held_back(plan)
            inv_id = w.new_id("surveys_surveyinvitation")
            base = (inv_id, survey.pk, cid, plan.ticket_id, plan.campaign_id, survey.trigger)
            if reason:
                suppressed = (
                    "suppressed",
                    reason,
                    "",
                    "",
                    None,
                    None,
                    at,
                    at,
                    None,
                    None,
                    None,
                    None,
                    None,
                    0,
                    None,
                )
                w.add("surveys_surveyinvitation", (*base, *suppressed))
                continue
            contact.last_sent = contact.last_by_kind[survey.kind] = at
            m = self.moments(plan)
            token = f"{self.rng.getrandbits(256):064x}"
            reminder_token = f"{self.rng.getrandbits(256):064x}" if m.reminded_at else None
            w.add(
                "surveys_surveyinvitation",
                (
                    *base,
                    m.status,
                    "",
                    email,
                    language,
                    token,
                    reminder_token,
                    at,
                    at,
                    at,
                    m.expires,
                    m.opened_at,
                    m.answered_at,
                    m.finished_at,
                    1 if m.reminded_at else 0,
                    m.reminded_at,
                ),
            )
            if m.answered_at is not None:
                self.answer(plan, row, inv_id, m, contact)

    def moments(self, plan: _Plan) -> _Moments:
        """When the invitation was answered, reminded, opened and finished (None: not before the end)."""
        # In UTC: adding to a time of the reporting zone is wall-clock arithmetic, and an answer that falls
        # into the hour the clocks skip in spring ends up after the finish a few minutes later.
        rng, survey, at = self.rng, plan.survey, plan.at.astimezone(UTC)
        expires = at + timedelta(days=survey.response_window_days)
        answered_at = None
        if rng.random() < RESPONSE_RATE[survey.kind]:
            delay = rng.expovariate(1 / 0.6) if rng.random() < 0.7 else 3 + rng.random() * 3
            answered_at = at + timedelta(days=min(delay, survey.response_window_days - 0.01))
            if answered_at >= self.end:
                answered_at = None
        reminded_at: datetime | None = at + timedelta(days=3, hours=rng.random() * 6)
        if reminded_at >= self.end or (answered_at is not None and answered_at < reminded_at):
            reminded_at = None
        opened_at = None
        if answered_at is not None:
            opened_at = answered_at - timedelta(seconds=20 + rng.random() * 300)
        elif rng.random() < OPENED_WITHOUT_ANSWER:
            opened_at = at + timedelta(hours=rng.random() * 30)
            opened_at = opened_at if opened_at < self.end else None
        finished_at = None
        if answered_at is not None and rng.random() < COMMENT_STEP_DONE:
            finished_at = answered_at + timedelta(seconds=15 + rng.random() * 240)
            finished_at = finished_at if finished_at < self.end else None
        if finished_at is not None:
            status = "completed"
        elif answered_at is not None:
            status = "partial"
        elif expires <= self.end:
            status = "expired"
        else:
            status = "opened" if opened_at else "sent"
        return _Moments(status, expires, answered_at, reminded_at, opened_at, finished_at)

    def answer(self, plan: _Plan, row: tuple, inv_id: int, m: _Moments, contact: _Contact) -> None:
        """The response to an answered invitation, its follow-up task if negative, and maybe an opt-out."""
        cid, owner_id, language, _email, _internal = row
        rng, w, survey, answered_at = self.rng, self.writer, plan.survey, m.answered_at
        assert answered_at is not None
        score = self.score(plan, owner_id)
        bucket = survey.bucket(score)
        comment = ""
        if m.finished_at is not None and rng.random() < COMMENT_WRITTEN:
            comment = rng.choice(COMMENTS[(language if language == "zh-hans" else "en", bucket)])
        task_id = None
        if bucket == "negative" and owner_id is not None:
            task_id = self.follow_up(plan, cid, owner_id, score, answered_at)
        w.add(
            "surveys_surveyresponse",
            (
                w.new_id("surveys_surveyresponse"),
                inv_id,
                survey.pk,
                cid,
                owner_id,
                plan.agent_id,
                score,
                survey.scale_min,
                survey.scale_max,
                comment,
                answered_at,
                m.finished_at is not None,
                m.finished_at,
                m.finished_at or answered_at,
                task_id,
            ),
        )
        if contact.unsubscribed is None and rng.random() < UNSUBSCRIBE_AFTER_ANSWER:
            contact.unsubscribed = answered_at + timedelta(hours=1)
            w.add(
                "surveys_surveysuppression",
                (w.new_id("surveys_surveysuppression"), cid, "unsubscribed", contact.unsubscribed, inv_id),
            )

    def follow_up(self, plan: _Plan, cid: int, owner_id: int, score: int, at: datetime) -> int:
        survey = plan.survey
        language = self.languages.get(owner_id, "en")
        subject, notes = FOLLOW_UP_TEXT["zh-hans" if language == "zh-hans" else "en"]
        names = {
            "kind": survey.get_kind_display(),
            "score": score,
            "max": survey.scale_max,
            "survey": survey.name,
        }
        done = at + timedelta(hours=2 + self.rng.random() * 90)
        task_id = self.writer.new_id("crm_activity")
        self.writer.add(
            "crm_activity",
            (
                task_id,
                "task",
                subject.format(customer=f"#{cid}", **names)[:200],
                notes.format(**names),
                owner_id,
                cid,
                None,
                plan.ticket_id,
                at,
                _business_days_later(at, 2),
                done if done < self.end and self.rng.random() < FOLLOW_UP_DONE else None,
            ),
        )
        return task_id


def _local(day: date, hour: int) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day, hour))


def _nps_plans(
    survey: Survey, cid: int, became: datetime, churned: datetime | None, start: datetime, end: datetime
) -> Iterator[_Plan]:
    """Asks every cadence period from 60 days after becoming a customer (and go-live), at a fixed offset."""
    first = max(became + timedelta(days=60), start)
    # Offset by customer only (not by the survey's primary key, which a --reset renumbers).
    first += timedelta(days=int(_hash(cid, survey.cadence_days) * survey.cadence_days))
    stop = min(churned or end, end)
    at = _local(timezone.localtime(first).date(), 10)
    while at < stop:
        yield _Plan(at=at, survey=survey)
        at = _local(timezone.localtime(at + timedelta(days=survey.cadence_days)).date(), 10)


def _tickets(start: datetime, end: datetime) -> Iterator[tuple]:
    return (
        Ticket.objects.filter(
            status__in=[Ticket.Status.SOLVED, Ticket.Status.CLOSED],
            is_spam=False,
            solved_at__gte=start - DAY,
            solved_at__lt=end - DAY,
        )
        .order_by("customer_id", "solved_at", "id")
        .values_list("customer_id", "id", "assignee_id", "solved_at", "reopen_count")
        .iterator(chunk_size=10_000)
    )


def seed_surveys(*, until: date, seed: int) -> dict[str, int]:
    """Write the demo survey history up to 00:00 of ``until``; returns rows written per table.

    Call inside the seeding transaction, after the CRM seed. The default surveys are (re)created first,
    since ``seed_demo --reset`` empties the surveys tables too.
    """
    default_surveys_seed()
    surveys = {(s.kind, s.trigger): s for s in Survey.objects.filter(is_active=True)}
    nps = surveys.get((Survey.Kind.NPS, Survey.Trigger.PERIODIC))
    ces = surveys.get((Survey.Kind.CES, Survey.Trigger.TICKET_SOLVED))
    csat = surveys.get((Survey.Kind.CSAT, Survey.Trigger.MANUAL))
    # The demo company asks about every solved ticket: one in three how easy it was (CES), the others how
    # satisfied the customer is (CSAT, one short question: answered more often), so both have answers
    # every month.
    Survey.objects.filter(kind=Survey.Kind.CSAT, trigger=Survey.Trigger.TICKET_SOLVED).update(is_active=True)
    csat_ticket = Survey.objects.filter(kind=Survey.Kind.CSAT, trigger=Survey.Trigger.TICKET_SOLVED).first()
    end = _local(until, 0)
    go_live = CompanySettings.load().go_live_date or (until - timedelta(days=365))
    start = _local(go_live, 0)
    rng = random.Random(seed * 7919 + 5)
    with transaction.atomic(), connection.cursor() as cursor:
        next_id = {}
        for table in TABLES:
            cursor.execute(pg.SQL("SELECT COALESCE(MAX(id), 0) FROM {}").format(pg.Identifier(table)))
            next_id[table] = cursor.fetchone()[0]
        writer = _Writer(cursor.cursor, next_id)
        history = _History(writer=writer, rng=rng, seed=seed, start=start, end=end)
        campaign = _campaign(writer, csat, start, end)
        tickets = _tickets(start, end)
        pending = next(tickets, None)
        customers = (
            Customer.objects.filter(merged_into__isnull=True)
            .order_by("id")
            .values_list(
                "id", "owner_id", "language", "email", "is_internal", "became_customer_at", "churned_at"
            )
            .iterator(chunk_size=10_000)
        )
        for cid, owner_id, language, email, internal, became, churned in customers:
            plans: list[_Plan] = []
            if nps is not None and became is not None:
                plans.extend(_nps_plans(nps, cid, became, churned, start, end))
            while pending is not None and pending[0] <= cid:
                if pending[0] == cid and ces is not None:
                    _cid, ticket_id, agent_id, solved_at, reopens = pending
                    asked = csat_ticket if csat_ticket is not None and ticket_id % 3 else ces
                    plans.append(
                        _Plan(
                            at=solved_at + timedelta(hours=asked.delay_hours),
                            survey=asked,
                            ticket_id=ticket_id,
                            agent_id=agent_id,
                            reopened=reopens > 0,
                        )
                    )
                pending = next(tickets, None)
            if campaign is not None and became is not None and became < campaign[1] < (churned or end):
                plans.append(_Plan(at=campaign[1], survey=csat, campaign_id=campaign[0]))
            if plans:
                history.customer((cid, owner_id, language, email, internal), plans)
        writer.flush()
        for table in TABLES:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), GREATEST(%s, 1), %s)",
                [table, next_id[table], next_id[table] > 0],
            )
    return writer.counts


def _campaign(
    writer: _Writer, survey: Survey | None, start: datetime, end: datetime
) -> tuple[int, datetime] | None:
    """One CSAT campaign to the active customers, five months before the end of the history."""
    if survey is None:
        return None
    at = _local(timezone.localtime(end - timedelta(days=150)).date(), 11)
    if at < start:
        return None
    manager = User.objects.filter(role__in=[User.Role.MANAGER, User.Role.ADMIN]).order_by("id").first()
    campaign_id = writer.new_id("surveys_surveycampaign")
    matched = (
        Customer.objects.filter(merged_into__isnull=True, became_customer_at__lt=at)
        .exclude(churned_at__lt=at)
        .count()
    )
    writer.add(
        "surveys_surveycampaign",
        (
            campaign_id,
            survey.pk,
            '{"status": "active"}',
            matched,
            "done",
            manager.pk if manager else None,
            at,
            at,
        ),
    )
    return campaign_id, at
