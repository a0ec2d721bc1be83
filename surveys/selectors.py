"""Every read of the surveys app. Access rules (DESIGN.md §6):

- survey answers: a rep sees those of the customers they own, an agent those given on tickets they may
  see (assigned to them or unassigned), managers and admins all of them;
- comments, invitations, campaigns and survey settings are for managers and admins only.
"""

import hashlib
import math
import re
from datetime import datetime, timedelta
from typing import Any

from django.db.models import CharField, Count, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import MD5, Cast, Coalesce, Concat

from accounts.models import User
from crm.models import Activity, Customer
from surveys.models import Survey, SurveyCampaign, SurveyInvitation, SurveyResponse, SurveySuppression

# token_urlsafe(32) gives 43 characters; anything far off that is not a token we issued.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
CAMPAIGN_FILTERS = ("status", "source", "segment", "owner")


def token_hash(*, token: str) -> str:
    """The SHA-256 (hex) under which a link token is stored; the token itself is never stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_by_token(*, token: str) -> SurveyInvitation | None:
    """The invitation whose e-mailed (or reminder) link carries ``token``; None for anything else.

    Read-only: looking a token up never writes, so probing with guessed tokens leaves no trace in the DB.
    """
    if not TOKEN_RE.match(token):
        return None
    digest = token_hash(token=token)
    return (
        SurveyInvitation.objects.select_related("survey", "customer", "response")
        .filter(Q(token_hash=digest) | Q(reminder_token_hash=digest))
        .first()
    )


def invitation_for_unsubscribe(*, invitation_id: int) -> SurveyInvitation | None:
    """The invitation named by a genuine (signed) unsubscribe token, with its customer."""
    return SurveyInvitation.objects.select_related("customer").filter(pk=invitation_id).first()


def survey_list() -> QuerySet[Survey]:
    """Every survey definition with its invitation and response counts (one query).

    Each count is a subquery an index answers alone. Two counts joined into one GROUP BY would pair every
    invitation of a survey with every answer to it: at 475 000 invitations that spilled tens of gigabytes
    to disk."""

    def counted(qs: QuerySet) -> Coalesce:
        return Coalesce(Subquery(qs.order_by().values("survey").annotate(n=Count("*")).values("n")), 0)

    sent = SurveyInvitation.objects.filter(survey=OuterRef("pk"), sent_at__isnull=False)
    return Survey.objects.annotate(
        invited=counted(sent),
        answered=counted(SurveyResponse.objects.filter(survey=OuterRef("pk"))),
    ).order_by("-is_active", "kind", "name")


def survey_response_list(*, user: User) -> QuerySet[SurveyResponse]:
    """Survey answers ``user`` may see: own customers' (rep), on visible tickets or about their own work
    (agent), all (manager)."""
    qs = SurveyResponse.objects.select_related("survey", "customer", "owner", "invitation")
    if user.is_manager:
        return qs
    if user.is_rep:
        return qs.filter(customer__owner=user)
    if user.is_agent:
        ticket = "invitation__ticket__"
        on_visible_ticket = Q(
            Q(**{f"{ticket}assignee": user}) | Q(**{f"{ticket}assignee__isnull": True}),
            invitation__ticket__isnull=False,
        )
        # And the answers about their own work, should the ticket have moved to someone else since.
        return qs.filter(on_visible_ticket | Q(agent=user))
    return qs.none()


def invitation_list(*, user: User) -> QuerySet[SurveyInvitation]:
    """Invitations with their customer and survey: managers and admins only."""
    if not user.is_manager:
        return SurveyInvitation.objects.none()
    return SurveyInvitation.objects.select_related("survey", "customer", "ticket", "response")


def invitation_funnel(*, invitations: QuerySet[SurveyInvitation]) -> dict[str, Any]:
    """Sent → opened → answered → completed, plus the sends skipped by reason (two queries; counting rows or
    ``created_at``, not ids, lets an index holding the columns answer them: ``surveyinv_created``).

    "answered" counts a submitted score (partial or finished); "opened" is inflated by mail scanners.
    """
    counts = invitations.order_by().aggregate(
        total=Count("*"),
        scheduled=Count("created_at", filter=Q(status=SurveyInvitation.Status.SCHEDULED)),
        sent=Count("created_at", filter=Q(sent_at__isnull=False)),
        opened=Count("created_at", filter=Q(opened_at__isnull=False)),
        answered=Count("created_at", filter=Q(started_at__isnull=False)),
        completed=Count("created_at", filter=Q(status=SurveyInvitation.Status.COMPLETED)),
        expired=Count("created_at", filter=Q(status=SurveyInvitation.Status.EXPIRED)),
        reminded=Count("created_at", filter=Q(reminder_count__gt=0)),
        suppressed=Count("created_at", filter=Q(status=SurveyInvitation.Status.SUPPRESSED)),
    )
    reasons = dict(SurveyInvitation.Reason.choices)
    by_reason = (
        invitations.order_by()
        .filter(status=SurveyInvitation.Status.SUPPRESSED)
        .values("suppression_reason")
        .annotate(n=Count("*"))
        .order_by("-n")
    )
    counts["suppressed_by_reason"] = [
        {
            "reason": row["suppression_reason"],
            "label": reasons.get(row["suppression_reason"], "—"),
            "n": row["n"],
        }
        for row in by_reason
    ]
    sent = counts["sent"]
    for name in ("opened", "answered", "completed"):
        counts[f"{name}_pct"] = round(100 * counts[name] / sent) if sent else None
    return counts


def open_followup_list(*, user: User) -> QuerySet[SurveyResponse]:
    """Low-score answers whose follow-up task is still open, oldest due first (managers see all)."""
    return (
        survey_response_list(user=user)
        # The task's kind too: then an index of the open tasks answers (activity_open_tasks_due).
        .filter(followup_task__kind=Activity.Kind.TASK, followup_task__done_at__isnull=True)
        .select_related("followup_task", "followup_task__user")
        .order_by("followup_task__due_at", "id")
    )


def campaign_list() -> QuerySet[SurveyCampaign]:
    """Campaigns, newest first, with how their invitations went (one query)."""
    status = SurveyInvitation.Status
    return (
        SurveyCampaign.objects.select_related("survey", "created_by")
        .annotate(
            invited=Count("invitations", filter=Q(invitations__sent_at__isnull=False)),
            skipped=Count("invitations", filter=Q(invitations__status=status.SUPPRESSED)),
            answered=Count("invitations", filter=Q(invitations__started_at__isnull=False)),
        )
        .order_by("-created_at", "-id")
    )


def campaign_customer_list(*, filters: dict[str, Any]) -> QuerySet[Customer]:
    """Customers a campaign with ``filters`` (status, source, segment, owner id) goes to; merged excluded."""
    qs = Customer.objects.filter(merged_into__isnull=True)
    lookups = {name: filters[name] for name in CAMPAIGN_FILTERS if filters.get(name) not in (None, "")}
    return qs.filter(**lookups)


def campaign_preview(*, filters: dict[str, Any]) -> dict[str, int]:
    """How many customers match, and how many of them can be e-mailed at all (one query).

    Cooldown and cadence are only known at send time, so "reachable" is an upper bound.
    """
    opted_out = SurveySuppression.objects.filter(customer=OuterRef("pk"))
    return campaign_customer_list(filters=filters).aggregate(
        matched=Count("id"),
        reachable=Count("id", filter=Q(is_internal=False) & ~Q(email="") & ~Q(Exists(opted_out))),
    )


def nps_population(*, now: datetime, min_tenure_days: int) -> QuerySet[Customer]:
    """Customers the relationship NPS trickle asks: active for ``min_tenure_days``, reachable, not opted
    out."""
    opted_out = SurveySuppression.objects.filter(customer=OuterRef("pk"))
    return Customer.objects.filter(
        status=Customer.Status.ACTIVE,
        became_customer_at__lte=now - timedelta(days=min_tenure_days),
        merged_into__isnull=True,
        is_internal=False,
    ).exclude(Q(email="") | Q(Exists(opted_out)))


def nps_trickle_picks(
    *, survey: Survey, now: datetime, day_start: datetime, min_tenure_days: int, limit: int
) -> list[int]:
    """Ids of up to ``limit`` customers to ask today, in a random order that is fixed for the day.

    Eligible: the population without anyone who got (or is about to get) an NPS invitation within the
    survey's cadence, so each customer is asked about once per cadence period, and without anyone
    already picked today (even if that send was skipped).
    """
    if limit <= 0:
        return []
    recent = SurveyInvitation.objects.filter(
        customer=OuterRef("pk"),
        survey__kind=Survey.Kind.NPS,
        created_at__gte=now - timedelta(days=survey.cadence_days),
    ).exclude(status__in=[SurveyInvitation.Status.SUPPRESSED, SurveyInvitation.Status.REVOKED])
    picked_today = SurveyInvitation.objects.filter(
        customer=OuterRef("pk"), survey=survey, trigger=Survey.Trigger.PERIODIC, created_at__gte=day_start
    )
    order = MD5(Concat(Cast("id", CharField()), Value(f":{day_start.date().isoformat()}:{survey.pk}")))
    return list(
        nps_population(now=now, min_tenure_days=min_tenure_days)
        .exclude(Exists(recent))
        .exclude(Exists(picked_today))
        .annotate(draw=order)
        .order_by("draw")
        .values_list("id", flat=True)[:limit]
    )


def nps_daily_quota(*, population: int, cadence_days: int) -> int:
    """Customers to ask per day so that everyone is asked once per cadence period."""
    return math.ceil(population / max(cadence_days, 1))
