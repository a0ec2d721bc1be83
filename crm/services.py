"""Every write to the CRM's domain models. Each service validates, writes history and a usage event."""

from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps as django_apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from psycopg import sql as pg
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from accounts.models import Team, UsageEvent, User
from accounts.services import usage_object_type, usage_record
from crm import normalize
from crm.automation import builtins
from crm.automation.events import automation_emit
from crm.automation.models import note
from crm.campaigns.touches import campaign_touch_record, campaign_touches_bulk_record, last_touch_campaign
from crm.custom_fields import kinds
from crm.custom_fields import services as custom_fields
from crm.forecasting.services import stage_versions_seed
from crm.models import (
    Activity,
    AutomationRule,
    Campaign,
    CompanySettings,
    Customer,
    CustomerStatusChange,
    Deal,
    DealStageChange,
    PipelineStage,
    SlaPolicy,
    SpendEntry,
    Ticket,
    TicketMessage,
    TicketStatusChange,
    WebhookSubscription,
)
from crm.transactions import atomic_retrying
from crm.webhooks import payloads
from crm.webhooks.services import webhook_emit

Event = WebhookSubscription.Event

CUSTOMER_FIELDS = (
    "name",
    "kind",
    "email",
    "phone",
    "industry",
    "city",
    "segment",
    "language",
    "source",
    "owner",
    "is_internal",
    "campaign",
    "custom",
)
DEAL_FIELDS = (
    "customer",
    "owner",
    "title",
    "amount",
    "kind",
    "probability",
    "forecast_category",
    "source",
    "expected_close_date",
    "term_start",
    "term_end",
    "renewal_of",
    "campaign",
    "custom",
)
TICKET_FIELDS = ("customer", "subject", "description", "priority", "category", "channel", "custom")
Trigger = AutomationRule.Trigger


class ConcurrentEditError(Exception):
    """Someone else saved the record since the form was loaded; nothing was written.

    ``changes`` maps each field changed since the user's version to ``(value then, value now)``;
    ``changed_by`` names who saved in between (when the audit trail knows).
    """

    def __init__(
        self, current: models.Model, changes: dict[str, tuple[Any, Any]], changed_by: list[User]
    ) -> None:
        self.current = current
        self.changes = changes
        self.changed_by = changed_by
        super().__init__(_("This record was changed by someone else while you were editing it."))


# Repairs (data migrations call these; so do their tests)
# ---------------------------------------------------------------------------------------------------------

DATE_APPS = ("accounts", "crm", "metrics", "surveys")
EARLIEST_DATE, LATEST_DATE = date(1990, 1, 1), date(2100, 12, 31)
SHOWN_PER_COLUMN = 20


def _date_bounds(field: models.Field) -> tuple:
    if field.get_internal_type() == "DateTimeField":
        return datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)
    return EARLIEST_DATE, LATEST_DATE


def stored_dates_repair(*, apps: Any = None, using: Any = None) -> list[str]:
    """Bring every stored date of the project's apps into the CRM's range (1990-01-01 to 2100-12-31):
    an out-of-range value that may be empty is cleared, one that may not is moved to the nearest end.
    One scan per table, values read as text (Python cannot read a date before year 1). Returns (and
    prints) one line per change. ``apps``: a migration's historical models (default: today's);
    ``using``: the connection (default: the default one)."""
    apps, using = apps or django_apps, using or connection
    report: list[str] = []
    for model in apps.get_models():
        meta = model._meta
        if meta.app_label not in DATE_APPS or meta.proxy or not meta.managed:
            continue
        fields = [
            f for f in meta.local_concrete_fields if f.get_internal_type() in ("DateField", "DateTimeField")
        ]
        if not fields:
            continue
        table, pk = pg.Identifier(meta.db_table), pg.Identifier(meta.pk.column)
        # One scan per table: the key, and per date column its value as text where it is out of range.
        outside = [pg.SQL("({0} < %s OR {0} > %s)").format(pg.Identifier(f.column)) for f in fields]
        shown = pg.SQL(", ").join(
            pg.SQL("CASE WHEN {} THEN {}::text END").format(test, pg.Identifier(f.column))
            for f, test in zip(fields, outside, strict=True)
        )
        params = [bound for f in fields for bound in _date_bounds(f)]
        with using.cursor() as cursor:
            cursor.execute(
                pg.SQL("SELECT {}, {} FROM {} WHERE {}").format(
                    pk, shown, table, pg.SQL(" OR ").join(outside)
                ),
                params * 2,
            )
            rows = cursor.fetchall()
        for index, field in enumerate(fields, start=1):
            changed = [(row[0], row[index]) for row in rows if row[index] is not None]
            if not changed:
                continue
            low, high = _date_bounds(field)
            column, ids = pg.Identifier(field.column), [pk_value for pk_value, _old in changed]
            with using.cursor() as cursor:
                if field.null:
                    cursor.execute(
                        pg.SQL("UPDATE {} SET {} = NULL WHERE {} = ANY(%s)").format(table, column, pk), [ids]
                    )
                else:
                    cursor.execute(
                        pg.SQL(
                            "UPDATE {0} SET {1} = CASE WHEN {1} < %s THEN %s ELSE %s END WHERE {2} = ANY(%s)"
                        ).format(table, column, pk),
                        [low, low, high, ids],
                    )
            new = "cleared" if field.null else f"moved to the nearest of {low} and {high}"
            for pk_value, old in changed[:SHOWN_PER_COLUMN]:
                report.append(f"{meta.db_table}.{field.column} id {pk_value}: {old} {new}")
            if len(changed) > SHOWN_PER_COLUMN:
                report.append(
                    f"{meta.db_table}.{field.column}: {len(changed) - SHOWN_PER_COLUMN} more rows {new}"
                )
    if report:
        print(f"\n  Dates outside {EARLIEST_DATE.year}-{LATEST_DATE.year} brought into range:")
        for line in report:
            print(f"    {line}")
    return report


# Default rows (the data migration 0002 and the tests' database call defaults_seed)
# ---------------------------------------------------------------------------------------------------------

# Names are stored in English; PipelineStage.__str__ translates them (hence gettext_noop).
DEFAULT_STAGES = [
    # name, order, probability %, kind
    (gettext_noop("Lead in"), 10, 10, "open"),
    (gettext_noop("Qualified"), 20, 25, "open"),
    (gettext_noop("Proposal"), 30, 50, "open"),
    (gettext_noop("Negotiation"), 40, 75, "open"),
    (gettext_noop("Won"), 90, 100, "won"),
    (gettext_noop("Lost"), 99, 0, "lost"),
]

SLA_HOURS = [
    # priority, first response, resolution
    ("urgent", 1, 8),
    ("high", 4, 24),
    ("normal", 8, 72),
    ("low", 24, 120),
]


def defaults_seed(apps: Any = None) -> None:
    """The rows every installation starts with: the default sales pipeline, per-priority SLA hours and the
    company settings row. Idempotent. ``apps``: a migration's historical models (default: today's)."""
    apps = apps or django_apps
    Pipeline = apps.get_model("crm", "Pipeline")
    PipelineStage = apps.get_model("crm", "PipelineStage")
    SlaPolicy = apps.get_model("crm", "SlaPolicy")
    CompanySettings = apps.get_model("crm", "CompanySettings")
    pipeline, _ = Pipeline.objects.get_or_create(name="Sales", defaults={"is_default": True})
    for name, order, probability, kind in DEFAULT_STAGES:
        PipelineStage.objects.get_or_create(
            pipeline=pipeline, order=order, defaults={"name": name, "probability": probability, "kind": kind}
        )
    for priority, first_response, resolution in SLA_HOURS:
        SlaPolicy.objects.get_or_create(
            priority=priority,
            defaults={"first_response_hours": first_response, "resolution_hours": resolution},
        )
    CompanySettings.objects.get_or_create(pk=1)
    stage_versions_seed(apps)
    try:
        rules = apps.get_model("crm", "AutomationRule")
    except LookupError:  # an early migration: the rules' own migration seeds them
        return
    builtins.seed(rules)


def two_factor_required(user: User) -> bool:
    """The company's two-factor rule (settings.TWO_FACTOR_REQUIRED): managers and admins must set it up
    when the company settings say so."""
    return bool(user.is_manager and CompanySettings.load().require_2fa_for_managers)


def _save(obj: models.Model, *, exclude: Iterable[str] = ()) -> None:
    """Validate, then save; a database constraint that still fires becomes a ValidationError, never a 500."""
    # Check constraints are left to PostgreSQL (saves a round trip per constraint); a violation that gets
    # past the forms comes back below as a ValidationError naming the rule.
    obj.full_clean(exclude=list(exclude), validate_constraints=False)
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise ValidationError(
            _("The record breaks a data rule: %(rule)s") % {"rule": _constraint_name(exc)}
        ) from exc


def _constraint_name(exc: IntegrityError) -> str:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None) or str(exc).splitlines()[0]


def _set_history_user(obj: models.Model, actor: User | None) -> None:
    # Read by django-simple-history when the row is saved; Model does not declare it.
    obj._history_user = actor  # type: ignore[attr-defined]


def _refresh_match_keys(customer: Customer) -> None:
    customer.email_key = normalize.email_key(customer.email)
    customer.phone_key = normalize.phone_key(customer.phone)
    customer.name_key = normalize.name_key(customer.name)


def _ensure_owns_customer(actor: User, customer: Customer) -> None:
    if actor.is_rep and customer.owner_id != actor.pk:
        raise PermissionDenied(_("You can only work on your own customers."))


# Customers
# ---------------------------------------------------------------------------------------------------------


@atomic_retrying
def customer_create(
    *,
    actor: User,
    via: str = UsageEvent.Via.WEB,
    at: datetime | None = None,
    status: str = Customer.Status.LEAD,
    **fields: Any,
) -> Customer:
    """Create a customer (a lead unless ``status`` says otherwise) with its first status-history row."""
    at = at or timezone.now()
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise TypeError(f"unknown customer fields: {sorted(unknown)}")
    if actor.is_rep:
        fields["owner"] = actor
    fields["custom"] = custom_fields.values_clean(entity="customer", current={}, changes=fields.get("custom"))
    customer = Customer(**fields, status=status, created_at=at, updated_at=timezone.now())
    if status != Customer.Status.LEAD:
        customer.became_customer_at = at
    if status == Customer.Status.CHURNED:
        customer.churned_at = at
    _refresh_match_keys(customer)
    _set_history_user(customer, actor)
    _save(customer)
    CustomerStatusChange.objects.create(customer=customer, from_status="", to_status=status, at=at, by=actor)
    if customer.campaign_id is not None and customer.campaign is not None:
        campaign_touch_record(customer=customer, campaign=customer.campaign, at=at, via=via, actor=actor)
    usage_record(user=actor, verb=UsageEvent.Verb.CREATE, obj=customer, via=via, at=at)
    webhook_emit(event=Event.CUSTOMER_CREATED, data=lambda: payloads.customer_data(customer))
    automation_emit(trigger=Trigger.CUSTOMER_CREATED, obj=customer, key="created")
    return customer


def _lock_customer_version(customer: Customer, version: int | None) -> None:
    """Lock the customer's row and reload ``customer`` from it (so that only the fields the caller then
    sets change); refuse the write when ``version`` (the one the user read) is not the
    stored one, saying what changed since."""
    customer.refresh_from_db(from_queryset=Customer.objects.select_for_update(of=("self",), no_key=True))
    if version is not None and customer.version != version:
        changes, changed_by = _changes_since(customer, version)
        raise ConcurrentEditError(customer, changes, changed_by)


@atomic_retrying
def customer_update(
    *,
    customer: Customer,
    actor: User,
    data: dict[str, Any],
    version: int | None = None,
    via: str = UsageEvent.Via.WEB,
) -> Customer:
    """Change a customer's fields (not its status: see ``customer_set_status``); a stale ``version``
    raises ConcurrentEditError listing what changed since."""
    _ensure_owns_customer(actor, customer)
    _lock_customer_version(customer, version)
    unknown = set(data) - set(CUSTOMER_FIELDS)
    if unknown:
        raise TypeError(f"unknown customer fields: {sorted(unknown)}")
    if actor.is_rep:
        data = {k: v for k, v in data.items() if k != "owner"}
    if "custom" in data:
        data = data | {
            "custom": custom_fields.values_clean(
                entity="customer", current=customer.custom, changes=data["custom"]
            )
        }
    campaign_before = customer.campaign_id
    for name, value in data.items():
        setattr(customer, name, value)
    customer.updated_at = timezone.now()
    _refresh_match_keys(customer)
    _set_history_user(customer, actor)
    customer.version += 1
    _save(customer)
    changed = customer.campaign_id != campaign_before
    if changed and customer.campaign_id is not None and customer.campaign is not None:
        campaign_touch_record(
            customer=customer, campaign=customer.campaign, at=customer.updated_at, via=via, actor=actor
        )
    usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=customer, via=via)
    webhook_emit(event=Event.CUSTOMER_UPDATED, data=lambda: payloads.customer_data(customer))
    return customer


@atomic_retrying
def customer_set_status(
    *,
    customer: Customer,
    status: str,
    actor: User | None,
    at: datetime | None = None,
    reason: str = "",
    via: str = UsageEvent.Via.WEB,
) -> Customer:
    """Move a customer between lead, active and churned; keeps the dates and the status history right.

    Reactivating a churned customer keeps the original ``became_customer_at`` and clears ``churned_at``.
    """
    if actor is not None:
        _ensure_owns_customer(actor, customer)
    at = at or timezone.now()
    if status not in Customer.Status.values:
        raise ValidationError({"status": _("Unknown status.")})
    _lock_customer_version(customer, None)
    previous = customer.status
    if status == previous:
        return customer
    if status == Customer.Status.LEAD and previous != Customer.Status.LEAD:
        raise ValidationError({"status": _("A customer cannot become a lead again.")})
    if status == Customer.Status.ACTIVE:
        customer.became_customer_at = customer.became_customer_at or at
        customer.churned_at = None
        customer.churn_reason = ""
    elif status == Customer.Status.CHURNED:
        customer.became_customer_at = customer.became_customer_at or at
        customer.churned_at = at
        customer.churn_reason = reason
    customer.status = status
    customer.updated_at = timezone.now()
    _set_history_user(customer, actor)
    customer.version += 1
    _save(customer)
    change = CustomerStatusChange.objects.create(
        customer=customer, from_status=previous, to_status=status, at=at, by=actor, reason=reason
    )
    if actor is not None:
        usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=customer, via=via, at=at)
    churned = status == Customer.Status.CHURNED
    event = Event.CUSTOMER_CHURNED if churned else Event.CUSTOMER_UPDATED
    webhook_emit(event=event, data=lambda: payloads.customer_data(customer))
    automation_emit(
        trigger=Trigger.CUSTOMER_STATUS_CHANGED,
        obj=customer,
        key=f"status:{change.pk}",
        event={"from": previous, "to": status},
    )
    return customer


# Deals
# ---------------------------------------------------------------------------------------------------------


def _apply_stage(deal: Deal, stage: PipelineStage, *, at: datetime, lost_reason: str) -> None:
    """Set the stage and the fields that follow from its kind (status, closed time, lost reason); a
    stage move is activity on the deal."""
    deal.stage = stage
    deal.status = stage.kind
    deal.last_activity_at = max(filter(None, (deal.last_activity_at, at)))
    if stage.kind == PipelineStage.Kind.OPEN:
        deal.closed_at = None
        deal.lost_reason = ""
    else:
        deal.closed_at = at
        deal.lost_reason = lost_reason.strip() if stage.kind == PipelineStage.Kind.LOST else ""
        if stage.kind == PipelineStage.Kind.LOST and not deal.lost_reason:
            raise ValidationError({"lost_reason": _("Say why the deal was lost.")})


@atomic_retrying
def deal_create(
    *,
    actor: User,
    customer: Customer,
    title: str,
    stage: PipelineStage | None = None,
    owner: User | None = None,
    at: datetime | None = None,
    lost_reason: str = "",
    via: str = UsageEvent.Via.WEB,
    **fields: Any,
) -> Deal:
    """Create a deal in ``stage`` (the first open stage of the default pipeline by default). Without a
    campaign it gets the one that last touched its customer at or before ``at`` (KPIS.md §10.11)."""
    _ensure_owns_customer(actor, customer)
    unknown = set(fields) - set(DEAL_FIELDS)
    if unknown:
        raise TypeError(f"unknown deal fields: {sorted(unknown)}")
    at = at or timezone.now()
    if fields.get("campaign") is None:
        fields["campaign"] = last_touch_campaign(customer=customer, at=at)
    stage = stage or PipelineStage.objects.filter(pipeline__is_default=True, kind="open").earliest("order")
    owner = actor if actor.is_rep else (owner or customer.owner or actor)
    fields["custom"] = custom_fields.values_clean(
        entity="deal", current={}, changes=fields.get("custom"), stage=stage
    )
    deal = Deal(
        customer=customer,
        owner=owner,
        title=title,
        created_at=at,
        updated_at=timezone.now(),
        **fields,
    )
    _apply_stage(deal, stage, at=at, lost_reason=lost_reason)
    _set_history_user(deal, actor)
    _save(deal)
    change = DealStageChange.objects.create(deal=deal, from_stage=None, to_stage=stage, at=at, by=actor)
    usage_record(user=actor, verb=UsageEvent.Verb.CREATE, obj=deal, via=via, at=at)
    _activate_customer_on_win(deal, actor=actor, at=at, via=via)
    webhook_emit(event=Event.DEAL_CREATED, data=lambda: payloads.deal_data(deal))
    automation_emit(trigger=Trigger.DEAL_CREATED, obj=deal, key="created")
    _emit_closed(deal, change)
    return deal


def _emit_closed(deal: Deal, change: DealStageChange) -> None:
    closed: dict[str, str] = {Deal.Status.WON: Trigger.DEAL_WON, Deal.Status.LOST: Trigger.DEAL_LOST}
    trigger = closed.get(deal.status)
    if trigger is not None:
        automation_emit(trigger=trigger, obj=deal, key=f"closed:{change.pk}")


def _activate_customer_on_win(deal: Deal, *, actor: User | None, at: datetime, via: str) -> None:
    """A won deal makes its customer an active customer (a churned one is reactivated)."""
    if deal.status == Deal.Status.WON and deal.customer.status != Customer.Status.ACTIVE:
        customer_set_status(
            customer=deal.customer, status=Customer.Status.ACTIVE, actor=actor, at=at, via=via
        )


def _lock_current_version(deal: Deal, version: int | None) -> Deal:
    """Lock the deal's row; refuse the write when ``version`` is not the stored one (optimistic locking).

    Only the deal's own row is locked, and as FOR NO KEY UPDATE: locking its stage and customer too made
    two moves between the same stages in opposite directions deadlock (each stage-change row must
    key-share both stages), and queued every edit of deals in one stage behind the others.
    """
    current = (
        Deal.objects.select_for_update(of=("self",), no_key=True)
        .select_related("stage", "customer")
        .get(pk=deal.pk)
    )
    if version is not None and current.version != version:
        changes, changed_by = _changes_since(current, version)
        raise ConcurrentEditError(current, changes, changed_by)
    return current


def _changes_since(
    current: Customer | Deal | Campaign, version: int
) -> tuple[dict[str, tuple[Any, Any]], list[User]]:
    """What the audit trail says changed between ``version`` and now, and who changed it."""
    records = list(
        current.history.filter(version__gte=version)
        .select_related("history_user")
        .order_by("history_date", "pk")
    )
    base = next((r for r in records if r.version == version), None)
    if base is None or len(records) < 2:
        return {}, []
    delta = records[-1].diff_against(base)
    changed_by = list(dict.fromkeys(r.history_user for r in records if r is not base and r.history_user))
    return {change.field: (change.old, change.new) for change in delta.changes}, changed_by


@atomic_retrying
def deal_update(
    *, deal: Deal, actor: User, data: dict[str, Any], version: int | None, via: str = UsageEvent.Via.WEB
) -> Deal:
    """Change a deal's fields; a stale ``version`` raises ConcurrentEditError listing what changed since."""
    _ensure_owns_customer(actor, deal.customer)
    unknown = set(data) - set(DEAL_FIELDS)
    if unknown:
        raise TypeError(f"unknown deal fields: {sorted(unknown)}")
    current = _lock_current_version(deal, version)
    if actor.is_rep:
        data = {k: v for k, v in data.items() if k != "owner"}
        if "customer" in data:
            _ensure_owns_customer(actor, data["customer"])
    if "custom" in data:
        data = data | {
            "custom": custom_fields.values_clean(
                entity="deal", current=current.custom, changes=data["custom"], stage=current.stage
            )
        }
    for name, value in data.items():
        setattr(current, name, value)
    current.updated_at = timezone.now()
    current.version += 1
    _set_history_user(current, actor)
    _save(current)
    usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=current, via=via)
    webhook_emit(event=Event.DEAL_UPDATED, data=lambda: payloads.deal_data(current))
    return current


@atomic_retrying
def deal_move_stage(
    *,
    deal: Deal,
    stage: PipelineStage,
    actor: User | None,
    version: int | None = None,
    lost_reason: str = "",
    at: datetime | None = None,
    via: str = UsageEvent.Via.WEB,
) -> Deal:
    """Move a deal to ``stage``: won and lost stages close it, an open stage (re)opens it; history is kept."""
    if actor is not None:
        _ensure_owns_customer(actor, deal.customer)
    current = _lock_current_version(deal, version)
    if stage.pipeline_id != current.stage.pipeline_id:
        raise ValidationError({"stage": _("That stage belongs to another pipeline.")})
    if stage.pk == current.stage_id:
        return current
    missing = custom_fields.missing_for_stage(deal=current, stage=stage)
    if missing:
        raise ValidationError(
            {
                "stage": _("Fill in %(fields)s before moving the deal to %(stage)s.")
                % {"fields": ", ".join(f.label for f in missing), "stage": stage.name}
            }
        )
    at = at or timezone.now()
    previous = current.stage
    _apply_stage(current, stage, at=at, lost_reason=lost_reason)
    current.updated_at = timezone.now()
    current.version += 1
    _set_history_user(current, actor)
    _save(current)
    change = DealStageChange.objects.create(
        deal=current, from_stage=previous, to_stage=stage, at=at, by=actor
    )
    if actor is not None:
        usage_record(user=actor, verb=UsageEvent.Verb.STAGE, obj=current, via=via, at=at)
    _activate_customer_on_win(current, actor=actor, at=at, via=via)
    closed = {PipelineStage.Kind.WON: (Event.DEAL_WON,), PipelineStage.Kind.LOST: (Event.DEAL_LOST,)}
    webhook_emit(
        event=(Event.DEAL_STAGE_CHANGED, *closed.get(PipelineStage.Kind(stage.kind), ())),
        data=lambda: payloads.deal_data(current) | {"from_stage": previous.pk},
    )
    automation_emit(
        trigger=Trigger.DEAL_STAGE_CHANGED,
        obj=current,
        key=f"stage:{change.pk}",
        event={"from_stage": previous.pk, "to_stage": stage.pk},
    )
    _emit_closed(current, change)
    return current


# Tickets
# ---------------------------------------------------------------------------------------------------------


def _sla_due_times(priority: str, created_at: datetime) -> tuple[datetime | None, datetime | None]:
    policy = SlaPolicy.objects.filter(priority=priority).first()
    if policy is None:
        return None, None
    return (
        created_at + timedelta(hours=policy.first_response_hours),
        created_at + timedelta(hours=policy.resolution_hours),
    )


def least_loaded_agent() -> User | None:
    """The active support agent with the fewest unsolved tickets, or None when there is none."""
    agents = User.objects.filter(role=User.Role.AGENT, is_active=True, team__kind=Team.Kind.SUPPORT)
    return (
        agents.annotate(
            load=models.Count(
                "assigned_tickets", filter=models.Q(assigned_tickets__status__in=Ticket.UNSOLVED)
            )
        )
        .order_by("load", "id")
        .first()
    )


def _ticket_status_change(ticket: Ticket, to_status: str, *, actor: User | None, at: datetime) -> None:
    previous = ticket.status
    ticket.status = to_status
    TicketStatusChange.objects.create(
        ticket=ticket, from_status=previous, to_status=to_status, at=at, by=actor
    )


@atomic_retrying
def ticket_create(
    *,
    actor: User,
    customer: Customer,
    subject: str,
    assignee: User | None = None,
    at: datetime | None = None,
    via: str = UsageEvent.Via.WEB,
    **fields: Any,
) -> Ticket:
    """Open a ticket on behalf of a customer, with SLA due times; auto-assigned when the company wants it."""
    unknown = set(fields) - set(TICKET_FIELDS)
    if unknown:
        raise TypeError(f"unknown ticket fields: {sorted(unknown)}")
    _ensure_owns_customer(actor, customer)
    at = at or timezone.now()
    auto_assign = builtins.active(AutomationRule.Builtin.TICKET_AUTO_ASSIGN) if assignee is None else None
    if auto_assign is not None:
        assignee = least_loaded_agent()
    fields["custom"] = custom_fields.values_clean(entity="ticket", current={}, changes=fields.get("custom"))
    first_due, resolution_due = _sla_due_times(fields.get("priority", Ticket.Priority.NORMAL), at)
    ticket = Ticket(
        customer=customer,
        subject=subject,
        assignee=assignee,
        created_by=actor,
        created_at=at,
        updated_at=timezone.now(),
        first_response_due_at=first_due,
        resolution_due_at=resolution_due,
        **fields,
    )
    _set_history_user(ticket, actor)
    _save(ticket)
    TicketStatusChange.objects.create(ticket=ticket, from_status="", to_status=ticket.status, at=at, by=actor)
    usage_record(user=actor, verb=UsageEvent.Verb.CREATE, obj=ticket, via=via, at=at)
    webhook_emit(event=Event.TICKET_CREATED, data=lambda: payloads.ticket_data(ticket))
    if auto_assign is not None:
        builtins.ran(auto_assign, obj=ticket, key="created", outcome=_assigned_outcome(assignee))
    automation_emit(trigger=Trigger.TICKET_CREATED, obj=ticket, key="created")
    return ticket


def _assigned_outcome(assignee: User | None) -> list[dict]:
    if assignee is None:
        return [note(gettext_noop("No active support agent to assign the ticket to."))]
    return [note(gettext_noop("Assigned to %(name)s."), name=assignee.get_full_name() or assignee.username)]


@atomic_retrying
def ticket_assign(
    *, ticket: Ticket, assignee: User | None, actor: User, via: str = UsageEvent.Via.WEB
) -> Ticket:
    """Give the ticket to ``assignee`` (None: back to the unassigned queue)."""
    _ensure_owns_customer(actor, ticket.customer)
    if assignee is not None and assignee.role not in (User.Role.AGENT, User.Role.MANAGER, User.Role.ADMIN):
        raise ValidationError({"assignee": _("Tickets can only be assigned to support agents or managers.")})
    ticket.assignee = assignee
    ticket.updated_at = timezone.now()
    _set_history_user(ticket, actor)
    _save(ticket)
    usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=ticket, via=via)
    webhook_emit(event=Event.TICKET_UPDATED, data=lambda: payloads.ticket_data(ticket))
    return ticket


@atomic_retrying
def ticket_reply(
    *,
    ticket: Ticket,
    actor: User,
    body: str,
    public: bool = True,
    at: datetime | None = None,
    via: str = UsageEvent.Via.WEB,
) -> TicketMessage:
    """Add a reply. The first public reply sets the first response time and opens a new ticket."""
    _ensure_owns_customer(actor, ticket.customer)
    if not body.strip():
        raise ValidationError({"body": _("Write a message.")})
    at = at or timezone.now()
    message = TicketMessage(ticket=ticket, author=actor, body=body, is_public=public, created_at=at)
    _save(message)
    if public:
        if ticket.first_response_at is None:
            ticket.first_response_at = at
        if ticket.status == Ticket.Status.NEW:
            _ticket_status_change(ticket, Ticket.Status.OPEN, actor=actor, at=at)
    if ticket.assignee_id is None and actor.is_agent:
        ticket.assignee = actor
    ticket.updated_at = timezone.now()
    _set_history_user(ticket, actor)
    _save(ticket)
    usage_record(user=actor, verb=UsageEvent.Verb.REPLY, obj=ticket, via=via, at=at)
    webhook_emit(event=Event.TICKET_UPDATED, data=lambda: payloads.ticket_data(ticket))
    return message


TICKET_TRANSITIONS: dict[str, set[str]] = {
    Ticket.Status.NEW: {
        Ticket.Status.OPEN,
        Ticket.Status.PENDING,
        Ticket.Status.SOLVED,
        Ticket.Status.CLOSED,
    },
    Ticket.Status.OPEN: {Ticket.Status.PENDING, Ticket.Status.SOLVED, Ticket.Status.CLOSED},
    Ticket.Status.PENDING: {Ticket.Status.OPEN, Ticket.Status.SOLVED, Ticket.Status.CLOSED},
    Ticket.Status.SOLVED: {Ticket.Status.OPEN, Ticket.Status.CLOSED},
    Ticket.Status.CLOSED: set(),
}


@atomic_retrying
def ticket_set_status(
    *,
    ticket: Ticket,
    status: str,
    actor: User | None,
    at: datetime | None = None,
    via: str = UsageEvent.Via.WEB,
) -> Ticket:
    """Move a ticket through new → open ⇄ pending → solved (→ reopened) → closed, keeping solve times."""
    if actor is not None:
        _ensure_owns_customer(actor, ticket.customer)
    current = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if status == current.status:
        return current
    if status not in TICKET_TRANSITIONS.get(current.status, set()):
        raise ValidationError(
            {
                "status": _("A %(from)s ticket cannot become %(to)s.")
                % {"from": current.get_status_display(), "to": status}
            }
        )
    at = at or timezone.now()
    if status == Ticket.Status.SOLVED or (status == Ticket.Status.CLOSED and current.solved_at is None):
        current.first_solved_at = current.first_solved_at or at
        current.solved_at = at
    if status == Ticket.Status.OPEN and current.status == Ticket.Status.SOLVED:
        current.reopen_count += 1
    if status == Ticket.Status.CLOSED:
        current.closed_at = at
    _ticket_status_change(current, status, actor=actor, at=at)
    current.updated_at = timezone.now()
    _set_history_user(current, actor)
    _save(current)
    if actor is not None:
        usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=current, via=via, at=at)
    solved = status == Ticket.Status.SOLVED
    if solved:
        change = current.status_changes.order_by("-pk").first()
        automation_emit(
            trigger=Trigger.TICKET_SOLVED, obj=current, key=f"solved:{change.pk if change else at}"
        )
    webhook_emit(
        event=Event.TICKET_SOLVED if solved else Event.TICKET_UPDATED,
        data=lambda: payloads.ticket_data(current),
    )
    return current


# Activities and tasks
# ---------------------------------------------------------------------------------------------------------


@atomic_retrying
def activity_log(
    *,
    actor: User,
    customer: Customer,
    kind: str,
    subject: str,
    notes: str = "",
    deal: Deal | None = None,
    ticket: Ticket | None = None,
    due_at: datetime | None = None,
    at: datetime | None = None,
    done: bool | None = None,
    custom: Mapping[str, Any] | None = None,
    via: str = UsageEvent.Via.WEB,
) -> Activity:
    """Log a call, e-mail, meeting or note (done now), or schedule a task (open until completed).

    What the system logs itself (``via=system``: a rule's task or note, a survey follow-up) is not held to
    the person's rules: the task may go to someone who does not own the customer (a rule's "least busy
    manager"), and required custom fields need not be filled in."""
    system = via == UsageEvent.Via.SYSTEM
    if not system:
        _ensure_owns_customer(actor, customer)
    if deal is not None and deal.customer_id != customer.pk:
        raise ValidationError({"deal": _("The deal belongs to another customer.")})
    if ticket is not None and ticket.customer_id != customer.pk:
        raise ValidationError({"ticket": _("The ticket belongs to another customer.")})
    at = at or timezone.now()
    is_task = kind == Activity.Kind.TASK
    done = (not is_task) if done is None else done
    activity = Activity(
        kind=kind,
        subject=subject,
        notes=notes,
        user=actor,
        customer=customer,
        deal=deal,
        ticket=ticket,
        created_at=at,
        due_at=due_at if is_task else None,
        done_at=at if done else None,
        custom=custom_fields.values_clean(entity="activity", current={}, changes=custom, require=not system),
    )
    _save(activity)
    if deal is not None:
        # A plain column update: no new deal version, no history row for a logged call.
        Deal.objects.filter(pk=deal.pk).update(
            last_activity_at=Greatest(Coalesce("last_activity_at", Value(at)), Value(at))
        )
    usage_record(user=actor, verb=UsageEvent.Verb.CREATE, obj=activity, via=via, at=at)
    automation_emit(trigger=Trigger.ACTIVITY_LOGGED, obj=activity, key="logged", event={"kind": kind})
    return activity


@atomic_retrying
def activity_log_with_follow_up(
    *,
    actor: User,
    customer: Customer,
    follow_up: str = "",
    follow_up_due_at: datetime | None = None,
    deal: Deal | None = None,
    ticket: Ticket | None = None,
    **fields: Any,
) -> tuple[Activity, Activity | None]:
    """Log an activity and, when ``follow_up`` names one, schedule the follow-up task on the same record."""
    activity = activity_log(actor=actor, customer=customer, deal=deal, ticket=ticket, **fields)
    task = None
    if follow_up.strip():
        task = activity_log(
            actor=actor,
            customer=customer,
            deal=deal,
            ticket=ticket,
            kind=Activity.Kind.TASK,
            subject=follow_up.strip(),
            due_at=follow_up_due_at or timezone.now() + timedelta(days=2),
            custom=activity.custom,  # the same custom values: a required one is filled in for both
        )
    return activity, task


@atomic_retrying
def activity_complete(
    *, activity: Activity, actor: User, at: datetime | None = None, via: str = UsageEvent.Via.WEB
) -> Activity:
    """Mark a task done (idempotent: a done task keeps its first completion time)."""
    _ensure_owns_customer(actor, activity.customer)
    if activity.done_at is None:
        activity.done_at = at or timezone.now()
        _save(activity)
        usage_record(user=actor, verb=UsageEvent.Verb.COMPLETE, obj=activity, via=via)
    return activity


# Spend
# ---------------------------------------------------------------------------------------------------------


@atomic_retrying
def custom_values_set(
    *,
    obj: Customer | Deal | Ticket | Activity,
    actor: User | None,
    changes: Mapping[str, Any],
    via: str,
    seen: Mapping[str, Any] | None = None,
) -> Customer | Deal | Ticket | Activity:
    """Change some of a record's custom-field values (the others stay), validated, with history.

    ``seen``: the values as the caller read them; a change to a field whose value someone else changed
    since raises ConcurrentEditError (``custom.<key>`` → (value read, value now)) and writes nothing."""
    if actor is not None:
        _ensure_owns_customer(actor, obj if isinstance(obj, Customer) else obj.customer)
    model = type(obj)
    current = model.objects.select_for_update(of=("self",), no_key=True).get(pk=obj.pk)
    entity = str(model._meta.model_name)
    before = dict(current.custom or {})
    current.custom = custom_fields.values_clean(
        entity=entity, current=current.custom, changes=changes, stage=getattr(current, "stage", None)
    )
    if seen is not None:
        _refuse_overwritten_values(current, entity=entity, before=before, keys=list(changes), seen=seen)
    if hasattr(current, "version"):
        current.version += 1
    if hasattr(current, "updated_at"):
        current.updated_at = timezone.now()
    _set_history_user(current, actor)
    _save(current)
    if actor is not None:
        usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=current, via=via)
    _emit_updated(current)
    return current


def _refuse_overwritten_values(
    current: Customer | Deal | Ticket | Activity,
    *,
    entity: str,
    before: dict[str, Any],
    keys: list[str],
    seen: Mapping[str, Any],
) -> None:
    """Raise ConcurrentEditError when a changed key's stored value is no longer the one ``seen`` (read as
    its field reads input, so "South" or 1250.5 match what is stored as "south" or "1250.50") and the new
    value differs from it; ``changed_by`` names who last changed each such field, from the history."""
    by_key = {f.key: f for f in custom_fields.fields_of(entity, active_only=False)}
    overwritten: dict[str, tuple[Any, Any]] = {}
    for key in map(str, keys):
        read = seen.get(key)
        if key in by_key:
            with suppress(ValidationError):
                read = kinds.clean(by_key[key], read)
        now = before.get(key)
        if now != read and current.custom.get(key) != now:
            overwritten[key] = (read, now)
    if overwritten:
        raise ConcurrentEditError(
            current,
            {f"custom.{key}": values for key, values in overwritten.items()},
            _custom_changed_by(current, list(overwritten)),
        )


def _custom_changed_by(record: models.Model, keys: list[str]) -> list[User]:
    """Who last changed each of the custom ``keys``, from the record's latest 100 history rows."""
    history = getattr(record, "history", None)
    if history is None:
        return []
    rows = list(history.select_related("history_user").order_by("-history_date", "-pk")[:100])
    found: list[User] = []
    for key in keys:
        for newer, older in zip(rows, [*rows[1:], None], strict=True):
            if older is None or (newer.custom or {}).get(key) != (older.custom or {}).get(key):
                if newer.history_user is not None and newer.history_user not in found:
                    found.append(newer.history_user)
                break
    return found


def _emit_updated(record: Customer | Deal | Ticket | Activity) -> None:
    """The webhook event of a changed customer, deal or ticket (activities have none)."""
    if isinstance(record, Customer):
        webhook_emit(event=Event.CUSTOMER_UPDATED, data=lambda: payloads.customer_data(record))
    elif isinstance(record, Deal):
        webhook_emit(event=Event.DEAL_UPDATED, data=lambda: payloads.deal_data(record))
    elif isinstance(record, Ticket):
        webhook_emit(event=Event.TICKET_UPDATED, data=lambda: payloads.ticket_data(record))


@atomic_retrying
def spend_record(
    *, month: date, category: str, amount: Decimal, channel: str = "", note: str = ""
) -> SpendEntry:
    """Set the spend for one month, category and channel (a second call replaces the amount)."""
    key = {"month": month.replace(day=1), "category": category, "channel": channel}
    entry = SpendEntry.objects.select_for_update().filter(**key).first() or SpendEntry(**key)
    entry.amount, entry.note = amount, note
    _save(entry)
    return entry


# Bulk writes (imports)
# ---------------------------------------------------------------------------------------------------------


def _customer_status_dates(customer: Customer, status: str, at: datetime) -> None:
    """The dates that go with a status, as ``customer_set_status`` keeps them."""
    if status == Customer.Status.ACTIVE:
        customer.became_customer_at = customer.became_customer_at or at
        customer.churned_at = None
        customer.churn_reason = ""
    elif status == Customer.Status.CHURNED:
        customer.became_customer_at = customer.became_customer_at or at
        customer.churned_at = customer.churned_at or at
    customer.status = status


def _custom_merged(current: Mapping[str, Any] | None, changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """``current`` custom values with ``changes`` (stored values, already cleaned) applied; an empty value
    removes its key, as ``custom_fields.values_clean`` does."""
    merged = dict(current or {})
    for key, value in (changes or {}).items():
        if kinds.is_empty(value):
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _bulk_integrity(exc: IntegrityError) -> ValidationError:
    return ValidationError(_("The record breaks a data rule: %(rule)s") % {"rule": _constraint_name(exc)})


@transaction.atomic
def customer_bulk_create(
    *,
    actor: User,
    rows: Sequence[Mapping[str, Any]],
    via: str = UsageEvent.Via.IMPORT,
    at: datetime | None = None,
    batch_size: int = 1000,
) -> list[Customer]:
    """Create many customers in a few queries: the same fields, status dates, match keys, status history,
    audit trail and usage events as ``customer_create`` row by row.

    The rows hold CUSTOMER_FIELDS (and ``status``) already checked by the caller (choices, formats,
    lengths; ``custom``: key → stored value as ``kinds.clean`` gives it, every required field filled).
    A database rule that still fires raises ValidationError and none of the rows is written.
    """
    at = at or timezone.now()
    customers = []
    for row in rows:
        fields = dict(row)
        status = fields.pop("status", None) or Customer.Status.LEAD
        unknown = set(fields) - set(CUSTOMER_FIELDS)
        if unknown:
            raise TypeError(f"unknown customer fields: {sorted(unknown)}")
        if actor.is_rep:
            fields["owner"] = actor
        fields["custom"] = _custom_merged({}, fields.get("custom"))
        customer = Customer(**fields, created_at=at, updated_at=timezone.now())
        _customer_status_dates(customer, status, at)
        _refresh_match_keys(customer)
        customers.append(customer)
    try:
        with transaction.atomic():
            customers = bulk_create_with_history(
                customers, Customer, batch_size=batch_size, default_user=actor, default_date=at
            )
    except IntegrityError as exc:
        raise _bulk_integrity(exc) from exc
    CustomerStatusChange.objects.bulk_create(
        [
            CustomerStatusChange(customer=c, from_status="", to_status=c.status, at=at, by=actor)
            for c in customers
        ],
        batch_size=batch_size,
    )
    campaign_touches_bulk_record(
        pairs=[(c, c.campaign) for c in customers if c.campaign is not None], at=at, via=via, actor=actor
    )
    _bulk_usage(actor, UsageEvent.Verb.CREATE, customers, via=via, at=at, batch_size=batch_size)
    return customers


@transaction.atomic
def customer_bulk_update(
    *,
    actor: User,
    changes: Sequence[tuple[Customer, Mapping[str, Any]]],
    via: str = UsageEvent.Via.IMPORT,
    at: datetime | None = None,
    batch_size: int = 1000,
) -> list[Customer]:
    """Change many customers at once, each with its own field values (CUSTOMER_FIELDS and ``status``).

    The rows are locked and re-read first (in id order, so two imports never deadlock); a status change
    keeps the dates and writes the status history as ``customer_set_status`` does. ``custom`` changes only
    the keys it names (stored values, checked by the caller; an empty one clears its key). Reps cannot
    change owners, and only their own customers. A database rule that fires raises ValidationError,
    nothing written. A ``campaign`` records that the campaign touched the customer (a webinar's list,
    say); it becomes their first-touch campaign only when they had none (KPIS.md §10.11).
    """
    at = at or timezone.now()
    wanted = {customer.pk: data for customer, data in changes}
    locked = list(Customer.objects.select_for_update().filter(pk__in=wanted).order_by("pk"))
    fields: set[str] = {"updated_at", "email_key", "phone_key", "name_key"}
    status_changes = []
    touched = []
    for customer in locked:
        _ensure_owns_customer(actor, customer)
        data = dict(wanted[customer.pk])
        if actor.is_rep:
            data.pop("owner", None)
        status = data.pop("status", None)
        campaign = data.pop("campaign", None)
        if campaign is not None:
            touched.append((customer, campaign))
            if customer.campaign_id is None:
                data["campaign"] = campaign
        unknown = set(data) - set(CUSTOMER_FIELDS)
        if unknown:
            raise TypeError(f"unknown customer fields: {sorted(unknown)}")
        if "custom" in data:
            data["custom"] = _custom_merged(customer.custom, data["custom"])
        for name, value in data.items():
            setattr(customer, name, value)
            fields.add(name)
        if status and status != customer.status:
            if status == Customer.Status.LEAD:
                raise ValidationError({"status": _("A customer cannot become a lead again.")})
            status_changes.append(
                CustomerStatusChange(
                    customer=customer, from_status=customer.status, to_status=status, at=at, by=actor
                )
            )
            _customer_status_dates(customer, status, at)
            fields |= {"status", "became_customer_at", "churned_at", "churn_reason"}
        customer.updated_at = timezone.now()
        customer.version += 1
        _refresh_match_keys(customer)
    fields.add("version")
    try:
        with transaction.atomic():
            bulk_update_with_history(
                locked, Customer, sorted(fields), batch_size=batch_size, default_user=actor, default_date=at
            )
    except IntegrityError as exc:
        raise _bulk_integrity(exc) from exc
    CustomerStatusChange.objects.bulk_create(status_changes, batch_size=batch_size)
    campaign_touches_bulk_record(pairs=touched, at=at, via=via, actor=actor)
    _bulk_usage(actor, UsageEvent.Verb.UPDATE, locked, via=via, at=at, batch_size=batch_size)
    return locked


def _bulk_usage(
    actor: User, verb: str, objs: Sequence[models.Model], *, via: str, at: datetime, batch_size: int
) -> None:
    UsageEvent.objects.bulk_create(
        [
            UsageEvent(
                user=actor, verb=verb, object_type=usage_object_type(obj), object_id=obj.pk, via=via, at=at
            )
            for obj in objs
        ],
        batch_size=batch_size,
    )
