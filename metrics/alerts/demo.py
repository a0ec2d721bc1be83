"""The alerts' story in the demo (KPIS.md §10.8, issue 20 item 8), after the bulk load.

- **An incident week.** In the last complete week before ``until`` an update broke the sync: about two and
  a half times the usual tickets came in ("Sync fails since the update"), from as many customers, each
  answered within hours and solved within two days. Tickets created that week lie far above the control
  limits of the last twelve weeks: the first recompute raises the anomaly alert, with the team whose
  customers wrote most as the sentence's biggest contributor.
- **Targets off pace.** Stretch targets of revenue won for the running week, month and quarter for the
  company, and for this month for the demo rep (rep1): 40 % above the usual (the mean of the three periods
  before) or above the pace so far, whichever is higher. The demo's history has ended, so the pace only
  falls from here: once a fifth of a period has gone its projection misses the target and an alert says so
  — the managers' list shows the company's, rep1's own numbers page shows theirs.

Targets are the metrics app's rows and the CRM never imports metrics, so the story lives here:
``MetricsConfig.ready()`` registers it in ``crm.demo_stories`` and ``crm.demo.seeding.seed`` runs it once the
CRM's own demo data is in, in the seed's transaction.
"""

import random
from datetime import timedelta
from decimal import Decimal

from django.db.models import Q, Sum
from django.utils import timezone, translation

from accounts.models import User
from crm.demo.config import SeedConfig
from crm.demo.world import TICKET_SUBJECTS, _t
from crm.models import Customer, Deal, SlaPolicy, Ticket, TicketStatusChange
from metrics.kpis.sales import REVENUE_WON
from metrics.models import KpiTarget, Scope
from metrics.periods import Period, local_midnight, period_of

# The incident: this many times the usual weekly tickets on top, at least this many.
INCIDENT_FACTOR = 1.5
INCIDENT_AT_LEAST = 15
USUAL_WEEKS = 8
# Targets this much above the usual revenue of a period (the mean of the periods before) or the pace so far.
TARGET_FACTOR = Decimal("1.4")
USUAL_PERIODS = 3
COMPANY_TARGETS = ("week", "month", "quarter")
DEMO_REP = "rep1"
LIVE = Q(customer__is_internal=False, customer__merged_into__isnull=True)


def seed_alert_story(config: SeedConfig) -> dict[str, int]:
    """Write the incident week's tickets (their texts in the demo's language) and the targets off pace;
    rows written per table."""
    rng = random.Random(f"{config.seed}:alerts")
    with translation.override(config.language):
        tickets = _incident(rng, period_of(config.until, "week").previous())
    targets = _targets()
    return {"crm_ticket": tickets, "metrics_kpitarget": targets}


def _incident(rng: random.Random, week: Period) -> int:
    """The incident week's extra tickets, with their status changes (new, open, solved)."""
    before = week.previous(USUAL_WEEKS)
    usual = Ticket.objects.filter(
        LIVE, is_spam=False, created_at__gte=before.start, created_at__lt=week.start
    )
    extra = max(INCIDENT_AT_LEAST, round(INCIDENT_FACTOR * usual.count() / USUAL_WEEKS))
    customers = list(
        Customer.objects.filter(
            status=Customer.Status.ACTIVE,
            is_internal=False,
            merged_into__isnull=True,
            created_at__lt=week.start,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    agents = list(User.objects.filter(role=User.Role.AGENT, is_active=True).order_by("pk"))
    if not customers or not agents:
        return 0
    policy = SlaPolicy.objects.filter(priority=Ticket.Priority.HIGH).first()
    subject = _t(TICKET_SUBJECTS["problem"][1])
    rows, changes = [], []
    for customer in rng.sample(customers, min(extra, len(customers))):
        # Working days, business hours: Monday to Friday, 8:00 to 17:00.
        created = local_midnight(week.first_day + timedelta(days=rng.randrange(5))) + timedelta(
            hours=8, minutes=rng.randrange(9 * 60)
        )
        answered = created + timedelta(minutes=rng.randint(20, 240))
        solved = answered + timedelta(hours=rng.randint(4, 40))
        agent = rng.choice(agents)
        rows.append(
            Ticket(
                customer_id=customer,
                assignee=agent,
                subject=subject,
                priority=Ticket.Priority.HIGH,
                status=Ticket.Status.SOLVED,
                category="problem",
                channel=Ticket.Channel.EMAIL,
                created_at=created,
                updated_at=solved,
                first_response_at=answered,
                first_solved_at=solved,
                solved_at=solved,
                first_response_due_at=created + timedelta(hours=policy.first_response_hours)
                if policy
                else None,
                resolution_due_at=created + timedelta(hours=policy.resolution_hours) if policy else None,
            )
        )
        changes.append(
            [("", "new", created, None), ("new", "open", answered, agent), ("open", "solved", solved, agent)]
        )
    Ticket.objects.bulk_create(rows)
    TicketStatusChange.objects.bulk_create(
        TicketStatusChange(ticket=ticket, from_status=a, to_status=b, at=at, by=by)
        for ticket, steps in zip(rows, changes, strict=True)
        for a, b, at, by in steps
    )
    return len(rows)


def _targets() -> int:
    """Revenue-won targets off pace for the running periods: the company's, and the demo rep's month."""
    now = timezone.now()
    rep = User.objects.filter(username=DEMO_REP, is_active=True).first()
    wanted = [(g, Scope.COMPANY, "", LIVE) for g in COMPANY_TARGETS]
    if rep is not None:
        wanted.append(("month", Scope.USER, str(rep.pk), LIVE & Q(owner=rep)))
    written = 0
    for granularity, scope, scope_id, deals in wanted:
        current = period_of(now, granularity)
        usual = sum(_revenue(deals, current.previous(steps)) for steps in range(1, USUAL_PERIODS + 1))
        elapsed = Decimal((now - current.start) / (current.end - current.start))
        # The pace so far, once it says something (a fifth of the period, as the alerts read it).
        pace = _revenue(deals, current) / elapsed if elapsed >= Decimal("0.2") else Decimal(0)
        target = (TARGET_FACTOR * max(usual / USUAL_PERIODS, pace)).quantize(Decimal(1))
        if target <= 0:
            continue
        KpiTarget.objects.update_or_create(
            kpi=REVENUE_WON.code,
            granularity=granularity,
            period_start=current.start,
            scope=scope,
            scope_id=scope_id,
            defaults={"value": target},
        )
        written += 1
    return written


def _revenue(deals: Q, period: Period) -> Decimal:
    won = Deal.objects.filter(
        deals, status=Deal.Status.WON, closed_at__gte=period.start, closed_at__lt=period.end
    )
    return won.aggregate(total=Sum("amount"))["total"] or Decimal(0)
