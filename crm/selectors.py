"""Every read of the CRM's domain models. The ``*_list`` selectors apply the access rules (DESIGN.md §6):

- rep: the customers they own, and the deals, tickets and activities of those customers;
- agent: tickets assigned to them or unassigned, and (read-only) the customers of those tickets;
- manager and admin: everything.

Views fetch single objects with ``get_object_or_404(<model>_list(user=...), pk=...)`` so that a record the
user may not see is a 404.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, TypedDict

from django.contrib.postgres.search import TrigramSimilarity
from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Field,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import User
from crm import customer_data, normalize
from crm.custom_fields import kinds
from crm.custom_fields import query as custom_query
from crm.custom_fields import services as custom_fields
from crm.custom_fields.models import CustomField
from crm.customer_data import TimelineEntry
from crm.models import Activity, Customer, Deal, PipelineStage, Ticket, WebhookDelivery, WebhookSubscription


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


def my_day(*, user: User) -> dict[str, Any]:
    """A rep's open pipeline (their own open deals: count and total) and their open tasks (due today
    or earlier, overdue): two indexed aggregates, what the dashboard leads a rep's numbers with."""
    now = timezone.now()
    end_of_today = timezone.make_aware(datetime.combine(timezone.localdate() + timedelta(days=1), time.min))
    pipeline = (
        deal_list(user=user)
        .filter(status=Deal.Status.OPEN, owner=user)
        .aggregate(count=Count("*"), total=Sum("amount"))
    )
    tasks = task_list(user=user).aggregate(
        due=Count("id", filter=Q(due_at__lt=end_of_today)), overdue=Count("id", filter=Q(due_at__lt=now))
    )
    return {"open_deals": pipeline["count"], "open_total": pipeline["total"] or 0, **tasks}


def stage_list(*, pipeline_id: int | None = None) -> QuerySet[PipelineStage]:
    """Stages of one pipeline (the default one when not given), in board order."""
    qs = PipelineStage.objects.select_related("pipeline").order_by("order")
    if pipeline_id is None:
        return qs.filter(pipeline__is_default=True)
    return qs.filter(pipeline_id=pipeline_id)


def assignable_user_list() -> QuerySet[User]:
    """Active staff who can own customers and deals."""
    return User.objects.filter(is_active=True, is_service_account=False).order_by("first_name", "username")


# Searching, duplicates, timelines and history
# ---------------------------------------------------------------------------------------------------------


def customer_search(
    *, qs: QuerySet[Customer], q: str, also: Iterable[CustomField] = ()
) -> QuerySet[Customer]:
    """Filter customers by a free-text term: name (contains), e-mail or phone (normalised), and the text of
    the custom fields ``also`` names. Theirs is OR'd in only when there are some: without it the name,
    e-mail and phone indexes answer the search; with it the customers are scanned."""
    q = q.strip()
    if not q:
        return qs
    condition = Q(name__icontains=q) | Q(email_key__startswith=normalize.email_key(q))
    digits = "".join(ch for ch in q if ch.isdigit())
    if len(digits) >= 4:
        condition |= Q(phone_key__contains=digits.lstrip("0"))
    if (custom := custom_query.search_q(also, q)) is not None:
        condition |= custom
    return qs.filter(condition)


def customer_duplicate_candidates(
    *, name: str = "", email: str = "", phone: str = "", exclude_pk: int | None = None, limit: int = 5
) -> list[Customer]:
    """Existing customers that look like the one being entered: same e-mail or phone, or a very similar name.

    Not scoped to the user: the caller shows only what the user may see and counts the rest.
    """
    condition = Q()
    qs = Customer.objects.filter(merged_into__isnull=True).select_related("owner")
    if email_key := normalize.email_key(email):
        condition |= Q(email_key=email_key)
    if phone_key := normalize.phone_key(phone):
        condition |= Q(phone_key=phone_key)
    if len(name_key := normalize.name_key(name)) >= 3:
        # `%` (trigram_similar) narrows through the GIN index; the similarity bound makes it "very similar".
        qs = qs.annotate(name_similarity=TrigramSimilarity("name_key", name_key))
        condition |= Q(name_key=name_key) | Q(name_key__trigram_similar=name_key, name_similarity__gte=0.5)
    if not condition:
        return []
    qs = qs.filter(condition)
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return list(qs.order_by("name", "id")[:limit])


def customer_timeline(*, customer: Customer, user: User, limit: int = 50) -> list[TimelineEntry]:
    """Deals, tickets, activities and what other apps register (survey answers) of one customer that
    ``user`` may see, newest first."""
    entries: list[TimelineEntry] = [
        {"at": deal.created_at, "kind": "deal", "object": deal}
        for deal in deal_list(user=user).filter(customer=customer).order_by("-created_at")[:limit]
    ]
    entries += [
        {"at": ticket.created_at, "kind": "ticket", "object": ticket}
        for ticket in ticket_list(user=user).filter(customer=customer).order_by("-created_at")[:limit]
    ]
    entries += [
        {"at": activity.created_at, "kind": "activity", "object": activity}
        for activity in activity_list(user=user).filter(customer=customer).order_by("-created_at")[:limit]
    ]
    for source in customer_data.registered():
        entries += source.timeline(customer, user, limit)
    return sorted(entries, key=lambda entry: entry["at"], reverse=True)[:limit]


def record_history(*, obj: Customer | Deal | Ticket, limit: int = 30) -> list[dict]:
    """The audit trail of one record, newest first: who changed which field from what to what, and when.

    Each entry is ``{"at", "user", "changes": [{"field", "old", "new"}]}`` with display values (choice
    labels, related rows' names); the oldest entry is ``{"created": True}`` when the record's start is shown.
    """
    records = list(obj.history.select_related("history_user").order_by("-history_date", "-pk")[: limit + 1])
    shown = _displayed_fields(obj)
    entries = []
    for newer, older in pairwise(records):
        changes = [c for c in newer.diff_against(older).changes if c.field in shown]
        if changes:
            entries.append({"at": newer.history_date, "user": newer.history_user, "changes": changes})
    if records and len(records) <= limit:
        entries.append({"at": records[-1].history_date, "user": records[-1].history_user, "created": True})
    _display_changes(obj, entries)
    return entries


def _displayed_fields(obj) -> set[str]:
    return {f.name for f in obj._meta.concrete_fields if f.editable and not f.name.endswith("_key")}


def _display_changes(obj, entries: list[dict]) -> None:
    """Turn raw history changes into labelled display values; one query per related model. A change of
    the custom fields becomes one line per changed field, with its label (and the custom fields' two
    queries, only when one changed)."""
    fields = {f.name: f for f in obj._meta.concrete_fields}
    wanted: dict = {}
    custom = [c for entry in entries for c in entry.get("changes", []) if c.field == "custom"]
    shown = (
        custom_fields_shown(entity=obj._meta.model_name, values=[v for c in custom for v in (c.old, c.new)])
        if custom
        else None
    )
    for entry in entries:
        for change in entry.get("changes", []):
            if fields[change.field].is_relation:
                wanted.setdefault(fields[change.field].related_model, set()).update(
                    {change.old, change.new} - {None}
                )
    names = {
        model: {o.pk: str(o) for o in model._default_manager.filter(pk__in=ids)}
        for model, ids in wanted.items()
    }

    def display(field, value):
        if field.is_relation:
            return names.get(field.related_model, {}).get(value, value)
        if field.choices:
            return dict(field.flatchoices).get(value, value)
        return value

    for entry in entries:
        entry["changes"] = [
            line
            for c in entry.get("changes", [])
            for line in (
                shown.changes(c.old, c.new)
                if c.field == "custom" and shown is not None
                else [
                    {
                        "field": fields[c.field].verbose_name,
                        "old": display(fields[c.field], c.old),
                        "new": display(fields[c.field], c.new),
                    }
                ]
            )
        ]


@dataclass(frozen=True)
class CustomFieldsShown:
    """A record type's custom fields (archived ones too, so that old values keep their labels), to show
    stored values: each key's label and a value as a person reads it (users by name)."""

    fields: dict[str, CustomField]
    user_names: dict[int, str]

    def label(self, key: str) -> str:
        field = self.fields.get(key)
        return field.label if field is not None else key

    def value(self, key: str, value: Any) -> str:
        field = self.fields.get(key)
        if field is None:
            return "" if kinds.is_empty(value) else str(value)
        return kinds.display(field, value, user_names=self.user_names)

    def keys(self, *values: Mapping[str, Any] | None) -> list[str]:
        """The keys set in any of ``values``, in the fields' order (unknown keys last)."""
        order = {key: index for index, key in enumerate(self.fields)}
        present = {key for custom in values for key in (custom or {})}
        return sorted(present, key=lambda key: (order.get(key, len(order)), key))

    def changes(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """One ``{"field", "old", "new"}`` line per custom field whose value differs."""
        old, new = old or {}, new or {}
        return [
            {
                "field": self.label(key),
                "old": self.value(key, old.get(key)),
                "new": self.value(key, new.get(key)),
            }
            for key in self.keys(old, new)
            if old.get(key) != new.get(key)
        ]


def custom_fields_shown(*, entity: str, values: Iterable[Mapping[str, Any] | None] = ()) -> CustomFieldsShown:
    """The custom fields of ``entity`` ready to show ``values`` (custom dicts): one query for the fields,
    one for the names of the users that user fields among ``values`` hold (if any)."""
    fields = {f.key: f for f in custom_fields.fields_of(entity, active_only=False)}
    user_ids = {
        value
        for custom in values
        for key, value in (custom or {}).items()
        if key in fields
        and fields[key].kind == CustomField.Kind.USER
        and isinstance(value, int)
        and not isinstance(value, bool)
    }
    names = {user.pk: str(user) for user in User.objects.filter(pk__in=user_ids)} if user_ids else {}
    return CustomFieldsShown(fields=fields, user_names=names)


# When a deal was last touched: its last activity or stage move (``last_activity_at``), or any edit.
TOUCHED = Greatest("last_activity_at", "updated_at", "created_at")


def rots_at() -> ExpressionWrapper:
    """When a deal starts rotting (KPIS.md §10.7): last touched + its stage's rotting days. The board,
    the workspace and the rotting KPIs (metrics.kpis.shared.ROTTING_NOW) all read it."""
    rotting_days = ExpressionWrapper(
        F("stage__rotting_days") * Value(timedelta(days=1), output_field=DurationField()),
        output_field=DurationField(),
    )
    return ExpressionWrapper(TOUCHED + rotting_days, output_field=DateTimeField())


def deals_rotting(*, qs: QuerySet[Deal], now: datetime) -> QuerySet[Deal]:
    """The open deals of ``qs`` untouched for longer than their stage's rotting days, with ``touched``
    (when they were last touched) annotated."""
    return (
        qs.filter(status=Deal.Status.OPEN)
        .annotate(touched=TOUCHED)
        .alias(rots_at=rots_at())
        .filter(rots_at__lt=now)
    )


def mark_rotting(*, deals: Iterable[Deal], now: datetime) -> None:
    """Set ``idle_days`` and ``is_rotting`` on deals fetched with their stage (and ``touched``, if
    annotated), for the board's and the workspace's marks."""
    for deal in deals:
        touched = getattr(deal, "touched", None) or max(
            filter(None, (deal.last_activity_at, deal.updated_at, deal.created_at))
        )
        # Display attributes for the templates, not model fields.
        deal.idle_days = max(0, (now - touched).days)  # type: ignore[attr-defined]
        deal.is_rotting = (  # type: ignore[attr-defined]
            deal.status == Deal.Status.OPEN and now - touched > timedelta(days=deal.stage.rotting_days)
        )


def deal_board(
    *, user: User, stages: list[PipelineStage], per_stage: int = 20, now: datetime | None = None
) -> list[dict]:
    """A column per open stage: count and sum of the user's open deals, and the top ``per_stage`` deals
    (each marked when it is rotting).

    The sums come from the open-deals index alone; the cards from one index scan per stage.
    """
    deals = deal_list(user=user).filter(status=Deal.Status.OPEN)
    totals = {
        row["stage"]: row
        for row in deals.filter(stage__in=stages)
        .order_by()
        .values("stage")
        .annotate(count=Count("*"), total=Sum("amount"))
    }
    # One small query per stage (the number of stages, not of deals, bounds them), each an index scan.
    cards = {
        stage.pk: list(
            deals.filter(stage=stage).order_by(F("amount").desc(nulls_last=True), "id")[:per_stage]
        )
        for stage in stages
    }
    mark_rotting(deals=[deal for column in cards.values() for deal in column], now=now or timezone.now())
    return [
        {
            "stage": stage,
            "count": totals[stage.pk]["count"] if stage.pk in totals else 0,
            "total": (totals[stage.pk]["total"] if stage.pk in totals else None) or 0,
            "deals": cards.get(stage.pk, []),
        }
        for stage in stages
    ]


class StageTotals(TypedDict):
    """The open deals of one stage: the stage's id, how many, and their amounts summed (None: no amount)."""

    stage: int
    count: int
    total: Decimal | None


def open_deal_totals(*, user: User, mine_only: bool = False) -> dict[int, StageTotals]:
    """Count and sum of open deals per stage id (the user's own with ``mine_only``), from the index alone."""
    deals = deal_list(user=user).filter(status=Deal.Status.OPEN)
    if mine_only:
        deals = deals.filter(owner=user)
    return {
        row["stage"]: row
        for row in deals.order_by().values("stage").annotate(count=Count("*"), total=Sum("amount"))
    }


# List filters, shared by the list pages and their exports
# ---------------------------------------------------------------------------------------------------------


def by_owner(*, owner: User | QuerySet[User] | None, field: str = "owner") -> dict[str, Any]:
    """Filter arguments for an owner filter's value: one person, or everyone a typed name matched."""
    if owner is None:
        return {}
    return {f"{field}__in": owner} if isinstance(owner, QuerySet) else {field: owner}


def customer_filter(*, qs: QuerySet[Customer], data: dict) -> QuerySet[Customer]:
    """The customer list's search, filters and sort (``CustomerFilterForm.cleaned_data``, with its custom
    fields' filters and text fields)."""
    from crm.forms import CustomerFilterForm

    qs = customer_search(qs=qs, q=data.get("q") or "", also=data.get("custom_search") or ())
    filters = {f: data[f] for f in ("status", "source", "segment", "campaign") if data.get(f)}
    qs = custom_query.filtered(qs, data.get("custom") or ())
    return qs.filter(**filters, **by_owner(owner=data.get("owner"))).order_by(
        *CustomerFilterForm.SORTS[data.get("sort") or "name"]
    )


def _text_search(qs: QuerySet, q: str, paths: tuple[str, ...], custom: Iterable[CustomField]) -> QuerySet:
    """``qs`` narrowed to rows where any of ``paths`` or of the text-like ``custom`` fields contains ``q``."""
    q = q.strip()
    if not q:
        return qs
    condition = Q()
    for path in paths:
        condition |= Q(**{f"{path}__icontains": q})
    if (found := custom_query.search_q(custom, q)) is not None:
        condition |= found
    return qs.filter(condition)


def deal_filter(*, qs: QuerySet[Deal], data: dict) -> QuerySet[Deal]:
    """The deal list's search and filters (``DealFilterForm.cleaned_data``, with its custom fields'),
    newest first."""
    qs = _text_search(qs, data.get("q") or "", ("title", "customer__name"), data.get("custom_search") or ())
    qs = custom_query.filtered(qs, data.get("custom") or ())
    qs = qs.filter(
        **{f: data[f] for f in ("status", "stage", "campaign") if data.get(f)},
        **by_owner(owner=data.get("owner")),
    )
    if category := data.get("forecast_category"):
        # The deal's own category, else its stage's (Deal.effective_forecast_category).
        own = Q(forecast_category=category)
        qs = qs.filter(own | Q(forecast_category="", stage__forecast_category=category))
    return qs.order_by("-created_at", "-id")


def ticket_filter(*, qs: QuerySet[Ticket], data: dict) -> QuerySet[Ticket]:
    """The ticket list's search (subject, customer, text custom fields) and custom-field filters
    (``TicketFilterForm.cleaned_data``); the queue's order is kept."""
    qs = _text_search(qs, data.get("q") or "", ("subject", "customer__name"), data.get("custom_search") or ())
    return custom_query.filtered(qs, data.get("custom") or ())


TICKET_QUEUES = ("mine", "unassigned", "open", "all")


def ticket_queue(
    *, qs: QuerySet[Ticket], user: User, queue: str, status: str | None = None
) -> QuerySet[Ticket]:
    """One ticket queue (mine, unassigned, all open, all), optionally one status; soonest due first.

    "mine" and "unassigned" hold unsolved tickets only; an unknown queue or status is ignored.
    """
    if queue == "mine":
        qs = qs.filter(assignee=user, status__in=Ticket.UNSOLVED)
    elif queue == "unassigned":
        qs = qs.filter(assignee__isnull=True, status__in=Ticket.UNSOLVED)
    elif queue == "open":
        qs = qs.filter(status__in=Ticket.UNSOLVED)
    if status in Ticket.Status.values:
        qs = qs.filter(status=status)
    return qs.order_by("resolution_due_at", "-id")


def ticket_default_queue(*, user: User) -> str:
    return "open" if (user.is_manager or user.is_rep) else "mine"


# Pages that combine several reads
# ---------------------------------------------------------------------------------------------------------


def workspace_summary(*, user: User, now: datetime) -> dict[str, Any]:
    """The workspace's reads for ``user``: open deals per stage (a rep's own), unsolved ticket counts and the
    eight due soonest (a rep's customers', otherwise the user's own), open tasks, the user's latest
    activities and how many customers they see. The lists stay sliced querysets for the template."""
    totals = open_deal_totals(user=user, mine_only=user.is_rep)
    open_deals = [{**totals[stage.pk], "stage": stage} for stage in stage_list() if stage.pk in totals]
    tickets = ticket_list(user=user).filter(status__in=Ticket.UNSOLVED)
    my_tickets = tickets if user.is_rep else tickets.filter(assignee=user)
    tasks = task_list(user=user)
    return {
        "open_deals": open_deals,
        "open_deals_total": sum((row["total"] or 0) for row in open_deals),
        "open_deals_count": sum(row["count"] for row in open_deals),
        "ticket_counts": tickets.aggregate(
            mine=Count("id", filter=Q(assignee=user)),
            unassigned=Count("id", filter=Q(assignee__isnull=True)),
            breached=Count("id", filter=Q(resolution_due_at__lt=now)),
            total=Count("id"),
        ),
        "my_tickets": my_tickets.order_by("resolution_due_at", "id")[:8],
        "tasks": tasks[:10],
        "overdue_tasks": tasks.filter(due_at__lt=now).count(),
        "recent_activities": activity_list(user=user).filter(user=user).order_by("-created_at")[:8],
        **_my_rotting(user=user, now=now),
        "customer_count": customer_list(user=user).count(),
    }


def _my_rotting(*, user: User, now: datetime, shown: int = 8) -> dict[str, Any]:
    """The user's own rotting deals: how many, and the ``shown`` untouched longest."""
    rotting = deals_rotting(qs=deal_list(user=user).filter(owner=user), now=now)
    deals = list(rotting.order_by(TOUCHED.asc(), "id")[:shown])
    mark_rotting(deals=deals, now=now)
    count = len(deals) if len(deals) < shown else rotting.count()
    return {"rotting_list": deals, "rotting_count": count}


def record_changes_display(
    *, model: type[Customer] | type[Deal], changes: dict[str, tuple[Any, Any]]
) -> list[dict[str, Any]]:
    """Human labels for the fields another user changed (``ConcurrentEditError.changes``): related
    rows' ids resolved to names (one query per related field), choices to their labels."""
    described = []
    for name, (old, new) in changes.items():
        if name == "custom":
            shown = custom_fields_shown(entity=model._meta.model_name or "", values=[old, new])
            described += [
                {"label": line["field"], "old": line["old"], "new": line["new"]}
                for line in shown.changes(old, new)
            ]
            continue
        field = model._meta.get_field(name)
        if not isinstance(field, Field):  # a reverse relation: not a field the record's form edits
            raise TypeError(f"{name!r} is not one of the record's own fields")
        if field.is_relation and (related := field.related_model) is not None:
            names = {o.pk: str(o) for o in related._default_manager.filter(pk__in=[old, new])}
            old, new = names.get(old, old), names.get(new, new)
        elif field.choices:
            labels = dict(field.choices)
            old, new = labels.get(old, old), labels.get(new, new)
        described.append({"label": field.verbose_name, "old": old, "new": new})
    return described


def customer_record_counts(*, customers: list[Customer]) -> dict[int, dict[str, int]]:
    """How many deals, tickets and activities each customer has (what a merge would move); one query per
    kind. Not scoped to a user: the caller has already fetched the customers through a scoped read."""
    ids = [c.pk for c in customers]
    counts: dict[int, dict[str, int]] = {pk: {"deals": 0, "tickets": 0, "activities": 0} for pk in ids}
    for key, model in (("deals", Deal), ("tickets", Ticket), ("activities", Activity)):
        for row in (
            model.objects.filter(customer__in=ids).values("customer").annotate(n=Count("id")).order_by()
        ):
            counts[row["customer"]][key] = row["n"]
    return counts


def webhook_list() -> QuerySet[WebhookSubscription]:
    """Every webhook subscription with how many of its deliveries wait and how many were given up."""
    pending, failed = WebhookDelivery.Status.PENDING, WebhookDelivery.Status.FAILED
    return WebhookSubscription.objects.select_related("owner").annotate(
        waiting=Count("deliveries", filter=Q(deliveries__status=pending)),
        given_up=Count("deliveries", filter=Q(deliveries__status=failed)),
    )


def webhook_initial(*, subscription: WebhookSubscription) -> dict[str, Any]:
    fields = ("name", "url", "events", "is_active")
    return {name: getattr(subscription, name) for name in fields}


def webhook_deliveries(*, subscription: WebhookSubscription | int) -> QuerySet[WebhookDelivery]:
    """One subscription's delivery log, newest first."""
    return WebhookDelivery.objects.filter(subscription=subscription).order_by("-created_at", "-id")
