"""Every read of the CRM's domain models. The ``*_list`` selectors apply the access rules (DESIGN.md §6):

- rep: the customers they own, and the deals, tickets and activities of those customers;
- agent: tickets assigned to them or unassigned, and (read-only) the customers of those tickets;
- manager and admin: everything.

Views fetch single objects with ``get_object_or_404(<model>_list(user=...), pk=...)`` so that a record the
user may not see is a 404.
"""

from django.db.models import Q, QuerySet

from accounts.models import User
from crm.models import Activity, Customer, Deal, PipelineStage, Ticket


def _agent_ticket_filter(user: User, prefix: str = "") -> Q:
    return Q(**{f"{prefix}assignee": user}) | Q(**{f"{prefix}assignee__isnull": True})


def customer_list(*, user: User, include_merged: bool = False) -> QuerySet[Customer]:
    """Customers ``user`` may see; merged duplicates are hidden unless asked for."""
    qs = Customer.objects.select_related("owner")
    if not include_merged:
        qs = qs.filter(merged_into__isnull=True)
    if user.is_manager:
        return qs
    if user.is_rep:
        return qs.filter(owner=user)
    if user.is_agent:
        visible_tickets = Ticket.objects.filter(_agent_ticket_filter(user)).values("customer_id")
        return qs.filter(pk__in=visible_tickets)
    return qs.none()


def deal_list(*, user: User) -> QuerySet[Deal]:
    """Deals ``user`` may see: those of their customers for a rep, all for managers, none for agents."""
    qs = Deal.objects.select_related("customer", "owner", "stage")
    if user.is_manager:
        return qs
    if user.is_rep:
        return qs.filter(customer__owner=user)
    return qs.none()


def ticket_list(*, user: User) -> QuerySet[Ticket]:
    """Tickets ``user`` may see: their customers' for a rep, assigned or unassigned for an agent."""
    qs = Ticket.objects.select_related("customer", "assignee")
    if user.is_manager:
        return qs
    if user.is_rep:
        return qs.filter(customer__owner=user)
    if user.is_agent:
        return qs.filter(_agent_ticket_filter(user))
    return qs.none()


def activity_list(*, user: User) -> QuerySet[Activity]:
    """Activities ``user`` may see: on their customers (rep); their own or on visible tickets (agent)."""
    qs = Activity.objects.select_related("customer", "user", "deal", "ticket")
    if user.is_manager:
        return qs
    if user.is_rep:
        return qs.filter(customer__owner=user)
    if user.is_agent:
        return qs.filter(Q(user=user) | Q(ticket__in=Ticket.objects.filter(_agent_ticket_filter(user))))
    return qs.none()


def task_list(*, user: User) -> QuerySet[Activity]:
    """Open tasks assigned to ``user`` (their own to-do list), soonest due first."""
    return (
        Activity.objects.select_related("customer")
        .filter(user=user, kind=Activity.Kind.TASK, done_at__isnull=True)
        .order_by("due_at", "id")
    )


def stage_list(*, pipeline_id: int | None = None) -> QuerySet[PipelineStage]:
    """Stages of one pipeline (the default one when not given), in board order."""
    qs = PipelineStage.objects.select_related("pipeline").order_by("order")
    if pipeline_id is None:
        return qs.filter(pipeline__is_default=True)
    return qs.filter(pipeline_id=pipeline_id)


def assignable_user_list() -> QuerySet[User]:
    """Active staff who can own customers and deals."""
    return User.objects.filter(is_active=True, is_service_account=False).order_by("first_name", "username")
