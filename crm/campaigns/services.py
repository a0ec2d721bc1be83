"""Writing campaigns (managers and admins): create, change with optimistic locking, archive and restore,
and a touch recorded by hand on a customer's page."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import UsageEvent, User
from accounts.services import usage_record
from crm.campaigns.touches import campaign_touch_record
from crm.models import Campaign, CampaignTouch, Customer
from crm.services import (
    ConcurrentEditError,
    _changes_since,
    _ensure_owns_customer,
    _save,
    _set_history_user,
    customer_update,
)
from crm.transactions import atomic_retrying

CAMPAIGN_FIELDS = ("name", "channel", "start", "end", "cost", "note")


def _ensure_manager(actor: User) -> None:
    if not actor.is_manager:
        raise PermissionDenied(_("Only managers change campaigns."))


def _name_taken(name: str, exclude: int | None = None) -> None:
    others = Campaign.objects.filter(name__iexact=name.strip())
    if exclude is not None:
        others = others.exclude(pk=exclude)
    if others.exists():
        raise ValidationError({"name": _("Another campaign has this name; imports find campaigns by name.")})


@atomic_retrying
def campaign_create(
    *,
    actor: User,
    name: str,
    start: date,
    end: date,
    channel: str = "other",
    cost: Decimal = Decimal(0),
    note: str = "",
    via: str = UsageEvent.Via.WEB,
) -> Campaign:
    """A new campaign; its name is unique whatever its case (imports match by name)."""
    _ensure_manager(actor)
    _name_taken(name)
    now = timezone.now()
    campaign = Campaign(
        name=name.strip(),
        channel=channel,
        start=start,
        end=end,
        cost=cost,
        note=note,
        created_at=now,
        updated_at=now,
    )
    _set_history_user(campaign, actor)
    _save(campaign)
    usage_record(user=actor, verb=UsageEvent.Verb.CREATE, obj=campaign, via=via, at=now)
    return campaign


@atomic_retrying
def campaign_update(
    *,
    campaign: Campaign,
    actor: User,
    data: dict[str, Any],
    version: int | None,
    via: str = UsageEvent.Via.WEB,
) -> Campaign:
    """Change a campaign's fields; a stale ``version`` raises ConcurrentEditError listing what changed since
    (the KPI engine recomputes every period on its next run when the run, channel or cost changed)."""
    _ensure_manager(actor)
    unknown = set(data) - {*CAMPAIGN_FIELDS, "is_archived"}
    if unknown:
        raise TypeError(f"unknown campaign fields: {sorted(unknown)}")
    current = Campaign.objects.select_for_update(no_key=True).get(pk=campaign.pk)
    if version is not None and current.version != version:
        changes, changed_by = _changes_since(current, version)
        raise ConcurrentEditError(current, changes, changed_by)
    if "name" in data:
        _name_taken(data["name"], exclude=current.pk)
        data = {**data, "name": data["name"].strip()}
    for name, value in data.items():
        setattr(current, name, value)
    current.updated_at = timezone.now()
    current.version += 1
    _set_history_user(current, actor)
    _save(current)
    usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=current, via=via)
    return current


def campaign_set_archived(*, campaign: Campaign, actor: User, archived: bool) -> Campaign:
    """Archive (hide from the pickers, keep every figure) or restore a campaign."""
    return campaign_update(campaign=campaign, actor=actor, data={"is_archived": archived}, version=None)


@atomic_retrying
def customer_touch_add(
    *, customer: Customer, campaign: Campaign, actor: User, at: datetime | None = None
) -> CampaignTouch | None:
    """Record by hand that ``campaign`` reached ``customer`` now (a webinar attended, a mailing answered):
    their last-touch campaign from now on, and their first-touch one if they had none. None when it
    already is their latest campaign."""
    _ensure_owns_customer(actor, customer)
    at = at or timezone.now()
    touch = campaign_touch_record(
        customer=customer, campaign=campaign, at=at, via=UsageEvent.Via.WEB, actor=actor
    )
    if customer.campaign_id is None:
        customer_update(customer=customer, actor=actor, data={"campaign": campaign})
    return touch
