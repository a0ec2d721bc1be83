"""The components of the customer health score (KPIS.md §10.10): what each one looks at, the windows it
looks back over and how its points are given. Each component earns its weight (a setting, ``HealthSettings``)
times a fraction: all of it, half of it or none; the score is the sum, 0–100.

The fractions are steps, not curves, so a manager (and a test) can work any score out by hand. Every window
ends just before the scoring instant (local midnight of the day scored) and starts at local midnight a number
of days earlier (KPIS.md G1), so a score as of a past day reads only what had happened by then.
"""

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

# Recency of the last contact (a done activity of anyone) or purchase (a won deal): full points within
# this many days, half within the second number.
RECENT_FULL_DAYS = 30
RECENT_HALF_DAYS = 90
# The latest NPS or CSAT answer counts for a year; without one the component gets half (nothing known).
SURVEY_WINDOW_DAYS = 365
# Complaints, SLA breaches and the owner's activities are counted over the last 90 days.
ISSUE_WINDOW_DAYS = 90
# A subscription (a won new-business or renewal deal with a term) is due for renewal when its term ends
# within this many days, or ended at most the grace days ago (the renewal rate's grace, KPIS.md §3).
RENEWAL_AHEAD_DAYS = 45
RENEWAL_OVERDUE_DAYS = 30
# Won revenue of the last 12 months against the 12 months before: full from this share on, half from the
# second; a first year of revenue gets full points, no revenue in either year half.
REVENUE_FULL_SHARE = "0.9"
REVENUE_HALF_SHARE = "0.5"
REVENUE_WINDOW_DAYS = 365
# The owner's activities on the account: full points from this many, half for one.
OWNER_FULL_ACTIVITIES = 2


@dataclass(frozen=True)
class Component:
    """One part of the score: its weight on ``HealthSettings`` (``code`` + "_weight"), its points on
    ``CustomerHealth`` (``code`` + "_points") and the rule a page shows beside them."""

    code: str
    label: Promise
    rule: Promise
    default_weight: int

    @property
    def weight_field(self) -> str:
        return f"{self.code}_weight"

    @property
    def points_field(self) -> str:
        return f"{self.code}_points"


COMPONENTS = (
    Component(
        "recency",
        _("Recent contact"),
        _(
            "Last done activity or won deal: full points within 30 days, half within 90 days, none after "
            "that or never."
        ),
        20,
    ),
    Component(
        "satisfaction",
        _("Satisfaction"),
        _(
            "Latest NPS or CSAT answer of the last 12 months: full for a promoter (NPS 9–10, CSAT 4–5), half "
            "for a passive (NPS 7–8, CSAT 3) or no answer, none for a detractor (NPS 0–6, CSAT 1–2)."
        ),
        20,
    ),
    Component(
        "complaints",
        _("Complaints"),
        _("Complaint tickets opened in the last 90 days: full for none, half for one, none for two or more."),
        15,
    ),
    Component(
        "sla",
        _("SLA breaches"),
        _(
            "Tickets that missed their first-response or resolution time in the last 90 days: full for none, "
            "half for one, none for two or more."
        ),
        10,
    ),
    Component(
        "renewal",
        _("Renewal"),
        _(
            "None when a subscription's term ends within 45 days (or ended up to 30 days ago) and no renewal "
            "deal is open or won for it; full otherwise."
        ),
        15,
    ),
    Component(
        "revenue",
        _("Revenue trend"),
        _(
            "Won revenue of the last 12 months against the 12 months before: full from 90 % (or a first year "
            "of revenue), half from 50 % (or no revenue in either year), none below."
        ),
        10,
    ),
    Component(
        "owner",
        _("Owner's attention"),
        _(
            "Activities of the account's owner on it in the last 90 days: full for two or more, half for "
            "one, none without."
        ),
        10,
    ),
)
BY_CODE = {c.code: c for c in COMPONENTS}
DEFAULT_WEIGHTS = {c.code: c.default_weight for c in COMPONENTS}
# Band thresholds: below the first a customer is critical, below the second at risk, healthy from it on.
DEFAULT_CRITICAL_BELOW = 50
DEFAULT_AT_RISK_BELOW = 75
