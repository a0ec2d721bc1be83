"""Reading campaigns: the managers' list and one campaign's page (what it brought, counted through the
access selectors)."""

from typing import Any

from django.db.models import Count, Q, QuerySet

from accounts.models import User
from crm.models import Campaign, CampaignTouch
from crm.selectors import customer_list, deal_list


def campaign_list(*, user: User) -> QuerySet[Campaign]:
    """The campaigns ``user`` may manage: all of them for managers and admins, none for anyone else."""
    if not user.is_manager:
        return Campaign.objects.none()
    return Campaign.objects.all()


def campaign_filter(*, qs: QuerySet[Campaign], data: dict[str, Any]) -> QuerySet[Campaign]:
    """The list's search (name, note), channel and state (active by default), newest run first, with the
    number of customers each brought."""
    q = (data.get("q") or "").strip()
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(note__icontains=q))
    if data.get("channel"):
        qs = qs.filter(channel=data["channel"])
    state = data.get("state") or "active"
    if state != "all":
        qs = qs.filter(is_archived=state == "archived")
    return qs.annotate(customer_count=Count("customers", distinct=True)).order_by("-start", "name", "id")


def campaign_summary(*, campaign: Campaign, user: User) -> dict[str, int]:
    """What a campaign brought, among the records ``user`` may see: customers who came from it (first
    touch), touches (last-touch leads), and deals it touched last, all and won."""
    customers = customer_list(user=user).filter(campaign=campaign)
    touches = CampaignTouch.objects.filter(campaign=campaign, customer__in=customer_list(user=user))
    deals = deal_list(user=user).filter(campaign=campaign).order_by()
    counted = deals.aggregate(deals=Count("pk"), won=Count("pk", filter=Q(status="won")))
    return {
        "customers": customers.order_by().count(),
        "touches": touches.order_by().count(),
        "deals": counted["deals"],
        "won": counted["won"],
    }


def campaign_recent_touches(*, campaign: Campaign, user: User, limit: int = 10) -> list[CampaignTouch]:
    """The campaign's latest touches of customers ``user`` may see."""
    touches = CampaignTouch.objects.filter(campaign=campaign, customer__in=customer_list(user=user))
    return list(touches.select_related("customer").order_by("-at", "-id")[:limit])


def customer_touches(*, customer_id: int, limit: int = 20) -> list[CampaignTouch]:
    """A customer's campaign touches, newest first (the caller has fetched the customer through a scoped
    read)."""
    touches = CampaignTouch.objects.filter(customer_id=customer_id).select_related("campaign", "by")
    return list(touches.order_by("-at", "-id")[:limit])
