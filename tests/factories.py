"""Plain ``make_<entity>(**overrides)`` test factories. They go through the services where one exists."""

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounts.models import Team, User
from accounts.services import user_create
from crm import services
from crm.models import Activity, Customer, Deal, Pipeline, PipelineStage, Ticket

_seq = itertools.count(1)


def make_team(**overrides: Any) -> Team:
    n = next(_seq)
    fields = {"name": f"Team {n}", "kind": Team.Kind.SALES, **overrides}
    return Team.objects.create(**fields)


def make_user(role: str = User.Role.REP, **overrides: Any) -> User:
    n = next(_seq)
    fields = {"username": f"user{n}", "password": "correct horse battery", "role": role, **overrides}
    return user_create(**fields)


def make_manager(**overrides: Any) -> User:
    return make_user(role=User.Role.MANAGER, **overrides)


def make_agent(**overrides: Any) -> User:
    if "team" not in overrides:  # not setdefault: that would make a team even when one is given
        overrides["team"] = make_team(kind=Team.Kind.SUPPORT)
    return make_user(role=User.Role.AGENT, **overrides)


def make_customer(
    owner: User | None = None,
    *,
    status: str = Customer.Status.ACTIVE,
    at: datetime | None = None,
    **overrides: Any,
) -> Customer:
    owner = owner or make_user()
    n = next(_seq)
    fields = {"name": f"Customer {n} GmbH", "email": f"contact{n}@example.com", "owner": owner, **overrides}
    return services.customer_create(actor=owner, status=status, at=at, **fields)


def stage(kind: str = PipelineStage.Kind.OPEN, order: int | None = None) -> PipelineStage:
    qs = PipelineStage.objects.filter(pipeline__is_default=True, kind=kind)
    if order is not None:
        qs = qs.filter(order=order)
    return qs.order_by("order").first()


def make_deal(
    customer: Customer | None = None,
    *,
    amount: Decimal | None = Decimal("1000"),
    at: datetime | None = None,
    **overrides: Any,
) -> Deal:
    customer = customer or make_customer()
    n = next(_seq)
    fields = {"title": f"Deal {n}", "amount": amount, **overrides}
    return services.deal_create(actor=customer.owner, customer=customer, at=at, **fields)


def make_ticket(
    customer: Customer | None = None,
    *,
    actor: User | None = None,
    at: datetime | None = None,
    **overrides: Any,
) -> Ticket:
    customer = customer or make_customer()
    actor = actor or customer.owner
    n = next(_seq)
    fields = {"subject": f"Ticket {n}", **overrides}
    return services.ticket_create(actor=actor, customer=customer, at=at, **fields)


def make_task(customer: Customer | None = None, **overrides: Any) -> Activity:
    customer = customer or make_customer()
    fields = {"kind": Activity.Kind.TASK, "subject": "Call back", "due_at": timezone.now(), **overrides}
    return services.activity_log(actor=customer.owner, customer=customer, **fields)


def make_admin(**overrides: Any) -> User:
    return make_user(role=User.Role.ADMIN, **overrides)


def make_pipeline(**overrides: Any) -> Pipeline:
    """A second, non-default pipeline with one open, one won and one lost stage."""
    n = next(_seq)
    pipeline = Pipeline.objects.create(**{"name": f"Pipeline {n}", **overrides})
    for name, order, probability, kind in (
        ("Start", 10, 20, PipelineStage.Kind.OPEN),
        ("Won", 90, 100, PipelineStage.Kind.WON),
        ("Lost", 99, 0, PipelineStage.Kind.LOST),
    ):
        PipelineStage.objects.create(
            pipeline=pipeline, name=name, order=order, probability=probability, kind=kind
        )
    return pipeline


def make_campaign(
    *,
    start: Any = None,
    end: Any = None,
    cost: Decimal | int = 0,
    actor: User | None = None,
    **overrides: Any,
) -> Any:
    """A campaign (through ``campaign_create``); by default one running the whole of 2026, free."""
    from datetime import date

    from crm.campaigns.services import campaign_create

    n = next(_seq)
    fields = {"name": f"Campaign {n}", "channel": "ads", **overrides}
    return campaign_create(
        actor=actor or make_manager(),
        start=start or date(2026, 1, 1),
        end=end or date(2026, 12, 31),
        cost=Decimal(cost),
        **fields,
    )


# Metrics: deals closed at a given time, usage and login events, spend and CRM cost inputs.
# ---------------------------------------------------------------------------------------------------------


def make_closed_deal(
    customer: Customer | None = None,
    *,
    won: bool = True,
    created: datetime | None = None,
    closed: datetime | None = None,
    amount: Decimal | None = Decimal("1000"),
    lost_reason: str = "Price too high",
    **overrides: Any,
) -> Deal:
    """A deal created at ``created`` and won (or lost) at ``closed``, with its stage history."""
    deal = make_deal(customer, amount=amount, at=created or closed, **overrides)
    kind = PipelineStage.Kind.WON if won else PipelineStage.Kind.LOST
    return services.deal_move_stage(
        deal=deal, stage=stage(kind), actor=deal.owner, at=closed, lost_reason="" if won else lost_reason
    )


def make_usage_event(
    user: User, at: datetime, *, via: str = "web", verb: str = "update", **overrides: Any
) -> Any:
    from accounts.models import UsageEvent

    fields = {"object_type": "customer", "object_id": 1, **overrides}
    return UsageEvent.objects.create(user=user, at=at, via=via, verb=verb, **fields)


def make_login(user: User, at: datetime) -> Any:
    from accounts.services import login_record

    return login_record(user=user, at=at)


def make_spend(month: Any, category: str, amount: Decimal | int, channel: str = "") -> Any:
    return services.spend_record(month=month, category=category, amount=Decimal(amount), channel=channel)


def make_crm_cost(start_month: Any, amount: Decimal | int, *, kind: str = "monthly", **overrides: Any) -> Any:
    from crm.models import CrmCostItem

    n = next(_seq)
    fields = {"name": f"Cost {n}", "kind": kind, "amount": Decimal(amount), "start_month": start_month}
    return CrmCostItem.objects.create(**{**fields, **overrides})


# Surveys: definitions, invitations with a known link token, answers.
# ---------------------------------------------------------------------------------------------------------


def make_survey(kind: str = "nps", *, trigger: str = "manual", **overrides: Any) -> Any:
    """A survey of ``kind`` with its kind's scale and short texts in both languages (manual by default)."""
    from surveys.models import Survey

    low, high, negative_max, positive_min = Survey.SCALES[kind]
    n = next(_seq)
    fields = {
        "name": f"Survey {n}",
        "kind": kind,
        "nps_type": "relationship" if kind == "nps" else "",
        "trigger": trigger,
        "scale_min": low,
        "scale_max": high,
        "negative_max": negative_max,
        "positive_min": positive_min,
        "response_window_days": 14,
        "cadence_days": 90 if kind == "nps" else 7,
        **{f"{name}_en": f"{name} in English about {{company}}" for name in _SURVEY_TEXTS},
        **{f"{name}_zh_hans": f"{name} 中文 {{company}}" for name in _SURVEY_TEXTS},
        **overrides,
    }
    return Survey.objects.create(**fields)


_SURVEY_TEXTS = (
    "question",
    "followup_negative",
    "followup_neutral",
    "followup_positive",
    "label_low",
    "label_high",
)


def make_invitation(
    survey: Any = None,
    customer: Customer | None = None,
    *,
    sent_at: datetime | None = None,
    status: str = "sent",
    **overrides: Any,
) -> Any:
    """A sent invitation whose raw link token is on ``.token`` (as if taken from the e-mail)."""
    import secrets
    from datetime import timedelta

    from surveys.models import SurveyInvitation
    from surveys.selectors import token_hash

    survey = survey or make_survey()
    customer = customer or make_customer()
    sent_at = sent_at or timezone.now()
    token = secrets.token_urlsafe(32)
    fields = {
        "survey": survey,
        "customer": customer,
        "trigger": survey.trigger,
        "status": status,
        "email": customer.email,
        "language": customer.language,
        "token_hash": token_hash(token=token),
        "created_at": sent_at,
        "scheduled_for": sent_at,
        "sent_at": sent_at,
        "expires_at": sent_at + timedelta(days=survey.response_window_days),
        **overrides,
    }
    invitation = SurveyInvitation.objects.create(**fields)
    invitation.token = token
    return invitation


def make_answer(
    survey: Any, customer: Customer, score: int, at: datetime, *, comment: str | None = None
) -> Any:
    """An invitation sent an hour before ``at`` and answered with ``score`` at ``at`` (through the services);
    with ``comment`` the comment step is finished too."""
    from datetime import timedelta

    from surveys import services as survey_services

    invitation = make_invitation(survey, customer, sent_at=at - timedelta(hours=1))
    response, _created = survey_services.response_submit_score(
        invitation_id=invitation.pk, score=score, now=at
    )
    if comment is not None:
        response = survey_services.response_finish(invitation_id=invitation.pk, comment=comment, now=at)
    return response


# Data quality: import jobs and duplicate pairs
# ---------------------------------------------------------------------------------------------------------


def make_import_job(
    user: User,
    content: bytes | str,
    *,
    kind: str = "customers",
    name: str = "import.csv",
    mapping: dict[str, str] | None = None,
    checked: bool = True,
    date_order: str = "dmy",
) -> Any:
    """An uploaded import (through the services); ``checked`` also maps it (the guessed or given mapping)
    and validates every row into the preview, as the mapping step does."""
    from crm.data import imports

    data = content.encode("utf-8") if isinstance(content, str) else content
    job = imports.import_job_create(actor=user, kind=kind, file_name=name, data=data)
    if checked:
        job = imports.import_job_set_mapping(
            job=job, actor=user, mapping=mapping or job.mapping, date_order=date_order
        )
    return job


def make_duplicate_pair(
    a: Customer, b: Customer, *, score: str = "0.900", reason: str = "email", status: str = "open"
) -> Any:
    from crm.models import DuplicateCandidate

    first, second = sorted((a, b), key=lambda c: c.pk)
    return DuplicateCandidate.objects.create(
        customer_a=first,
        customer_b=second,
        score=Decimal(score),
        reason=reason,
        status=status,
        found_at=timezone.now(),
    )


def make_webhook(owner: User, *, name: str = "Hook") -> tuple[Any, Any]:
    """A webhook with one delivery in its log, made directly (the service would resolve the host name)."""
    from crm.models import WebhookDelivery, WebhookSubscription

    webhook = WebhookSubscription.objects.create(
        name=name, url="https://hooks.example.com/crm", events=["deal.won"], secret="whsec_AA==",
        owner=owner, created_at=timezone.now(),
    )  # fmt: skip
    delivery = WebhookDelivery.objects.create(
        subscription=webhook,
        message_id=f"msg_{next(_seq)}",
        event="deal.won",
        payload={},
        created_at=timezone.now(),
    )
    return webhook, delivery


def make_alert(person: User | None = None, *, kpi: str = "win_rate", **overrides: Any) -> Any:
    """An active anomaly alert of last month, made directly (alerts are raised by the evaluation): about
    ``person``'s own numbers, or the company's."""
    from metrics.alerts.models import Alert
    from metrics.models import Scope
    from metrics.periods import period_of

    period = period_of(timezone.now(), "month").previous()
    now = timezone.now()
    fields = {
        "kpi": kpi,
        "granularity": period.granularity,
        "period_start": period.start,
        "period_end": period.end,
        "scope": Scope.USER if person is not None else Scope.COMPANY,
        "scope_id": str(person.pk) if person is not None else "",
        "kind": Alert.Kind.ANOMALY,
        "value": Decimal("12"),
        "sample_size": 40,
        "centre": Decimal("45"),
        "lower_limit": Decimal("30"),
        "upper_limit": Decimal("60"),
        "created_at": now,
        "raised_at": now,
        "updated_at": now,
        **overrides,
    }
    return Alert.objects.create(**fields)
