"""Service KPIs (KPIS.md §6): ticket volumes, response and resolution times, SLA, backlog, complaints.

Times are calendar hours. Spam tickets and tickets of merged or internal customers are excluded; team
and user scopes use the ticket's current assignee (complaints: the customer's account owner).
"""

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from django.db.models import F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.models import Ticket, TicketStatusChange
from crm.selectors import ticket_list
from metrics.kpis.base import (
    MIN_EVENTS,
    Basis,
    Better,
    Chart,
    Context,
    Family,
    Kpi,
    Plot,
    Question,
    Row,
    Section,
    Significance,
    Unit,
)
from metrics.kpis.builders import (
    HUNDRED,
    Offset,
    Stocked,
    dec,
    divide,
    grouped,
    measure,
    rows_from,
    scope_filter,
)
from metrics.kpis.details import (
    BacklogDetail,
    MeanBeside,
    ResolutionDetail,
    SlaDetail,
    TicketsCreatedDetail,
    TicketsSolvedDetail,
)
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, VALUE, Drill, Part, dataset_part
from metrics.kpis.retention import _active_during
from metrics.kpis.shared import (
    ACTIVITY,
    BACKLOG_DELTAS,
    BACKLOG_NOW,
    COMPLAINTS,
    SLA_REPLY,
    SLA_RESOLUTION,
    SOLVE_TIMES,
    TICKET_SCOPES,
    TICKETS_CREATED,
    TICKETS_REPLIED,
    TICKETS_SOLVED,
    UNSOLVED,
    customer_activity,
    customer_activity_at,
    live,
)
from metrics.periods import Period

LIVE_TICKET = live("customer__") & Q(is_spam=False)
SOLVED = LIVE_TICKET & Q(status__in=[Ticket.Status.SOLVED, Ticket.Status.CLOSED], solved_at__isnull=False)
SERVICE_CHART = Chart(
    "chart-service", _("Ticket times and SLA"), "lines", order=70, y_title=_("hours"), y2_title=_("SLA %")
)
SERVICE_EXCLUSIONS = _(
    "spam tickets and tickets of merged duplicates or internal/test customers are excluded"
)


def _tickets(user: User) -> QuerySet:
    return ticket_list(user=user)


TICKETS_CREATED_KPI = Kpi(
    code="tickets_created",
    family=Family.SERVICE,
    label=_("Tickets created"),
    unit=Unit.COUNT,
    better=Better.NEUTRAL,
    formula=_("tickets opened in the period; details: how many of them still have no reply"),
    compute=measure(TICKETS_CREATED, "created", extra={"unreplied": "unreplied"}),
    exclusions=SERVICE_EXCLUSIONS,
    detail=TicketsCreatedDetail,
    significance=Significance.COUNT,
    min_sample=MIN_EVENTS,
)

TICKETS_SOLVED_KPI = Kpi(
    code="tickets_solved",
    family=Family.SERVICE,
    label=_("Tickets solved"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("tickets whose latest solve falls in the period and that are still solved or closed"),
    compute=measure(TICKETS_SOLVED, "solved", extra={"reopened": "reopened"}),
    exclusions=SERVICE_EXCLUSIONS,
    detail=TicketsSolvedDetail,
    significance=Significance.COUNT,
    min_sample=MIN_EVENTS,
)

FRT_MEDIAN = Kpi(
    code="frt_median",
    family=Family.SERVICE,
    label=_("First response time (median)"),
    unit=Unit.HOURS,
    better=Better.DOWN,
    formula=_(
        "median of first public reply − creation, in calendar hours, over tickets first answered in the "
        "period"
    ),
    compute=measure(TICKETS_REPLIED, "frt_median", sample="replied", extra={"mean": "frt_mean"}),
    exclusions=SERVICE_EXCLUSIONS,
    detail=MeanBeside,
    plots=(Plot(SERVICE_CHART, label=_("First response (median)")),),
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE}),
    question=Question.SERVICE,
)

FRT_P90 = Kpi(
    code="frt_p90",
    family=Family.SERVICE,
    label=_("First response time (90th percentile)"),
    unit=Unit.HOURS,
    better=Better.DOWN,
    formula=_(
        "90th percentile of first public reply − creation, in calendar hours, over tickets first answered "
        "in the period"
    ),
    compute=measure(TICKETS_REPLIED, "frt_p90", sample="replied"),
    exclusions=SERVICE_EXCLUSIONS,
    min_sample=MIN_EVENTS,
)

RESOLUTION_MEDIAN = Kpi(
    code="resolution_median",
    family=Family.SERVICE,
    label=_("Resolution time (median)"),
    unit=Unit.HOURS,
    better=Better.DOWN,
    formula=_(
        "median of latest solve − creation (full resolution), in calendar hours, over tickets solved in the "
        "period; details: median first resolution"
    ),
    compute=measure(
        SOLVE_TIMES, "res_median", sample="solved", extra={"first_resolution_median": "first_res_median"}
    ),
    exclusions=SERVICE_EXCLUSIONS,
    detail=ResolutionDetail,
    plots=(Plot(SERVICE_CHART, label=_("Resolution (median)")),),
    min_sample=MIN_EVENTS,
)

RESOLUTION_P90 = Kpi(
    code="resolution_p90",
    family=Family.SERVICE,
    label=_("Resolution time (90th percentile)"),
    unit=Unit.HOURS,
    better=Better.DOWN,
    formula=_(
        "90th percentile of latest solve − creation, in calendar hours, over tickets solved in the period"
    ),
    compute=measure(SOLVE_TIMES, "res_p90", sample="solved"),
    exclusions=SERVICE_EXCLUSIONS,
    min_sample=MIN_EVENTS,
)


class Sla:
    """SLA attainment: first-response and resolution targets met ÷ those met or breached in the period,
    from the four SLA datasets; while a week or month runs, compared with the same elapsed days of the
    period before (KPIS.md §10.1)."""

    day_datasets = (*SLA_REPLY, *SLA_RESOLUTION)

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        data = [grouped(ctx, ds) for ds in self.day_datasets]
        keys = {key for found in data for key in found}

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            key = (period.granularity, period.first_day, scope, scope_id)
            return self.row(*(found.get(key, {}) for found in data))

        return rows_from(ctx, kpi, {key: {} for key in keys}, fn)

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple:
        return self.row(*(at.days(ds) for ds in self.day_datasets))[:4]

    @staticmethod
    def row(reply_met: Mapping, reply_breached: Mapping, res_met: Mapping, res_breached: Mapping) -> tuple:
        reply = int(reply_met.get("met") or 0), int(reply_breached.get("breached") or 0)
        res = int(res_met.get("met") or 0), int(res_breached.get("breached") or 0)
        met, targets = Decimal(reply[0] + res[0]), Decimal(sum(reply) + sum(res))
        extra = SlaDetail(first_response=(reply[0], sum(reply)), resolution=(res[0], sum(res)))
        return divide(met, targets, HUNDRED), met, targets, int(targets), extra


def _sla_targets(period: Period, done: str, due: str) -> tuple[Q, Q]:
    """(met, met or breached) in the period, for one target of a ticket (first response or resolution):
    met when completed in the period by its due time, breached when it fell due in the period without
    being completed in time (as the SLA datasets count them)."""
    met = Q(**{f"{done}__lte": F(due), f"{done}__gte": period.start, f"{done}__lt": period.end})
    breached = Q(
        Q(**{f"{done}__isnull": True}) | Q(**{f"{done}__gt": F(due)}),
        **{f"{due}__gte": period.start, f"{due}__lt": period.end, f"{due}__lte": timezone.now()},
    )
    return met, met | breached


SLA_TARGETS = (("first_response_at", "first_response_due_at"), ("first_solved_at", "resolution_due_at"))


def _sla_tickets(kind: int) -> Any:
    """Tickets with a target met (``kind`` 0) or met or breached (1) in the period."""

    def records(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
        either = Q()
        for done, due in SLA_TARGETS:
            either |= _sla_targets(period, done, due)[kind]
        return _tickets(user).filter(LIVE_TICKET, either, scope_filter(scope, scope_id, TICKET_SCOPES))

    return records


def _sla_count(kind: int) -> Any:
    """The targets the tickets make: a ticket counts once for each of its two targets that qualifies."""

    def total(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
        counts = [
            records.order_by().filter(_sla_targets(period, done, due)[kind]).count()
            for done, due in SLA_TARGETS
        ]
        return sum(counts)

    return total


SLA_ATTAINMENT = Kpi(
    code="sla_attainment",
    family=Family.SERVICE,
    label=_("SLA attainment"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "SLA targets (first response and resolution, per priority) met ÷ targets met or breached in the "
        "period; "
        "a met target counts when it is completed, a breached one when its due time passes; targets still "
        "running are left out"
    ),
    compute=Sla(),
    exclusions=SERVICE_EXCLUSIONS,
    drill=Drill(
        {
            NUMERATOR: Part(_sla_tickets(0), NUMERATOR, _sla_count(0), _("Tickets with a target met")),
            DENOMINATOR: Part(
                _sla_tickets(1), DENOMINATOR, _sla_count(1), _("Tickets with a target met or breached")
            ),
        }
    ),
    detail=SlaDetail,
    plots=(Plot(SERVICE_CHART, axis="y2", label=_("SLA attainment")),),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE}),
    question=Question.SERVICE,
)


def _net_change(ctx: Context) -> Any:
    """A period's tickets created − solved (the backlog's details)."""
    created, solved = grouped(ctx, TICKETS_CREATED), grouped(ctx, TICKETS_SOLVED)

    def details(period: Period, scope: str, scope_id: str) -> BacklogDetail:
        key = (period.granularity, period.first_day, scope, scope_id)
        net = int(created.get(key, {}).get("created") or 0) - int(solved.get(key, {}).get("solved") or 0)
        return BacklogDetail(net_change=net)

    return details


def _unsolved_at_end(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The tickets unsolved at the end of ``period``: their last status change before it was to an unsolved
    status. A ticket whose status has not changed since then still has that status: only the tickets
    changed after the end are looked up in the history (for a manager at 10 M deals, looking up every
    ticket not closed took 9 s)."""
    tickets = _tickets(user).filter(LIVE_TICKET, scope_filter(scope, scope_id, TICKET_SCOPES))
    if period.end > timezone.now():
        # A running period: the status now is the status at its end (the unsolved ones, by their index).
        return tickets.filter(status__in=UNSOLVED)
    last = TicketStatusChange.objects.filter(ticket=OuterRef("pk"), at__lt=period.end).order_by("-at", "-id")
    changed_since = TicketStatusChange.objects.filter(at__gte=period.end).values("ticket_id")
    return (
        # Closed is final: a ticket closed before the end was not unsolved then, nor one created after it.
        # Leaving those out first spares the status lookup for nearly every ticket ever (0.6 s at 370 000).
        tickets.filter(
            ~Q(status=Ticket.Status.CLOSED) | Q(closed_at__gte=period.end), created_at__lt=period.end
        )
        .alias(status_at_end=Subquery(last.values("to_status")[:1]))
        .filter(
            Q(status__in=UNSOLVED) & ~Q(pk__in=changed_since)
            | Q(pk__in=changed_since) & Q(status_at_end__in=UNSOLVED)
        )
    )


BACKLOG = Kpi(
    code="backlog",
    family=Family.SERVICE,
    label=_("Ticket backlog"),
    unit=Unit.COUNT,
    better=Better.DOWN,
    formula=_(
        "tickets unsolved (new, open or pending) at the end of the period, from the status history; details: "
        "created − solved in the period"
    ),
    compute=Stocked(BACKLOG_DELTAS, BACKLOG_NOW, "backlog", details=_net_change),
    basis=Basis.STOCK,
    exclusions=SERVICE_EXCLUSIONS,
    drill=Drill({NUMERATOR: Part(_unsolved_at_end, VALUE, label=_("Unsolved at the end of the period"))}),
    detail=BacklogDetail,
)


class ComplaintRate:
    """Complaint tickets opened in the period per 100 customers active at some time in it; while a week or
    month runs, compared with the same elapsed days of the period before (KPIS.md §10.1): the complaints
    of those days per customer active at its start or becoming active in those days."""

    day_datasets = (COMPLAINTS, ACTIVITY)

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        complaints, active = grouped(ctx, COMPLAINTS), customer_activity(ctx)

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            key = (period.granularity, period.first_day, scope, scope_id)
            return self.row(
                dec(complaints.get(key, {}).get("complaints")), active.get(key, {}).get("during", 0)
            )

        return rows_from(ctx, kpi, {key: {} for key in {*complaints, *active}}, fn)

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        active = customer_activity_at(ctx, at)
        if active is None:
            return None
        return self.row(dec(at.days(COMPLAINTS).get("complaints")), active["during"])[:4]

    @staticmethod
    def row(complaints: Decimal, active: Any) -> tuple:
        den = Decimal(active)
        return divide(complaints, den, HUNDRED), complaints, den, int(den), None


COMPLAINT_RATE = Kpi(
    code="complaint_rate",
    family=Family.SERVICE,
    label=_("Complaint rate"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_(
        "complaint tickets opened in the period per 100 customers active at some time in the period "
        "(by the customer's account owner)"
    ),
    compute=ComplaintRate(),
    exclusions=SERVICE_EXCLUSIONS,
    drill=Drill(
        {
            NUMERATOR: dataset_part(COMPLAINTS, "complaints", NUMERATOR, label=_("Complaint tickets")),
            DENOMINATOR: Part(_active_during, DENOMINATOR, label=_("Customers active in the period")),
        }
    ),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
)

# The datasets these KPIs read.
DATASETS = [
    TICKETS_CREATED,
    COMPLAINTS,
    TICKETS_SOLVED,
    SOLVE_TIMES,
    TICKETS_REPLIED,
    *SLA_REPLY,
    *SLA_RESOLUTION,
    BACKLOG_DELTAS,
    BACKLOG_NOW,
    ACTIVITY,
]

KPIS = [
    TICKETS_CREATED_KPI,
    TICKETS_SOLVED_KPI,
    FRT_MEDIAN,
    FRT_P90,
    RESOLUTION_MEDIAN,
    RESOLUTION_P90,
    SLA_ATTAINMENT,
    BACKLOG,
    COMPLAINT_RATE,
]
