"""The demo company's campaigns (KPIS.md §10.11), added after the bulk load: five campaigns of the last year
with their costs, the customers each brought (first touch), a webinar series that touches leads and
customers others brought (so last touch credits it with deals first touch gives elsewhere), the deals'
last-touch campaigns, and costs set so that one campaign pays handsomely and one loses money under both
models.

Which customers a campaign brought is decided by a hash of the customer's id, not by a random stream:
the rest of the demo stays exactly as it was, and the same seed gives the same campaigns.
"""

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext_noop

from crm.demo.config import SeedConfig
from crm.demo.world import _t
from crm.models import Campaign, CompanySettings


@dataclass(frozen=True)
class Plan:
    """One demo campaign: its run (days before the demo's last day), the customers it brings (of its
    channel, created from its start until ``tail`` days after its end, this share of them) and its cost
    as a multiple of the gross margin its customers' won deals bring (plus a fixed part)."""

    name: str
    channel: str
    first: int
    last: int
    share: float
    cost_factor: float
    cost_base: int
    tail: int = 0


PLANS = (
    # Pays: partners bring customers who buy a lot, for a small fee.
    Plan(gettext_noop("Partner referral programme"), "partner", 365, 1, 0.6, 0.25, 2_000),
    # Roughly pays for itself.
    Plan(gettext_noop("Search ads, always on"), "ads", 365, 1, 0.5, 0.8, 3_000),
    # A short event whose leads keep coming in for six weeks.
    Plan(gettext_noop("Spring trade fair"), "event", 300, 297, 0.8, 0.6, 8_000, tail=45),
    # Loses money under both models: expensive, few customers.
    Plan(gettext_noop("Sponsored posts"), "ads", 240, 150, 0.3, 2.5, 15_000),
)
# Nurtures leads: first touch barely sees it pay, last touch credits it with the leads it won over.
WEBINAR = Plan(gettext_noop("Webinar series"), "website", 200, 20, 0.35, 0.9, 3_000)
# The webinar, once a month, reaches this share of the open leads the company already has.
WEBINAR_REACH = 0.10
WEBINAR_EVERY_DAYS = 30


def _picked(customer_id: int, salt: str, share: float) -> bool:
    """Whether ``customer_id`` is among ``share`` of the customers, for ``salt`` (a campaign)."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest) / 2**32 < share


def _local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(settings.TIME_ZONE))


def seed_campaigns(config: SeedConfig) -> dict[str, int]:
    """Create the campaigns, attribute customers, touches and deals, then cost the campaigns. Returns the
    rows written per kind. Runs inside the seed's transaction, after the bulk load."""
    last_day = config.until - timedelta(days=1)
    now = timezone.now()
    campaigns: dict[Plan, Campaign] = {}
    for plan in (*PLANS, WEBINAR):
        campaigns[plan] = Campaign.objects.create(
            name=_t(plan.name),
            channel=plan.channel,
            start=last_day - timedelta(days=plan.first),
            end=last_day - timedelta(days=plan.last),
            cost=Decimal(plan.cost_base),
            created_at=now,
            updated_at=now,
        )
    first_touch = _first_touches(campaigns)
    webinar_touches = _webinar_touches(campaigns[WEBINAR], first_touch)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE crm_customer c SET campaign_id = a.campaign FROM unnest(%s::bigint[], %s::bigint[]) "
            "AS a(customer, campaign) WHERE c.id = a.customer",
            [list(first_touch), [campaign for campaign, _at in first_touch.values()]],
        )
        touches = [(customer, campaign, at) for customer, (campaign, at) in first_touch.items()]
        touches = _taking_over(touches + webinar_touches)
        cursor.execute(
            "INSERT INTO crm_campaigntouch (customer_id, campaign_id, at, via) "
            "SELECT * , 'web' FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[])",
            [[t[0] for t in touches], [t[1] for t in touches], [t[2] for t in touches]],
        )
        # Each deal of a touched customer: the campaign that touched the customer last before it was created.
        cursor.execute("""
            UPDATE crm_deal d SET campaign_id = (
                SELECT t.campaign_id FROM crm_campaigntouch t
                WHERE t.customer_id = d.customer_id AND t.at <= d.created_at
                ORDER BY t.at DESC, t.id DESC LIMIT 1
            )
            WHERE d.customer_id IN (SELECT customer_id FROM crm_campaigntouch)
              AND EXISTS (
                SELECT 1 FROM crm_campaigntouch t WHERE t.customer_id = d.customer_id AND t.at <= d.created_at
              )
        """)
        deals = cursor.rowcount
    _cost(campaigns)
    return {"campaigns": len(campaigns), "touches": len(touches), "deals": deals}


def _first_touches(campaigns: dict[Plan, Campaign]) -> dict[int, tuple[int, datetime]]:
    """customer id → (campaign id, created at) of the customers each campaign brought: of its channel,
    created in its window, its share of them (the first campaign to claim a customer keeps it)."""
    found: dict[int, tuple[int, datetime]] = {}
    earliest = min(c.start for c in campaigns.values())
    windows = [
        (plan, campaign, _local(campaign.start, 0), _local(campaign.end + timedelta(days=plan.tail + 1), 0))
        for plan, campaign in campaigns.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, source, created_at FROM crm_customer WHERE NOT is_internal AND created_at >= %s "
            "ORDER BY id",
            [_local(earliest, 0)],
        )
        for customer_id, source, created in cursor:
            for plan, campaign, lo, hi in windows:
                if (
                    source == plan.channel
                    and lo <= created < hi
                    and _picked(customer_id, plan.name, plan.share)
                ):
                    found[customer_id] = (campaign.pk, created)
                    break
    return found


def _webinar_touches(
    webinar: Campaign, first_touch: dict[int, tuple[int, datetime]]
) -> list[tuple[int, int, datetime]]:
    """Once a month while it runs, the webinar reaches some of the company's open leads (not yet customers
    on the webinar's day, not the ones it brought itself): a touch each, at 16:00 on the webinar's day."""
    touches = []
    with connection.cursor() as cursor:
        day = webinar.start + timedelta(days=7)
        while day <= webinar.end:
            at = _local(day, 16)
            cursor.execute(
                "SELECT id FROM crm_customer WHERE NOT is_internal AND created_at < %s "
                "AND (became_customer_at IS NULL OR became_customer_at > %s) ORDER BY id",
                [at - timedelta(days=14), at],
            )
            for (customer_id,) in cursor.fetchall():
                mine = first_touch.get(customer_id, (None, None))[0] == webinar.pk
                if not mine and _picked(customer_id, f"webinar {day}", WEBINAR_REACH):
                    touches.append((customer_id, webinar.pk, at))
            day += timedelta(days=WEBINAR_EVERY_DAYS)
    return touches


def _taking_over(touches: list[tuple[int, int, datetime]]) -> list[tuple[int, int, datetime]]:
    """The touches without those repeating the customer's latest campaign (as ``campaign_touch_record``
    writes them: each touch is a campaign taking over)."""
    kept, latest = [], {}
    for customer, campaign, at in sorted(touches, key=lambda t: (t[0], t[2])):
        if latest.get(customer) != campaign:
            kept.append((customer, campaign, at))
        latest[customer] = campaign
    return kept


def _cost(campaigns: dict[Plan, Campaign]) -> None:
    """Each campaign's cost: its fixed part plus its factor × the gross margin of what its customers won
    (first touch): a factor under 1 pays, over 1 loses money."""
    margin = CompanySettings.load().gross_margin_percent / 100
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.campaign_id, COALESCE(sum(d.amount), 0) FROM crm_deal d JOIN crm_customer c ON c.id = "
            "d.customer_id WHERE d.status = 'won' AND c.campaign_id IS NOT NULL GROUP BY c.campaign_id"
        )
        revenue = dict(cursor.fetchall())
    for plan, campaign in campaigns.items():
        won = Decimal(revenue.get(campaign.pk, 0))
        cost = Decimal(plan.cost_base) + Decimal(str(plan.cost_factor)) * won * margin
        Campaign.objects.filter(pk=campaign.pk).update(cost=cost.quantize(Decimal("1")))
