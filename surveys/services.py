"""Every write of the surveys app: scheduling, throttling and sending invitations, answers, opt-outs.

Throttling happens at send time, inside the send (KPIS.md §9.2 item 7): a send that must not happen is
stored as ``status=suppressed`` with its reason, so response rates stay auditable. Sends are serialised
per customer by a transaction-scoped advisory lock, so two workers cannot both pass the cooldown.
"""

import logging
import secrets
import smtplib
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.models import UsageEvent, User
from accounts.services import usage_record
from crm.automation import builtins
from crm.automation.events import automation_emit
from crm.automation.models import note
from crm.models import Activity, AutomationRule, Customer, Ticket, WebhookSubscription
from crm.services import activity_log
from crm.webhooks.services import webhook_emit
from surveys import emails, selectors
from surveys.defaults import DEFAULT_SURVEYS, SCALES
from surveys.models import (
    COMMENT_MAX_LENGTH,
    TEXT_FIELDS,
    TEXT_SUFFIX,
    Survey,
    SurveyCampaign,
    SurveyInvitation,
    SurveyResponse,
    SurveySuppression,
)

logger = logging.getLogger(__name__)

Status = SurveyInvitation.Status
Reason = SurveyInvitation.Reason
SOLVED = (Ticket.Status.SOLVED, Ticket.Status.CLOSED)
# Advisory-lock namespaces (pg_advisory_xact_lock(namespace, id)): per-customer sends, the daily trickle.
CUSTOMER_LOCK = zlib.crc32(b"surveys.customer_send") & 0x7FFFFFFF
TRICKLE_LOCK = zlib.crc32(b"surveys.nps_trickle") & 0x7FFFFFFF
SEND_BATCH = 500
SURVEY_FIELDS = (
    "is_active",
    "delay_hours",
    "response_window_days",
    "cadence_days",
    *(f"{name}_{suffix}" for name in TEXT_FIELDS for suffix in TEXT_SUFFIX.values()),
)


class SurveyUnavailable(Exception):
    """The link cannot take this answer; ``state`` is "answered", "expired" or "closed"."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(state)


@dataclass
class SendResult:
    sent: int = 0
    suppressed: int = 0

    def add(self, invitation: SurveyInvitation | None) -> None:
        if invitation is None:
            return
        if invitation.status == Status.SUPPRESSED:
            self.suppressed += 1
        elif invitation.status == Status.SENT:
            self.sent += 1


def _new_token() -> tuple[str, str]:
    """A 256-bit URL-safe token and its hash; only the hash is ever stored."""
    token = secrets.token_urlsafe(32)
    return token, selectors.token_hash(token=token)


def _lock(namespace: int, key: int) -> None:
    """Wait for the transaction-scoped advisory lock (namespace, key); keys wrap into int4 (a rare clash
    only serialises two unrelated customers)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [namespace, key % 2_147_483_647])


def _internal_email(email: str) -> bool:
    domain = email.rpartition("@")[2].lower()
    return bool(domain) and domain in {d.lower() for d in settings.SURVEYS_INTERNAL_DOMAINS}


def _unreachable_reason(customer: Customer) -> str:
    """Why ``customer`` must never get a survey e-mail (the suppression list), or ""."""
    if customer.merged_into_id is not None:
        return Reason.MERGED
    if customer.is_internal or _internal_email(customer.email):
        return Reason.INTERNAL
    if not customer.email:
        return Reason.NO_EMAIL
    suppression = SurveySuppression.objects.filter(customer=customer).values_list("reason", flat=True).first()
    if suppression == SurveySuppression.Reason.BOUNCED:
        return Reason.BOUNCED
    if suppression:
        return Reason.UNSUBSCRIBED
    return ""


def _skip_reason(invitation: SurveyInvitation, now: datetime) -> str:
    """Why this scheduled send must not go out now, or "" (checked under the customer's lock)."""
    survey = invitation.survey
    if not survey.is_active:
        return Reason.SURVEY_INACTIVE
    if reason := _unreachable_reason(invitation.customer):
        return reason
    if invitation.ticket_id is not None:
        ticket = Ticket.objects.only("status", "is_spam").get(pk=invitation.ticket_id)
        if ticket.status not in SOLVED or ticket.is_spam:
            return Reason.REOPENED
    earlier = SurveyInvitation.objects.filter(
        customer_id=invitation.customer_id, sent_at__isnull=False
    ).exclude(pk=invitation.pk)
    if earlier.filter(
        survey__kind=survey.kind, sent_at__gt=now - timedelta(days=survey.cadence_days)
    ).exists():
        return Reason.CADENCE
    if earlier.filter(sent_at__gt=now - timedelta(days=settings.SURVEYS_COOLDOWN_DAYS)).exists():
        return Reason.COOLDOWN
    return ""


def _suppress(invitation: SurveyInvitation, reason: str) -> SurveyInvitation:
    invitation.status = Status.SUPPRESSED
    invitation.suppression_reason = reason
    invitation.save(update_fields=["status", "suppression_reason"])
    return invitation


# Sending
# ---------------------------------------------------------------------------------------------------------


def invitation_send(*, invitation_id: int, now: datetime | None = None) -> SurveyInvitation | None:
    """Send one scheduled invitation, or store it as suppressed with the reason; idempotent.

    Only a ``scheduled`` invitation is touched: for any other, or one being sent by another worker at
    this moment, nothing happens and None is returned. A refused recipient marks the address as
    bounced. Other mail errors propagate with nothing written, so the invitation stays scheduled and
    is retried.
    """
    now = now or timezone.now()
    try:
        return _send(invitation_id, now)
    except smtplib.SMTPRecipientsRefused:
        return _mark_bounced(invitation_id, now)


def _locked_scheduled(invitation_id: int) -> SurveyInvitation | None:
    invitation = (
        SurveyInvitation.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("survey", "customer")
        .filter(pk=invitation_id)
        .first()
    )
    if invitation is None or invitation.status != Status.SCHEDULED:
        return None
    _lock(CUSTOMER_LOCK, invitation.customer_id)
    return invitation


@transaction.atomic
def _send(invitation_id: int, now: datetime) -> SurveyInvitation | None:
    invitation = _locked_scheduled(invitation_id)
    if invitation is None:
        return None
    if reason := _skip_reason(invitation, now):
        return _suppress(invitation, reason)
    customer = invitation.customer
    token, digest = _new_token()
    invitation.token_hash = digest
    invitation.email = customer.email
    invitation.language = customer.language
    invitation.sent_at = now
    invitation.expires_at = now + timedelta(days=invitation.survey.response_window_days)
    invitation.status = Status.SENT
    invitation.save(update_fields=["token_hash", "email", "language", "sent_at", "expires_at", "status"])
    # Sent inside the transaction: if the mail server fails, nothing is recorded and the send is retried.
    emails.invitation_email(invitation, token=token, reminder=False).send()
    return invitation


@transaction.atomic
def _mark_bounced(invitation_id: int, now: datetime) -> SurveyInvitation | None:
    invitation = _locked_scheduled(invitation_id)
    if invitation is None:
        return None
    suppression_add(customer=invitation.customer, reason=SurveySuppression.Reason.BOUNCED, now=now)
    return _suppress(invitation, Reason.BOUNCED)


def invitations_send_due(
    *, now: datetime | None = None, campaign: SurveyCampaign | None = None, limit: int = SEND_BATCH
) -> SendResult:
    """Send (or suppress) every scheduled invitation that is due, oldest first, each in its own transaction.

    Crash-safe: whatever is still scheduled is picked up by the next run.
    """
    now = now or timezone.now()
    due = SurveyInvitation.objects.filter(status=Status.SCHEDULED, scheduled_for__lte=now)
    if campaign is not None:
        due = due.filter(campaign=campaign)
    result = SendResult()
    for invitation_id in due.order_by("scheduled_for", "id").values_list("id", flat=True)[:limit]:
        result.add(invitation_send(invitation_id=invitation_id, now=now))
    return result


def reminders_send(*, now: datetime | None = None) -> int:
    """Send the one reminder to invitations not completed 3–5 days after sending; returns how many were sent.

    Reminders obey the suppression list (opt-out, bounce, internal) but not the cooldown.
    """
    now = now or timezone.now()
    due = SurveyInvitation.objects.filter(
        status__in=[Status.SENT, Status.OPENED, Status.PARTIAL],
        reminder_count=0,
        sent_at__lte=now - timedelta(days=settings.SURVEYS_REMINDER_AFTER_DAYS),
        sent_at__gt=now - timedelta(days=settings.SURVEYS_REMINDER_UNTIL_DAYS),
        expires_at__gt=now + timedelta(days=1),
    )
    sent = 0
    for invitation_id in due.order_by("sent_at", "id").values_list("id", flat=True)[:SEND_BATCH]:
        try:
            sent += _send_reminder(invitation_id, now)
        except smtplib.SMTPRecipientsRefused:
            invitation = SurveyInvitation.objects.select_related("customer").get(pk=invitation_id)
            suppression_add(customer=invitation.customer, reason=SurveySuppression.Reason.BOUNCED, now=now)
    return sent


@transaction.atomic
def _send_reminder(invitation_id: int, now: datetime) -> int:
    invitation = (
        SurveyInvitation.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("survey", "customer")
        .filter(pk=invitation_id, reminder_count=0, status__in=[Status.SENT, Status.OPENED, Status.PARTIAL])
        .first()
    )
    if invitation is None or _unreachable_reason(invitation.customer):
        return 0
    token, digest = _new_token()
    invitation.reminder_token_hash = digest
    invitation.reminder_count = 1
    invitation.last_reminder_at = now
    invitation.save(update_fields=["reminder_token_hash", "reminder_count", "last_reminder_at"])
    emails.invitation_email(invitation, token=token, reminder=True).send()
    return 1


def invitations_expire(*, now: datetime | None = None) -> int:
    """Mark unanswered invitations whose window has passed as expired (one UPDATE; idempotent)."""
    now = now or timezone.now()
    return SurveyInvitation.objects.filter(status__in=SurveyInvitation.AWAITING, expires_at__lte=now).update(
        status=Status.EXPIRED
    )


# Triggers
# ---------------------------------------------------------------------------------------------------------


def ticket_invitations_create(*, now: datetime | None = None) -> int:
    """Schedule the survey of each active ticket-solved survey for tickets solved at least its delay ago.

    Only tickets that are still solved or closed qualify (a ticket reopened within the delay is not,
    which cancels its survey), and only within ``SURVEYS_TICKET_SCAN_DAYS`` after the delay, so switching
    a survey on does not survey old tickets. ``UniqueConstraint(survey, ticket)`` makes reruns no-ops.
    """
    now = now or timezone.now()
    created = 0
    for survey in Survey.objects.filter(is_active=True, trigger=Survey.Trigger.TICKET_SOLVED):
        delay = timedelta(hours=survey.delay_hours)
        asked = SurveyInvitation.objects.filter(survey=survey, ticket=OuterRef("pk"))
        tickets = (
            Ticket.objects.filter(
                status__in=SOLVED,
                is_spam=False,
                solved_at__lte=now - delay,
                solved_at__gt=now - delay - timedelta(days=settings.SURVEYS_TICKET_SCAN_DAYS),
            )
            .exclude(Exists(asked))
            .values_list("id", "customer_id", "solved_at")
        )
        rows = [
            SurveyInvitation(
                survey=survey,
                customer_id=customer_id,
                ticket_id=ticket_id,
                trigger=Survey.Trigger.TICKET_SOLVED,
                created_at=now,
                scheduled_for=solved_at + delay,
            )
            for ticket_id, customer_id, solved_at in tickets
            if solved_at is not None  # always set (the filter above): narrows the nullable column
        ]
        created += len(SurveyInvitation.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True))
    return created


def ticket_surveys_run(*, now: datetime | None = None) -> SendResult:
    """The periodic ticket trigger: schedule due CES/CSAT invitations, then send everything due."""
    now = now or timezone.now()
    ticket_invitations_create(now=now)
    return invitations_send_due(now=now)


def nps_trickle_run(*, now: datetime | None = None) -> SendResult:
    """Today's share of the relationship NPS: about 1/cadence of the eligible customers, picked at random
    (fixed per day); a second run on the same day picks nobody new. Then sends everything due."""
    now = now or timezone.now()
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    for survey in Survey.objects.filter(is_active=True, trigger=Survey.Trigger.PERIODIC):
        with transaction.atomic():
            _lock(TRICKLE_LOCK, survey.pk)
            tenure = settings.SURVEYS_NPS_MIN_TENURE_DAYS
            population = selectors.nps_population(now=now, min_tenure_days=tenure).count()
            quota = selectors.nps_daily_quota(population=population, cadence_days=survey.cadence_days)
            done = SurveyInvitation.objects.filter(
                survey=survey, trigger=Survey.Trigger.PERIODIC, created_at__gte=day_start
            ).count()
            picks = selectors.nps_trickle_picks(
                survey=survey, now=now, day_start=day_start, min_tenure_days=tenure, limit=quota - done
            )
            SurveyInvitation.objects.bulk_create(
                [
                    SurveyInvitation(
                        survey=survey,
                        customer_id=customer_id,
                        trigger=Survey.Trigger.PERIODIC,
                        created_at=now,
                        scheduled_for=now,
                    )
                    for customer_id in picks
                ]
            )
    return invitations_send_due(now=now)


@transaction.atomic
def campaign_launch(
    *, survey: Survey, filters: dict[str, Any], actor: User, now: datetime | None = None
) -> SurveyCampaign:
    """Record a manual campaign and queue its sending (after commit); managers only."""
    from surveys.tasks import launch_survey_campaign

    if not actor.is_manager:
        raise PermissionDenied
    if survey.trigger == Survey.Trigger.TICKET_SOLVED:
        raise ValidationError({"survey": _("Surveys about a solved ticket cannot be sent as a campaign.")})
    if not survey.is_active:
        raise ValidationError({"survey": _("Switch the survey on before sending it.")})
    now = now or timezone.now()
    clean = {
        name: filters.get(name) for name in selectors.CAMPAIGN_FILTERS if filters.get(name) not in (None, "")
    }
    matched = selectors.campaign_customer_list(filters=clean).count()
    if not matched:
        raise ValidationError(_("No customer matches these filters."))
    campaign = SurveyCampaign.objects.create(
        survey=survey, filters=clean, matched=matched, created_by=actor, created_at=now
    )
    usage_record(user=actor, verb=UsageEvent.Verb.CREATE, obj=campaign, at=now)
    launch_survey_campaign.delay_on_commit(campaign.pk)
    return campaign


def campaign_run(*, campaign_id: int, now: datetime | None = None) -> SendResult:
    """Create one invitation per matching customer and send them; idempotent (a finished campaign is a
    no-op; ``UniqueConstraint(campaign, customer)`` keeps a rerun after a crash from inviting twice)."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = SurveyCampaign.objects.select_for_update().select_related("survey").get(pk=campaign_id)
        if campaign.status == SurveyCampaign.Status.DONE:
            return SendResult()
        customers = selectors.campaign_customer_list(filters=campaign.filters).values_list("id", flat=True)
        SurveyInvitation.objects.bulk_create(
            [
                SurveyInvitation(
                    survey=campaign.survey,
                    customer_id=customer_id,
                    campaign=campaign,
                    trigger=Survey.Trigger.MANUAL,
                    created_at=now,
                    scheduled_for=now,
                )
                for customer_id in customers.iterator(chunk_size=2000)
            ],
            batch_size=1000,
            ignore_conflicts=True,
        )
    result = SendResult()
    while True:
        batch = invitations_send_due(now=now, campaign=campaign)
        result.sent += batch.sent
        result.suppressed += batch.suppressed
        if batch.sent + batch.suppressed == 0:
            break
    SurveyCampaign.objects.filter(pk=campaign.pk).update(status=SurveyCampaign.Status.DONE, finished_at=now)
    return result


# Answers
# ---------------------------------------------------------------------------------------------------------


def link_state(invitation: SurveyInvitation, now: datetime) -> str:
    """What the link shows: "score", "comment", "answered", "expired" or "closed"."""
    if invitation.status in (Status.REVOKED, Status.SUPPRESSED, Status.SCHEDULED):
        return "closed"
    response = getattr(invitation, "response", None)
    if response is not None and response.finished:
        return "answered"
    if invitation.expires_at is None or now >= invitation.expires_at:
        return "expired"
    return "comment" if response is not None else "score"


def invitation_mark_opened(*, invitation: SurveyInvitation, now: datetime | None = None) -> None:
    """Record the first view of the link (sent → opened); later views change nothing. One UPDATE."""
    if invitation.opened_at is not None:
        return
    now = now or timezone.now()
    SurveyInvitation.objects.filter(pk=invitation.pk, opened_at__isnull=True).update(
        opened_at=now, status=Case(When(status=Status.SENT, then=Value(Status.OPENED)), default=F("status"))
    )


def _locked_for_answer(invitation_id: int) -> SurveyInvitation:
    return (
        SurveyInvitation.objects.select_for_update(of=("self",))
        .select_related("survey", "customer", "customer__owner", "ticket")
        .get(pk=invitation_id)
    )


@transaction.atomic
def response_submit_score(
    *, invitation_id: int, score: int, now: datetime | None = None
) -> tuple[SurveyResponse, bool]:
    """Save the score of an invitation's one response (status → partial); returns (response, created).

    Serialised by a row lock on the invitation, with the one-to-one on the response as the final
    guard: of two racing submits exactly one creates the response. A second submit while the comment is
    still open returns the existing response unchanged; after that, or past expiry, SurveyUnavailable.
    A low score creates one follow-up task for the account owner.
    """
    now = now or timezone.now()
    invitation = _locked_for_answer(invitation_id)
    state = link_state(invitation, now)
    if state == "comment":
        return invitation.response, False
    if state != "score":
        raise SurveyUnavailable(state)
    survey = invitation.survey
    if score not in survey.scores:
        raise ValidationError(
            {
                "score": _("Choose a score from %(low)s to %(high)s.")
                % {"low": survey.scale_min, "high": survey.scale_max}
            }
        )
    response = SurveyResponse(
        invitation=invitation,
        survey=survey,
        customer=invitation.customer,
        owner=invitation.customer.owner,
        agent_id=invitation.ticket.assignee_id if invitation.ticket else None,
        score=score,
        scale_min=survey.scale_min,
        scale_max=survey.scale_max,
        score_submitted_at=now,
        updated_at=now,
    )
    try:
        with transaction.atomic():
            response.save(force_insert=True)
    except IntegrityError as exc:
        raise SurveyUnavailable("answered") from exc
    invitation.status = Status.PARTIAL
    invitation.started_at = now
    invitation.opened_at = invitation.opened_at or now
    invitation.save(update_fields=["status", "started_at", "opened_at"])
    if survey.bucket(score) == "negative" and (
        rule := builtins.active(AutomationRule.Builtin.SURVEY_FOLLOW_UP)
    ):
        _follow_up(response, invitation, now, rule)
    automation_emit(
        trigger=AutomationRule.Trigger.SURVEY_ANSWERED,
        obj=invitation.customer,
        key=f"response:{response.pk}",
        event={"score": score, "survey_kind": survey.kind, "response": response.pk},
    )
    webhook_emit(
        event=WebhookSubscription.Event.SURVEY_RESPONSE_CREATED, data=lambda: _response_data(response)
    )
    return response, True


def _response_data(response: SurveyResponse) -> dict[str, Any]:
    """The answer as the API shows it (``surveys.api.ResponseOut``)."""
    from surveys.api import ResponseOut

    return ResponseOut.from_orm(response).model_dump(mode="json")


@transaction.atomic
def response_finish(*, invitation_id: int, comment: str, now: datetime | None = None) -> SurveyResponse:
    """Add the optional comment and finish the response (status → completed); a finished one is final."""
    now = now or timezone.now()
    comment = comment.strip()
    if len(comment) > COMMENT_MAX_LENGTH:
        raise ValidationError(
            {"comment": _("Please keep your comment under %(max)s characters.") % {"max": COMMENT_MAX_LENGTH}}
        )
    invitation = _locked_for_answer(invitation_id)
    state = link_state(invitation, now)
    if state != "comment":
        raise SurveyUnavailable("answered" if state == "score" else state)
    response = invitation.response
    response.comment = comment
    response.finished = True
    response.finished_at = now
    response.updated_at = now
    response.save(update_fields=["comment", "finished", "finished_at", "updated_at"])
    invitation.status = Status.COMPLETED
    invitation.completed_at = now
    invitation.save(update_fields=["status", "completed_at"])
    return response


def add_business_days(moment: datetime, days: int) -> datetime:
    """``moment`` moved forward by ``days`` working days (Monday–Friday), same local time of day."""
    local = timezone.localtime(moment)
    while days > 0:
        local += timedelta(days=1)
        if local.weekday() < 5:
            days -= 1
    return local


def _follow_up(
    response: SurveyResponse, invitation: SurveyInvitation, now: datetime, rule: AutomationRule
) -> None:
    """The closed loop: a task for the account owner (else the ticket's assignee), due in 2 business days.

    Written with the response in one transaction, so each low score gets exactly one task. The task is
    the system's doing, so its usage event is marked ``via=system`` and does not count as staff adoption.
    """
    customer = invitation.customer
    assignee = customer.owner or (invitation.ticket.assignee if invitation.ticket else None)
    if assignee is None:
        logger.warning("survey response %s: no owner or assignee for the follow-up task", response.pk)
        return
    survey = invitation.survey
    with translation.override(assignee.language):
        subject = _("Follow up on %(kind)s %(score)s/%(max)s from %(customer)s") % {
            "kind": survey.get_kind_display(),
            "score": response.score,
            "max": survey.scale_max,
            "customer": customer.name,
        }
        notes = _(
            "%(customer)s gave %(score)s out of %(max)s in the survey “%(survey)s”. "
            "Get in touch within two business days and find out what went wrong."
        ) % {
            "customer": customer.name,
            "score": response.score,
            "max": survey.scale_max,
            "survey": survey.name,
        }
    try:
        with transaction.atomic():
            task = activity_log(
                actor=assignee,
                customer=customer,
                kind=Activity.Kind.TASK,
                subject=subject[:200],
                notes=notes,
                ticket=invitation.ticket,
                due_at=add_business_days(now, 2),
                at=now,
                via=UsageEvent.Via.SYSTEM,
            )
    except (ValidationError, PermissionDenied) as exc:
        logger.exception("survey response %s: the follow-up task could not be created", response.pk)
        failed = [note(gettext_noop("The follow-up task could not be created: %(reason)s"), reason=exc)]
        builtins.ran(rule, obj=customer, key=f"response:{response.pk}", outcome=failed, status="failed")
        return
    response.followup_task = task
    response.save(update_fields=["followup_task"])
    outcome = [note(gettext_noop("Task created: %(task)s"), task=task.subject)]
    builtins.ran(rule, obj=customer, key=f"response:{response.pk}", outcome=outcome)


# Opt-outs, revocation and settings
# ---------------------------------------------------------------------------------------------------------


def suppression_add(
    *,
    customer: Customer,
    reason: str,
    invitation: SurveyInvitation | None = None,
    now: datetime | None = None,
) -> SurveySuppression:
    """Put a customer on the survey suppression list (unsubscribed or bounced); idempotent (the first
    reason stays)."""
    suppression, _created = SurveySuppression.objects.get_or_create(
        customer=customer,
        defaults={"reason": reason, "invitation": invitation, "created_at": now or timezone.now()},
    )
    return suppression


@transaction.atomic
def invitation_revoke(*, invitation: SurveyInvitation, actor: User) -> SurveyInvitation:
    """Close a link that has not been answered (managers only); the link then shows "closed"."""
    if not actor.is_manager:
        raise PermissionDenied
    current = SurveyInvitation.objects.select_for_update(of=("self",)).get(pk=invitation.pk)
    if current.status in (Status.PARTIAL, Status.COMPLETED, Status.SUPPRESSED, Status.REVOKED):
        raise ValidationError(_("Only a link that has not been answered can be revoked."))
    current.status = Status.REVOKED
    current.suppression_reason = Reason.MANAGER
    current.save(update_fields=["status", "suppression_reason"])
    usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=current)
    return current


def survey_update(*, survey: Survey, data: dict[str, Any], actor: User) -> Survey:
    """Change a survey's settings and texts (managers only); kind, scale and trigger stay fixed."""
    if not actor.is_manager:
        raise PermissionDenied
    unknown = set(data) - set(SURVEY_FIELDS)
    if unknown:
        raise TypeError(f"unknown survey fields: {sorted(unknown)}")
    for name, value in data.items():
        setattr(survey, name, value)
    survey.full_clean()
    try:
        with transaction.atomic():
            survey.save()
            usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=survey)
    except IntegrityError as exc:
        raise ValidationError(
            _("Another active survey of this kind is already sent automatically on this trigger.")
        ) from exc
    return survey


# Default surveys (the data migration 0002, the demo and the tests call it)
# ---------------------------------------------------------------------------------------------------------


def default_surveys_seed(apps: Any = None) -> None:
    """The surveys every installation starts with (surveys/defaults.py). Idempotent. ``apps``: a migration's
    historical models (default: today's)."""
    apps = apps or django_apps
    Survey = apps.get_model("surveys", "Survey")
    for name, kind, nps_type, trigger, window, cadence, active, texts in DEFAULT_SURVEYS:
        low, high, negative_max, positive_min = SCALES[kind]
        Survey.objects.get_or_create(
            name=name,
            defaults={
                "kind": kind,
                "nps_type": nps_type,
                "trigger": trigger,
                "scale_min": low,
                "scale_max": high,
                "higher_is_better": True,
                "negative_max": negative_max,
                "positive_min": positive_min,
                "delay_hours": 24,
                "response_window_days": window,
                "cadence_days": cadence,
                "is_active": active,
                **texts,
            },
        )
