"""Campaigns in imports (KPIS.md §10.11): the campaign column of the customer and deal imports, found by
name, and the import of campaigns themselves (managers only): columns, row plans and writes.

A customer row's campaign is the campaign it came from when the row creates the customer; on an existing
customer it records that the campaign touched them (and becomes their first-touch campaign only if they
had none). A deal row's campaign is the deal's last-touch campaign; left empty, a new deal takes the
campaign that last touched its customer before the deal's creation date.
"""

from datetime import datetime
from typing import TYPE_CHECKING

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.models import UsageEvent, User
from crm.campaigns.services import campaign_create, campaign_update
from crm.data.imports.cells import Context, ImportField, RowError, _amount, _choice, _date, _id, _text
from crm.models import Campaign, CampaignTouch, Source

if TYPE_CHECKING:
    from crm.data.imports.planning import Planner, RowPlan

CAMPAIGN_SYNONYMS = (
    "campaign",
    "campaignname",
    "marketingcampaign",
    "utmcampaign",
    "活动",
    "营销活动",
    "市场活动",
    "推广活动",
    "活动名称",
)


def campaign_ref(value: str, ctx: Context) -> Campaign:
    """A campaign by its name, whatever its case (archived ones too: old records keep old campaigns)."""
    if len(value) > 200:
        raise RowError(_("is longer than %(n)s characters") % {"n": 200})
    found = ctx.campaigns.get(value.strip().casefold())
    if found is None:
        raise RowError(
            _("there is no campaign named “%(value)s”; add it under Campaigns first") % {"value": value}
        )
    return found


CAMPAIGN_COLUMN = ImportField(
    "campaign",
    gettext_lazy("Campaign"),
    campaign_ref,
    synonyms=CAMPAIGN_SYNONYMS,
    help=gettext_lazy("The campaign's name as it is under Campaigns (any case)."),
)

FIELDS = (
    ImportField(
        "id",
        gettext_lazy("ID (from an export)"),
        _id,
        synonyms=("id", "campaignid", "编号", "活动编号"),
        help=gettext_lazy("Updates that campaign; leave empty to find campaigns by name."),
    ),
    ImportField(
        "name",
        gettext_lazy("Name"),
        _text(200),
        required=True,
        synonyms=("name", *CAMPAIGN_SYNONYMS, "名称"),
        example="Spring trade fair 2026",
        help=gettext_lazy("An existing campaign with this name (any case) is updated."),
    ),
    ImportField(
        "channel",
        gettext_lazy("Channel"),
        _choice(Source.choices),
        synonyms=("channel", "source", "medium", "渠道", "来源"),
        example="event",
    ),
    ImportField(
        "start",
        gettext_lazy("First day"),
        _date,
        required=True,
        synonyms=("start", "startdate", "from", "firstday", "begin", "开始日期", "开始"),
        example="2026-03-01",
    ),
    ImportField(
        "end",
        gettext_lazy("Last day"),
        _date,
        required=True,
        synonyms=("end", "enddate", "to", "until", "lastday", "结束日期", "结束"),
        example="2026-03-31",
    ),
    ImportField(
        "cost",
        gettext_lazy("Cost"),
        _amount,
        synonyms=("cost", "costs", "budget", "spend", "amount", "费用", "成本", "预算", "花费"),
        example="12000",
    ),
    ImportField(
        "note", gettext_lazy("Note"), _text(500), synonyms=("note", "notes", "description", "备注", "说明")
    ),
)

UPDATABLE = {"name", "channel", "start", "end", "cost", "note"}

EXAMPLE = {
    "name": "Webinar series spring 2026",
    "channel": "website",
    "start": "2026-04-01",
    "end": "2026-06-30",
    "cost": "1500",
    "note": "Three webinars, one a month",
}


def plan_campaigns(planner: "Planner", plans: list["RowPlan"]) -> None:
    """Match each row to a campaign (by ID, else by name), check its run, then decide (create, update,
    skip); two rows naming the same campaign fail."""
    from crm.data.imports.planning import FAIL

    by_name = {c.name.strip().casefold(): c for c in Campaign.objects.all()}
    by_id = {c.pk: c for c in by_name.values()}
    claims = []
    decided = []
    for plan in plans:
        values = plan.values
        match = None
        how = ""
        if "id" in values:
            match = by_id.get(values["id"])
            if match is None:
                plan.fail(_("There is no campaign with ID %(id)s.") % {"id": values["id"]})
                continue
            how = _("ID")
        else:
            match = by_name.get(values["name"].strip().casefold())
            how = _("name") if match else ""
            if match is not None:  # found by its name: the file's spelling does not rename it
                values["name"] = match.name
        start = values.get("start") or (match.start if match else None)
        end = values.get("end") or (match.end if match else None)
        if start and end and end < start:
            plan.fail(_("The last day cannot be before the first day."))
            continue
        key = match.pk if match else values["name"].strip().casefold()
        claims.append((plan, "campaign", key, _("Same campaign as row %(row)s.")))
        decided.append((plan, match, how))
    planner._claim(claims)
    for plan, match, how in decided:
        if plan.action != FAIL:
            planner._decide(plan, match, how)


def latest_campaigns(customer_ids: list[int]) -> dict[int, int]:
    """customer id → the campaign of their latest touch (one query): a customer row naming it, or the
    customer's first-touch campaign, changes nothing (an export imported back, the same list twice)."""
    if not customer_ids:
        return {}
    return dict(
        CampaignTouch.objects.filter(customer_id__in=customer_ids)
        .order_by("customer_id", "-at", "-id")
        .distinct("customer_id")
        .values_list("customer_id", "campaign_id")
    )


def write_campaign(plan: "RowPlan", actor: User, at: datetime) -> None:
    via = UsageEvent.Via.IMPORT
    if plan.action == "update":
        data = {k: v for k, v in plan.changes.items() if k in UPDATABLE}
        campaign_update(campaign=plan.target, actor=actor, data=data, version=None, via=via)
        return
    fields = {k: v for k, v in plan.values.items() if k in UPDATABLE}
    campaign_create(actor=actor, via=via, **fields)
