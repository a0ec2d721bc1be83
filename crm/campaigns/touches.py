"""Campaign touches: which campaign reached a customer when (KPIS.md §10.11).

Written by the customer services (form, import, API) when a customer is associated with a campaign; read
when a deal is created, for the campaign that last touched its customer before. A touch that repeats the
customer's latest campaign is not written: each touch is a campaign taking over as the customer's latest,
so a re-import of the same list, or saving a form twice, adds nothing.
"""

from collections.abc import Sequence
from datetime import datetime

from django.db.models import OuterRef, Subquery

from accounts.models import User
from crm.models import Campaign, CampaignTouch, Customer


def _latest_before(customer_id: int, at: datetime) -> CampaignTouch | None:
    touches = CampaignTouch.objects.filter(customer_id=customer_id, at__lte=at).select_related("campaign")
    return touches.order_by("-at", "-id").first()


def last_touch_campaign(*, customer: Customer, at: datetime) -> Campaign | None:
    """The campaign of ``customer``'s latest touch at or before ``at`` (ties: the one written last)."""
    touch = _latest_before(customer.pk, at)
    return touch.campaign if touch is not None else None


def last_touch_subquery(at: str) -> Subquery:
    """SQL: the campaign id of the outer customer's latest touch at or before its field ``at`` (e.g.
    ``became_customer_at``); NULL without one."""
    touches = CampaignTouch.objects.filter(customer_id=OuterRef("pk"), at__lte=OuterRef(at))
    return Subquery(touches.order_by("-at", "-id").values("campaign_id")[:1])


def campaign_touch_record(
    *, customer: Customer, campaign: Campaign, at: datetime, via: str, actor: User | None
) -> CampaignTouch | None:
    """Record that ``campaign`` reached ``customer`` at ``at``; None (nothing written) when it already is
    the customer's latest campaign then."""
    latest = _latest_before(customer.pk, at)
    if latest is not None and latest.campaign_id == campaign.pk:
        return None
    return CampaignTouch.objects.create(customer=customer, campaign=campaign, at=at, via=via, by=actor)


def campaign_touches_bulk_record(
    *, pairs: Sequence[tuple[Customer, Campaign]], at: datetime, via: str, actor: User | None
) -> list[CampaignTouch]:
    """``campaign_touch_record`` for many customers at once (imports): one read of their latest touches,
    one insert."""
    if not pairs:
        return []
    ids = [customer.pk for customer, _campaign in pairs]
    latest = dict(
        CampaignTouch.objects.filter(customer_id__in=ids, at__lte=at)
        .order_by("customer_id", "-at", "-id")
        .distinct("customer_id")
        .values_list("customer_id", "campaign_id")
    )
    new = [
        CampaignTouch(customer=customer, campaign=campaign, at=at, via=via, by=actor)
        for customer, campaign in pairs
        if latest.get(customer.pk) != campaign.pk
    ]
    return CampaignTouch.objects.bulk_create(new, batch_size=1000)


def campaign_touches_collapse(*, customer: Customer) -> int:
    """After a merge moved the other record's touches here: drop each touch that repeats the campaign of
    the touch before it, as if the two records had always been one (KPIS.md §10.13). Returns how many."""
    repeated, previous = [], None
    for pk, campaign_id in customer.campaign_touches.order_by("at", "id").values_list("pk", "campaign_id"):
        if campaign_id == previous:
            repeated.append(pk)
        previous = campaign_id
    if repeated:
        CampaignTouch.objects.filter(pk__in=repeated).delete()
    return len(repeated)
