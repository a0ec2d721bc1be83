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
    overrides.setdefault("team", make_team(kind=Team.Kind.SUPPORT))
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
