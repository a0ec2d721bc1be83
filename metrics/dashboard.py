"""The dashboard's view model, built from snapshot rows only (a fixed handful of queries at any data size).

``dashboard_context`` reads every KPI's series for one scope in one query, the targets in another, and
turns them into cards (value, change, target, sparkline) and chart series. Nothing here touches the CRM
tables, so the page costs the same with a thousand deals or a million.
"""

import hashlib
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import TextChoices
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.formats import number_format as django_number_format
from django.utils.safestring import SafeString
from django.utils.translation import get_language, gettext_lazy, ngettext, pgettext
from django.utils.translation import gettext as _
from redis.exceptions import RedisError

from accounts.models import Team, User
from crm.models import Campaign, Source
from crm.ops import replica
from metrics import contribution, selectors, stats
from metrics.kpis import charts as kpi_charts
from metrics.kpis import in_section, registry
from metrics.kpis.base import Basis, Better, Chart, Family, Kpi, Plot, Question, Section, Significance, Unit
from metrics.kpis.campaigns import CampaignDetail
from metrics.kpis.details import (
    CohortDetail,
    MeanDetail,
    NpsDetail,
    ProportionDetail,
    ResponseDetail,
    RevenueRetentionDetail,
    RoiDetail,
    SlaDetail,
    WaterfallDetail,
)
from metrics.kpis.dimensions import DIMENSIONS
from metrics.models import Granularity, KpiSnapshot, KpiTarget, Scope, SnapshotRun
from metrics.periods import Period, period_of
from metrics.selectors import SnapshotValues
from metrics.services import CACHE_GENERATION_KEY

RANGES = (6, 12, 24, 36)
DEFAULT_RANGE = {"week": 12, "month": 12, "quarter": 8, "year": 3}
# Data older than this is called stale on the dashboard (the beat schedule refreshes every few minutes).
STALE_AFTER_MINUTES = 30
# Rendered snapshot fragments are dropped by the next recompute or target change, or after this anyway.
FRAGMENT_CACHE_SECONDS = 600
# No pace to the target before this share of the period has elapsed (KPIS.md §10.3).
PACE_FROM = 0.2
# The confidence level of every interval and test shown (KPIS.md §10.2).
LEVEL = {"level": 95}


@dataclass
class Filters:
    """What the dashboard shows: granularity, the last period and how many periods, and whose numbers."""

    granularity: str
    period: Period
    count: int
    scope: str = Scope.COMPANY
    scope_id: str = ""
    team: Team | None = None
    rep: User | None = None
    campaign: Campaign | None = None

    @property
    def label(self) -> str:
        from metrics.charts import period_label

        return f"{period_label(self.period)} · {Granularity(self.granularity).label}"

    def scope_of(self, kpi: Kpi) -> str:
        """The scope ``kpi`` is read in: a support agent's CSAT and CES are those of the tickets they
        were assigned (the agent scope), not of the customers they own (none)."""
        person = self.rep
        if self.scope == Scope.USER and person is not None and person.is_agent and Scope.AGENT in kpi.scopes:
            return Scope.AGENT
        return self.scope

    @property
    def running(self) -> bool:
        """The shown period has not ended: its numbers are to date (KPIS.md §10.1)."""
        return self.period.start <= timezone.now() < self.period.end

    @property
    def to_date_label(self) -> str:
        """E.g. "month to date, 6 of 31 days" for a running period."""
        today, first = timezone.localdate(), self.period.first_day
        days = (self.period.next().first_day - first).days
        elapsed = min(days, (today - first).days + 1)
        return _("%(period)s to date, %(elapsed)s of %(days)s days") % {
            "period": Granularity(self.granularity).label.lower(),
            "elapsed": elapsed,
            "days": days,
        }

    @property
    def periods(self) -> list[Period]:
        return [self.period.previous(steps) for steps in range(self.count - 1, -1, -1)]

    @property
    def periods_read(self) -> list[Period]:
        """The shown periods and the one before the first (its change needs its predecessor)."""
        return [self.period.previous(self.count), *self.periods]


def period_exposure(period: Period, now: datetime | None = None) -> tuple[float, float]:
    """Days of ``period`` elapsed by ``now`` (all of it once it has ended) and days of the one before:
    the exposures a count's change is tested with (KPIS.md §10.2)."""
    now = now or timezone.now()
    before = period.previous()
    elapsed = (min(max(now, period.start), period.end) - period.start).total_seconds() / 86400
    return max(elapsed, 1 / 24), (before.end - before.start).total_seconds() / 86400


def _counts(*values: Decimal | int | None) -> list[int] | None:
    """``values`` as whole non-negative numbers, or None if any is not one (an amount, a missing value)."""
    counts = []
    for value in values:
        if value is None or value < 0 or value != int(value):
            return None
        counts.append(int(value))
    return counts


def change_p_value(
    kpi: Kpi,
    now: "SnapshotValues | KpiSnapshot | None",
    before: "SnapshotValues | KpiSnapshot | None",
    exposure: tuple[float, float] = (1.0, 1.0),
) -> float | None:
    """The two-sided p-value that ``kpi`` really changed from ``before`` to ``now``, by the test its
    declaration names (KPIS.md §10.2); None when there is no test or it cannot be made."""
    if now is None or before is None or now.value is None or before.value is None:
        return None
    match kpi.significance:
        case Significance.PROPORTION:
            counts = _counts(now.numerator, now.denominator, before.numerator, before.denominator)
            return stats.two_proportions(*counts) if counts else None
        case Significance.COUNT:
            counts = _counts(now.value, before.value)
            return stats.poisson_rates(counts[0], exposure[0], counts[1], exposure[1]) if counts else None
        case Significance.NPS:
            a, b = kpi.details_of(now.extra), kpi.details_of(before.extra)
            if getattr(a, "se", None) is None or getattr(b, "se", None) is None:
                return None
            return stats.nps_difference(float(now.value), a.se, float(before.value), b.se)
        case Significance.MEAN:
            a, b = kpi.details_of(now.extra), kpi.details_of(before.extra)
            sd1, sd2 = getattr(a, "sd", None), getattr(b, "sd", None)
            n1, n2 = now.sample_size, before.sample_size
            if None in (sd1, sd2, n1, n2):
                return None
            return stats.welch(float(now.value), sd1, n1, float(before.value), sd2, n2)
    return None


class Verdict(TextChoices):
    BETTER = "better", gettext_lazy("better")
    WORSE = "worse", gettext_lazy("worse")
    STEADY = "steady", gettext_lazy("steady")
    NO_DATA = "no_data", gettext_lazy("not enough data")


def compared_values(compared: Mapping[str, Any], computed_at: datetime) -> SnapshotValues:
    """A snapshot's ``compared`` (the same elapsed days of the period before, KPIS.md §10.1) read as the
    values of a snapshot: what cards, explanations and downloads compare a running period with."""

    def dec(key: str) -> Decimal | None:
        return None if compared.get(key) is None else Decimal(str(compared[key]))

    return SnapshotValues(dec("value"), dec("numerator"), dec("denominator"), compared.get("n"), {}, False,
                          computed_at, 0)  # fmt: skip


@dataclass
class Card:
    kpi: Kpi
    snapshot: "SnapshotValues | KpiSnapshot | None"
    previous: "SnapshotValues | KpiSnapshot | None"
    target: KpiTarget | None
    series: list[tuple[date, Decimal | None]] = field(default_factory=list)
    # Days of the shown period elapsed and of the one before (for the test of a count's change).
    exposure: tuple[float, float] = (1.0, 1.0)
    # The shown period (for the pace to its target) and the time the card is read at.
    period: Period | None = None
    now: datetime | None = None
    # Counts to test instead of the two values (e.g. months taken together, whose values are means).
    counts: tuple[Decimal, Decimal] | None = None
    # One sentence naming the team or person that moved the number most (KPIS.md §10.4; managers).
    why: str | None = None

    @property
    def value(self) -> Decimal | None:
        return self.snapshot.value if self.snapshot else None

    @cached_property
    def compared(self) -> dict[str, Any] | None:
        """For a week or month still running: the same elapsed days of the period before, as the engine
        stored them with the snapshot (KPIS.md §10.1); None otherwise (compared with the whole period)."""
        if self.snapshot is None or self.period is None:
            return None
        now = self.now or timezone.now()
        if not (self.period.start <= now < self.period.end):
            return None
        return self.kpi.details_of(self.snapshot.extra).compared

    @cached_property
    def baseline(self) -> "SnapshotValues | KpiSnapshot | None":
        """What the value is compared with: the same days of the period before while a period runs (for
        the KPIs made of sums and counts), otherwise the whole period before."""
        c = self.compared
        if c is None:
            return self.previous
        return compared_values(c, self.snapshot.computed_at)

    @property
    def compared_label(self) -> str | None:
        """E.g. "vs 1 Nov – 6 Nov": the span a running period is compared with."""
        c = self.compared
        if c is None:
            return None
        first = date.fromisoformat(c["from"])
        last = date.fromisoformat(c["until"]) - timedelta(days=1)
        return _("vs %(first)s – %(last)s") % {
            "first": date_format(first, "MONTH_DAY_FORMAT"),
            "last": date_format(last, "MONTH_DAY_FORMAT"),
        }

    @property
    def display(self) -> str:
        return format_value(self.kpi, self.value)

    @cached_property
    def change(self) -> dict[str, Any] | None:
        """Change against the previous period (like for like while a period runs): text, direction and
        whether that direction is good."""
        if self.value is None or self.baseline is None or self.baseline.value is None:
            return None
        now, before = self.value, self.baseline.value
        if self.kpi.unit in (Unit.PERCENT, Unit.POINTS):
            delta = now - before
            text = format_change(self.kpi, delta)
        elif before == 0:
            return None
        else:
            delta = (now - before) / abs(before) * 100
            text = f"{delta:+.0f} %"
        # Coloured only when the change is real (KPIS.md §10.2): significant at 95 % by the KPI's test,
        # with enough answers or events on both sides. Otherwise it is "within normal variation".
        p = self.p_value if self.comparable else None
        significant = p is not None and p < stats.ALPHA
        if delta == 0 or self.kpi.better == Better.NEUTRAL or not significant:
            good = None
        else:
            good = (delta > 0) == (self.kpi.better == Better.UP)
        return {
            "text": text,
            "up": delta > 0,
            "flat": delta == 0,
            "good": good,
            "significant": significant,
            "noise": p is not None and not significant,
            "arrow": not self.low_sample,
        }

    @cached_property
    def verdict(self) -> str:
        """Better, worse, steady or not enough data (KPIS.md §10.5): better or worse only on a significant
        change, or on a target met or missed (at the pace of a running period)."""
        if self.value is None or self.low_sample:
            return Verdict.NO_DATA
        change = self.change
        if change and change["good"] is not None:
            return Verdict.BETTER if change["good"] else Verdict.WORSE
        pace = self.pace
        if pace and not pace["early"]:
            return Verdict.BETTER if pace["on_track"] else Verdict.WORSE
        progress = None if pace else self.target_progress
        if progress is not None:
            return Verdict.BETTER if progress >= 100 else Verdict.WORSE
        if change is None:
            return Verdict.NO_DATA
        return Verdict.STEADY

    @cached_property
    def p_value(self) -> float | None:
        if self.counts is not None and self.kpi.significance == Significance.COUNT:
            counts = _counts(*self.counts)
            return (
                stats.poisson_rates(counts[0], self.exposure[0], counts[1], self.exposure[1])
                if counts
                else None
            )
        # Like for like: the same number of days on both sides.
        exposure = (1.0, 1.0) if self.compared else self.exposure
        return change_p_value(self.kpi, self.snapshot, self.baseline, exposure)

    @property
    def target_display(self) -> str:
        return format_value(self.kpi, self.target.value if self.target else None)

    @cached_property
    def pace(self) -> dict[str, Any] | None:
        """Pace to the target in a period still running (KPIS.md §10.3): a count or amount of events
        projected to the period's end from the time elapsed; a ratio or a state as it stands. None when
        the period has ended (the value is final) or has no target; ``early`` before 20 % has elapsed."""
        if self.target is None or self.value is None or self.period is None or not self.target.value:
            return None
        now = self.now or timezone.now()
        if not (self.period.start <= now < self.period.end):
            return None
        elapsed = (now - self.period.start) / (self.period.end - self.period.start)
        if elapsed < PACE_FROM:
            return {"early": True}
        additive = self.kpi.basis == Basis.PERIOD and self.kpi.unit in (Unit.COUNT, Unit.CURRENCY)
        projected = self.value / Decimal(elapsed) if additive else self.value
        percent = _share_of_target(self.kpi, projected, self.target.value)
        return {
            "early": False,
            "projected": projected,
            "projected_display": format_value(self.kpi, projected),
            "percent": percent,
            "on_track": percent >= 100,
        }

    @property
    def target_progress(self) -> int | None:
        """How far toward the target, 0–100 (for "lower is better", reaching it counts 100): at this pace
        while the period runs, the value once it has ended."""
        if self.target is None or self.value is None or not self.target.value:
            return None
        pace = self.pace
        if pace is not None:
            return None if pace["early"] else max(0, min(100, pace["percent"]))
        return max(0, min(100, _share_of_target(self.kpi, self.value, self.target.value)))

    @property
    def sample_size(self) -> int | None:
        return self.snapshot.sample_size if self.snapshot else None

    @property
    def shows_sample(self) -> bool:
        return self.kpi.family == Family.SATISFACTION or self.kpi.unit in (Unit.DAYS, Unit.HOURS)

    @property
    def details(self) -> Any:
        return self.kpi.details_of(self.snapshot.extra if self.snapshot else None)

    @property
    def low_sample(self) -> bool:
        """Fewer answers or events than the KPI's minimum sample in the shown period (KPIS.md §10.2): the
        value is muted, without an arrow or colour."""
        return _below_minimum(self.kpi, self.snapshot)

    @property
    def comparable(self) -> bool:
        """Both periods have the KPI's minimum sample: only then is a change tested."""
        return not (self.low_sample or _below_minimum(self.kpi, self.baseline))

    @property
    def sparkline(self) -> str:
        return sparkline_points([v for _d, v in self.series])


def number_format(value: Decimal | float | int, places: int, *, force_grouping: bool = False) -> str:
    """``value`` with ``places`` decimals in the active language, rounded half away from zero (Django's
    own number_format cuts the digits off: 611.6 with no decimals reads "611")."""
    rounded = Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    # −0.04 with one decimal is 0.0, not "-0.0".
    return django_number_format(rounded if rounded else abs(rounded), places, force_grouping=force_grouping)


def signed(value: Decimal | float, places: int) -> str:
    """``value`` with its sign (+ for zero), rounded half up: "+4.3", "-0.5"."""
    shown = number_format(abs(value), places)
    rounded = Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return ("-" if rounded < 0 else "+") + shown


def format_change(kpi: Kpi, delta: Decimal) -> str:
    """A signed change in the KPI's own unit: percentage points, points, money, a count."""
    if kpi.unit == Unit.PERCENT:
        return _signed_points(delta)
    if kpi.unit == Unit.POINTS:
        return f"{signed(delta, 0)} " + _("points")
    sign = "+" if delta > 0 else ("−" if delta < 0 else "")
    return sign + format_value(kpi, abs(delta))


def _share_of_target(kpi: Kpi, value: Decimal, target: Decimal) -> int:
    """The value as a percentage of the target, read the good way (for "lower is better", target ÷ value)."""
    if kpi.better == Better.DOWN:
        return int(target / value * 100) if value else 100
    return int(value / target * 100)


def _below_minimum(kpi: Kpi, snapshot: "SnapshotValues | KpiSnapshot | None") -> bool:
    n = snapshot.sample_size if snapshot is not None and snapshot.value is not None else None
    return n is not None and n < kpi.min_sample


def format_value(kpi: Kpi, value: Decimal | None) -> str:
    """A KPI value as a manager reads it: "—" for no data, units and sensible precision otherwise."""
    if value is None:
        return "—"
    if kpi.unit == Unit.CURRENCY:
        return f"{number_format(value, 0, force_grouping=True)} {settings.CRM_CURRENCY}"
    if kpi.unit == Unit.CURRENCY_PER_DAY:
        amount = number_format(value, 0, force_grouping=True)
        return _("%(amount)s %(currency)s/day") % {"amount": amount, "currency": settings.CRM_CURRENCY}
    if kpi.unit == Unit.PERCENT:
        return f"{number_format(value, 1)} %"
    if kpi.unit == Unit.DAYS:
        return _("%(n)s d") % {"n": number_format(value, 1)}
    if kpi.unit == Unit.HOURS:
        return _("%(n)s h") % {"n": number_format(value, 1)}
    if kpi.unit == Unit.RATIO:
        return f"{number_format(value, 2)}×"
    if kpi.unit == Unit.POINTS:
        # NPS is a whole number (KPIS.md §1), rounded half up; −0 from rounding reads as 0.
        return number_format(value, 0)
    if kpi.unit == Unit.COUNT:
        return number_format(value, 0, force_grouping=True)
    return number_format(value, 1, force_grouping=True)


def detail_facts(kpi: Kpi, extra: dict | None) -> list[tuple[str, str]]:
    """A snapshot's details as a manager reads them: (label, formatted value) pairs, in both languages.

    Only what the KPI's detail class holds and what is known is listed; raw internal values never are.
    """
    d = kpi.details_of(extra)
    facts = next((facts_of(d) for kind, facts_of in _FACTS if isinstance(d, kind)), [])
    return [(str(label), value) for label, value in facts if value is not None]


Facts = list[tuple[Any, str | None]]


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{number_format(value, 1)} %"


def _amount(value: float | None) -> str | None:
    return (
        None if value is None else f"{number_format(value, 0, force_grouping=True)} {settings.CRM_CURRENCY}"
    )


def _plus_minus(value: float | None, places: int) -> str | None:
    return None if value is None else f"± {number_format(value, places)}"


def _nps_facts(d: NpsDetail) -> Facts:
    shares = [_pct(v) for v in (d.promoters_pct, d.passives_pct, d.detractors_pct) if v is not None]
    facts: Facts = [
        (_("Promoters / passives / detractors"), " / ".join(s for s in shares if s) or None),
        (_("%(level)s %% margin of error") % LEVEL, _plus_minus(d.moe95, 0)),
    ]
    if d.significant is not None:
        significant = _("yes (%(level)s %%)") % LEVEL if d.significant else _("no — within the noise")
        facts.append((_("Change significant?"), significant))
    return facts


def _proportion_facts(d: ProportionDetail) -> Facts:
    facts: Facts = []
    if d.wilson_low is not None:
        interval = f"{number_format(d.wilson_low, 1)} – {_pct(d.wilson_high)}"
        facts.append((_("%(level)s %% interval") % LEVEL, interval))
    facts.append((_("Mean score"), None if d.mean is None else number_format(d.mean, 2)))
    return facts


def _mean_facts(d: MeanDetail) -> Facts:
    facts: Facts = []
    if d.scale_min is not None:
        facts.append((_("Scale"), f"{d.scale_min}–{d.scale_max}"))
    facts += [
        (_("%(level)s %% margin of error") % LEVEL, _plus_minus(d.moe95, 2)),
        (_("Easy answers"), _pct(d.easy_pct)),
    ]
    return facts


def _response_facts(d: ResponseDetail) -> Facts:
    if d.delivered is None:
        return []
    return [
        (_("Delivered"), str(d.delivered)),
        (_("Opened"), str(d.opened)),
        (_("Score submitted"), str(d.started)),
        (_("Completed"), str(d.completed)),
        (_("Drop-off"), _pct(d.drop_off_pct)),
    ]


def _roi_facts(d: RoiDetail) -> Facts:
    facts: Facts = []
    if d.missing:
        facts.append((_("Missing input"), _("the go-live date")))
    if d.horizon:
        facts.append((_("From go-live to"), f"{d.horizon[0][:7]} – {d.horizon[1][:7]}"))
    payback = None
    if d.payback_months is not None:
        payback = _("%(n)s months") % {"n": number_format(d.payback_months, 1)}
    facts += [
        (_("Costs so far"), _amount(d.costs)),
        (_("Gains so far"), _amount(d.gains)),
        (_("of which time saved"), _amount(d.time_saved_value)),
        (_("Licensed user-months"), str(d.licensed_user_months) if d.licensed_user_months else None),
        (_("Win rate since go-live"), _pct(d.win_rate_after_go_live)),
        (_("Win rate the 12 months before"), _pct(d.win_rate_baseline)),
        (_("Win-rate uplift"), _uplift(d)),
        (_("ROI, %(level)s %% range") % LEVEL, _roi_range(d)),
        (_("Closed amount since go-live"), _amount(d.closed_amount)),
        (_("Gross margin"), _pct(d.gross_margin_percent)),
        (_("Pays back after"), payback),
    ]
    return facts


def _sla_facts(d: SlaDetail) -> Facts:
    if d.first_response is None:
        return []
    return [
        (label, _("%(met)s of %(total)s met") % {"met": met, "total": total})
        for label, (met, total) in ((_("First response"), d.first_response), (_("Resolution"), d.resolution))
    ]


def _amount_of(value: float | None, customers: int | None) -> str | None:
    """E.g. "12,400 CNY (3 customers)"."""
    shown = _amount(value)
    if shown is None or customers is None:
        return shown
    return ngettext("%(amount)s (%(n)s customer)", "%(amount)s (%(n)s customers)", customers) % {
        "amount": shown,
        "n": customers,
    }


def _days(first: str, until: str) -> str:
    """A half-open span of local days as its first and last day: "1 Oct 2025 – 31 Dec 2025"."""
    days = (date.fromisoformat(first), date.fromisoformat(until) - timedelta(days=1))
    return " – ".join(date_format(day, "SHORT_DATE_FORMAT") for day in days)


def _revenue_retention_facts(d: RevenueRetentionDetail) -> Facts:
    windows = None
    if d.windows:
        earlier, later, until = d.windows
        windows = _("%(later)s against %(earlier)s") % {
            "later": _days(later, until),
            "earlier": _days(earlier, later),
        }
    return [
        (_("Revenue of the base in the earlier 12 months"), _amount(d.base)),
        (_("Expansion"), _amount_of(d.expansion, d.expanded)),
        (_("Contraction"), _amount_of(d.contraction, d.contracted)),
        (_("Churned revenue"), _amount_of(d.churned, d.lost)),
        (_("Windows compared"), windows),
    ]


def _waterfall_facts(d: WaterfallDetail) -> Facts:
    before, now = pgettext("waterfall", "Before"), pgettext("waterfall", "Now")
    if d.spans:
        before = _("Before: %(days)s") % {"days": _days(*d.spans[:2])}
        now = _("Now: %(days)s") % {"days": _days(*d.spans[2:])}
    return [
        (before, _amount(d.previous)),
        (pgettext("revenue waterfall", "New"), _amount_of(d.new, d.new_customers)),
        (pgettext("revenue waterfall", "Expansion"), _amount_of(d.expansion, d.expanded)),
        (pgettext("revenue waterfall", "Contraction"), _amount_of(d.contraction, d.contracted)),
        (pgettext("revenue waterfall", "Churned"), _amount_of(d.churned, d.lost)),
        (pgettext("revenue waterfall", "Reactivated"), _amount_of(d.reactivated, d.reactivated_customers)),
        (now, _amount(d.current)),
    ]


def _cohort_facts(d: CohortDetail) -> Facts:
    if d.month is None:
        return []
    return [(_("Read at the end of month"), str(d.month))]


# The facts each kind of snapshot detail shows, the first matching kind wins.
_FACTS: tuple[tuple[type, Callable[[Any], Facts]], ...] = (
    (NpsDetail, _nps_facts),
    (ProportionDetail, _proportion_facts),
    (MeanDetail, _mean_facts),
    (ResponseDetail, _response_facts),
    (RoiDetail, _roi_facts),
    (SlaDetail, _sla_facts),
    (CampaignDetail, CampaignDetail.facts),
    (RevenueRetentionDetail, _revenue_retention_facts),
    (WaterfallDetail, _waterfall_facts),
    (CohortDetail, _cohort_facts),
)


def _signed_points(value: Decimal | float) -> str:
    """A change in percentage points: "+4.3 pp"."""
    return f"{signed(value, 1)} " + _("pp")


def _uplift(d: RoiDetail) -> str | None:
    """E.g. "+4.0 pp (95 % interval −1.2 to +9.1 pp)": the uplift the ROI attributes, and its error."""
    if d.win_rate_uplift is None:
        return None
    shown = _signed_points(d.win_rate_uplift)
    if d.win_rate_uplift_low is None or d.win_rate_uplift_high is None:
        return shown
    return _("%(uplift)s (%(level)s %% interval %(low)s to %(high)s)") % {
        **LEVEL,
        "uplift": shown,
        "low": _signed_points(d.win_rate_uplift_low),
        "high": _signed_points(d.win_rate_uplift_high),
    }


def _roi_range(d: RoiDetail) -> str | None:
    """The ROI at the two ends of the uplift's interval, e.g. "12 % to 48 %"."""
    if d.roi_low is None or d.roi_high is None:
        return None
    return _("%(low)s %% to %(high)s %%") % {
        "low": number_format(d.roi_low, 0),
        "high": number_format(d.roi_high, 0),
    }


def export_value(kpi: Kpi, value: Decimal | None) -> float | int | None:
    """A KPI value as a download carries it: a number (NPS as the whole number it is shown as)."""
    if value is None:
        return None
    if kpi.unit == Unit.POINTS:
        return round(value)
    return float(value)


def sparkline_points(values: list[Decimal | None], width: int = 120, height: int = 28) -> str:
    """SVG polyline points of a tiny trend line; gaps (no data) are skipped, a flat series sits mid-height."""
    known = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return ""
    low, high = min(v for _i, v in known), max(v for _i, v in known)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    points = []
    for i, v in known:
        y = height / 2 if high == low else height - 2 - (v - low) / span * (height - 4)
        points.append(f"{i * step:.1f},{y:.1f}")
    return " ".join(points)


def resolve_filters(
    *,
    user: User,
    granularity: str | None,
    period: str | None,
    count: int | None,
    team: Team | None,
    rep: User | None,
    campaign: Campaign | None = None,
) -> Filters:
    """Turn (already validated) filter values into Filters; a rep always gets their own scope; a manager's
    campaign is that campaign's figures (the campaign KPIs, KPIS.md §10.11)."""
    granularity = granularity or "month"
    now_period = period_of(timezone.now(), granularity)
    chosen = now_period
    if period:
        try:
            chosen = period_of(date.fromisoformat(period), granularity)
        except ValueError:
            chosen = now_period
    chosen = min(chosen, now_period)
    filters = Filters(granularity=granularity, period=chosen, count=count or DEFAULT_RANGE[granularity])
    if not user.is_manager:
        filters.scope, filters.scope_id, filters.rep = Scope.USER, str(user.pk), user
    elif rep is not None:
        filters.scope, filters.scope_id, filters.rep = Scope.USER, str(rep.pk), rep
    elif team is not None:
        filters.scope, filters.scope_id, filters.team = Scope.TEAM, str(team.pk), team
    elif campaign is not None:
        filters.scope, filters.scope_id, filters.campaign = Scope.CAMPAIGN, str(campaign.pk), campaign
    return filters


def visible_kpis(filters: Filters) -> list[Kpi]:
    """The KPIs that exist for the filters' scope and granularity, in registry order."""
    return [
        kpi
        for kpi in registry().values()
        if filters.scope in kpi.scopes and filters.granularity in kpi.granularities
    ]


def _by_scope(filters: Filters, kpis: list[Kpi]) -> dict[str, list[str]]:
    """The codes of ``kpis`` per scope they are read in (one scope, but for a support agent two)."""
    found: dict[str, list[str]] = {}
    for kpi in kpis:
        found.setdefault(filters.scope_of(kpi), []).append(kpi.code)
    return found


def load_series(filters: Filters, kpis: list[Kpi]) -> dict[str, dict[date, SnapshotValues]]:
    """Every snapshot of ``kpis`` for the filters' scope and periods: one query (per scope read)."""
    series: dict[str, dict[date, SnapshotValues]] = {}
    for scope, codes in _by_scope(filters, kpis).items():
        series |= selectors.kpi_series(
            kpis=codes,
            granularity=filters.granularity,
            periods=filters.periods_read,
            scope=scope,
            scope_id=filters.scope_id,
        )
    return series


def load_targets(filters: Filters, kpis: list[Kpi]) -> dict[str, dict[date, KpiTarget]]:
    """The targets of ``kpis`` for the filters' scope and periods: one query (targets are set for the
    company, teams and people)."""
    return selectors.kpi_targets(
        kpis=[k.code for k in kpis],
        granularity=filters.granularity,
        periods=filters.periods_read,
        scope=filters.scope,
        scope_id=filters.scope_id,
    )


def build_cards(
    filters: Filters,
) -> tuple[list[tuple[str, list[Card]]], dict[str, dict[date, SnapshotValues]]]:
    """Cards grouped by family, and the raw series the charts are drawn from."""
    kpis = visible_kpis(filters)
    series, targets = load_series(filters, kpis), load_targets(filters, kpis)
    shown = [p.first_day for p in filters.periods]
    current, previous = filters.period.first_day, filters.period.previous().first_day
    exposure = period_exposure(filters.period)
    by_family: dict[str, list[Card]] = {}
    for kpi in kpis:
        rows = series.get(kpi.code, {})
        by_family.setdefault(kpi.family, []).append(
            Card(
                kpi=kpi,
                snapshot=rows.get(current),
                previous=rows.get(previous),
                target=targets.get(kpi.code, {}).get(current),
                series=[(day, rows[day].value if day in rows else None) for day in shown],
                exposure=exposure,
                period=filters.period,
            )
        )
    families = [(label, by_family[value]) for value, label in Family.choices if value in by_family]
    return families, series


def explain(
    kpi: Kpi,
    now: dict[str, "SnapshotValues | KpiSnapshot"],
    before: dict[str, "SnapshotValues | KpiSnapshot"],
    *,
    like_for_like: bool,
) -> list[contribution.Contribution] | None:
    """The change of ``kpi`` split over the segments of a breakdown (KPIS.md §10.4): ``now`` and
    ``before`` are the segments' snapshots of the shown period and the one before, by scope id.

    With ``like_for_like`` (the shown week or month is still running), each segment is compared with
    the same elapsed days of the period before, as the engine stored them with its snapshot (as the card
    itself is); a KPI without such values is compared with the whole period before, as its card is.
    (A segment with numbers on those days but none yet in the running period has no row to carry them:
    it is missing from such a comparison until its first record of the period.)
    None for a KPI that is neither a ratio nor a sum or level (a median, a mean, a current state).
    """
    if kpi.unit == Unit.PERCENT:
        scale: Decimal | None = Decimal(100)
    elif kpi.unit in (Unit.COUNT, Unit.CURRENCY) and kpi.basis in (Basis.PERIOD, Basis.STOCK):
        scale = None  # events, or a level (the pipeline, the backlog): both add up over the segments
    else:
        return None
    segments_now = {key: contribution.segment(s) for key, s in now.items()}
    segments_before = {}
    if like_for_like:
        compared = {key: (kpi.details_of(s.extra).compared, s.computed_at) for key, s in now.items()}
        segments_before = {
            key: contribution.segment(compared_values(c, at)) for key, (c, at) in compared.items() if c
        }
    if not segments_before:
        segments_before = {key: contribution.segment(s) for key, s in before.items()}
    if not segments_before:
        return None
    if scale is not None:
        return contribution.of_ratio(segments_now, segments_before, scale)
    return contribution.of_sums(segments_now, segments_before)


def why_sentence(
    kpi: Kpi, found: list[contribution.Contribution] | None, names: dict[str, str]
) -> str | None:
    """E.g. "Mostly North: +4.2 pp (n = 38)": the segment that moved the number most its way."""
    if not found:
        return None
    top = contribution.biggest(found, minimum=kpi.min_sample)
    if top is None:
        return None
    return contributor_sentence(kpi, names.get(top.key, top.key), top.ranked_by, top.n)


def contributor_sentence(kpi: Kpi, name: str, change: Decimal, n: int | None) -> str:
    """The sentence naming a segment and its contribution (also an alert's, from what it stored)."""
    values = {"name": name, "change": format_change(kpi, change)}
    if n is None:
        return _("Mostly %(name)s: %(change)s") % values
    return _("Mostly %(name)s: %(change)s (n = %(n)s)") % {**values, "n": n}


def explain_cards(families: list[tuple[str, list[Card]]], filters: Filters, user: User) -> None:
    """Give each card the one-sentence summary of why it changed: by team on the company's dashboard, by
    person on a team's. Two queries (the segments' snapshots, their names); managers only."""
    if not user.is_manager or filters.scope not in (Scope.COMPANY, Scope.TEAM):
        return
    scope = Scope.TEAM if filters.scope == Scope.COMPANY else Scope.USER
    members = None
    if filters.team is not None:
        members = [str(pk) for pk in filters.team.members.values_list("pk", flat=True)]
    cards = [c for _label, cards in families for c in cards if scope in c.kpi.scopes and c.value is not None]
    current, previous = filters.period.start, filters.period.previous().start
    segments = selectors.kpi_segments(
        user=user,
        kpis=[c.kpi.code for c in cards],
        granularity=filters.granularity,
        period_starts=[current, previous],
        scope=scope,
        scope_ids=members,
    )
    if not segments:
        return
    keys = {key for rows in segments.values() for key in rows}
    names = DIMENSIONS[scope].names(keys)
    for card in cards:
        now = segments.get((card.kpi.code, current), {})
        before = segments.get((card.kpi.code, previous), {})
        found = explain(card.kpi, now, before, like_for_like=filters.running)
        card.why = why_sentence(card.kpi, found, names)


def scorecard(families: list[tuple[str, list[Card]]]) -> list[dict[str, Any]]:
    """One line per question the product answers (KPIS.md §10.5), from the cards already built (no query
    of its own): its KPIs' cards, and the verdict of the first with enough data (the headline)."""
    by_question: dict[str, list[Card]] = {}
    for _label, cards in families:
        for card in cards:
            if card.kpi.question:
                by_question.setdefault(card.kpi.question, []).append(card)
    lines = []
    for question, label in Question.choices:
        cards = by_question.get(question)
        if not cards:
            continue
        headline = next((c for c in cards if c.verdict != Verdict.NO_DATA), cards[0])
        verdict = headline.verdict
        lines.append({"question": label, "cards": cards, "headline": headline, "verdict": Verdict(verdict)})
    return lines


# The families a role's dashboard leads with: an agent's service and satisfaction (their tickets' CSAT and
# CES), a rep's sales and their customers' retention; a manager's keep the registry's order.
LEADS_WITH = {
    User.Role.AGENT: (Family.SERVICE, Family.SATISFACTION),
    User.Role.REP: (Family.SALES, Family.RETENTION),
}


def for_role(families: list[tuple[str, list[Card]]], user: User) -> list[tuple[str, list[Card]]]:
    """The families in the order ``user``'s role reads them; for a rep or an agent a family without a
    single number is left out (not a wall of "—")."""
    if not user.is_manager:
        families = [(label, cards) for label, cards in families if any(c.value is not None for c in cards)]
    lead = LEADS_WITH.get(user.role, ())

    def place(family: tuple[str, list[Card]]) -> int:
        code = family[1][0].kpi.family
        return lead.index(code) if code in lead else len(lead)

    return sorted(families, key=place)


# Charts
# ---------------------------------------------------------------------------------------------------------

# People on the by-person chart (the KPI's page lists everyone).
BY_PERSON_LIMIT = 30


def build_charts(filters: Filters, series: dict[str, dict[date, SnapshotValues]], user: User) -> list[dict]:
    """The dashboard's charts: every chart the visible KPIs are drawn on (``Kpi.plots``), in dashboard
    order, from the series already loaded; a by-person chart reads one period's values per person."""
    visible = {kpi.code for kpi in visible_kpis(filters)}
    found = []
    for chart, plots in kpi_charts():
        shown = [(kpi, plot) for kpi, plot in plots if kpi.code in visible]
        if shown and (spec := _chart_spec(chart, shown, filters, series, user)):
            found.append({"id": chart.id, "spec": spec})
    return found


def family_charts(filters: Filters, family: str, user: User) -> list[dict]:
    """The dashboard's charts of one family's KPIs (e.g. adoption on the adoption page)."""
    kpis = [kpi for kpi in visible_kpis(filters) if kpi.family == family]
    series = load_series(filters, kpis)
    found = []
    for chart, plots in kpi_charts():
        shown = [(kpi, plot) for kpi, plot in plots if kpi in kpis]
        if shown and (spec := _chart_spec(chart, shown, filters, series, user)):
            found.append({"id": chart.id, "spec": spec})
    return found


def _interval_of(kpi: Kpi) -> Callable[[SnapshotValues], tuple[float, float] | None] | None:
    """How to read a snapshot's 95 % interval, for the KPIs whose details carry one (whiskers)."""
    if kpi.detail is ProportionDetail:

        def wilson(s: SnapshotValues) -> tuple[float, float] | None:
            d = kpi.details_of(s.extra)
            return None if d.wilson_low is None else (d.wilson_low, d.wilson_high)

        return wilson
    if kpi.detail is MeanDetail:

        def margin(s: SnapshotValues) -> tuple[float, float] | None:
            d = kpi.details_of(s.extra)
            return (
                None
                if d.moe95 is None or s.value is None
                else (float(s.value) - d.moe95, float(s.value) + d.moe95)
            )

        return margin
    return None


def _chart_spec(
    chart: Chart,
    plots: list[tuple[Kpi, Plot]],
    filters: Filters,
    series: dict[str, dict[date, SnapshotValues]],
    user: User,
) -> dict | None:
    from metrics import charts

    periods = filters.periods
    if chart.kind == "lines":
        lines = [
            (str(plot.label or kpi.label), series.get(kpi.code, {}), plot.axis, _interval_of(kpi))
            for kpi, plot in plots
        ]
        if not any(line for _name, line, _axis, _interval in lines):
            return None
        return charts.lines_chart(
            title=str(chart.title),
            periods=periods,
            lines=lines,
            y_title=chart.y_title,
            y2_title=chart.y2_title,
        )
    if chart.kind == "revenue":
        roles = {plot.role: series.get(kpi.code, {}) for kpi, plot in plots}
        return charts.revenue_chart(
            periods=periods,
            revenue=roles.get("bars", {}),
            deals_won=roles.get("line", {}),
            forecast=roles.get("forecast", {}),
            targets={},
            currency=settings.CRM_CURRENCY,
        )
    kpi, _plot = plots[0]
    if chart.kind == "funnel":
        return charts.funnel_chart(kpi, series.get(kpi.code, {}).get(filters.period.first_day))
    if chart.kind == "nps":
        if not series.get(kpi.code):
            return None
        return charts.nps_chart(kpi=kpi, periods=periods, series=series[kpi.code], title=str(chart.title))
    if chart.kind == "by_person":
        if not user.is_manager or filters.scope == Scope.USER:
            return None
        return _by_person_chart(chart, plots, filters)
    raise ValueError(f"unknown chart kind {chart.kind!r}")


def _by_person_chart(chart: Chart, plots: list[tuple[Kpi, Plot]], filters: Filters) -> dict:
    """One bar per rep (the ``bars`` KPI) and a dot (the ``line`` KPI) for the shown period: two queries."""
    from metrics import charts

    roles = {plot.role: (kpi, plot) for kpi, plot in plots}
    bars, line = roles["bars"], roles.get("line")
    values = selectors.kpi_values_by_scope(
        kpis=[kpi.code for kpi, _plot in plots],
        granularity=filters.granularity,
        period_start=filters.period.start,
        scope=Scope.USER,
    )
    names = selectors.rep_names(team=filters.team)
    shown = {k: v for k, v in values.items() if k in names}
    # A readable chart: the best first (the KPI's own page lists everyone).
    order = sorted(shown, key=lambda k: -(shown[k].get(bars[0].code) or -1))[:BY_PERSON_LIMIT]

    def column(kpi: Kpi) -> list[float | None]:
        return [charts._num(shown[k].get(kpi.code)) for k in order]

    title = str(chart.title)
    if len(shown) > BY_PERSON_LIMIT:
        title = _("%(title)s (top %(n)s)") % {"title": title, "n": BY_PERSON_LIMIT}
    return charts.by_user_chart(
        title=title,
        names=[names[k] for k in order],
        bars=column(bars[0]),
        bar_name=str(bars[1].label or bars[0].label),
        y_title=str(chart.y_title),
        line=column(line[0]) if line else None,
        line_name=str(line[1].label or line[0].label) if line else "",
        y2_title=str(chart.y2_title),
    )


def freshness() -> dict[str, Any]:
    """ "Data as of" and health: the last successful run, whether it is stale, and a failure after it."""
    last_ok, latest = selectors.snapshot_runs_health()
    as_of = last_ok.finished_at if last_ok else None
    stale = as_of is None or (timezone.now() - as_of).total_seconds() > STALE_AFTER_MINUTES * 60
    failed = latest if latest and latest.status == SnapshotRun.Status.FAILED else None
    # Redis carries the task queue (while it is down no scheduled recompute runs, so nothing is fresh) and
    # the generation of the cached fragments: one read answers both (short socket timeouts: it fails fast).
    try:
        generation, queue_down = cache.get(CACHE_GENERATION_KEY), False
    except (RedisError, OSError):
        generation, queue_down = None, True
    return {
        "as_of": as_of,
        "stale": stale or queue_down,
        "failed": failed,
        "queue_down": queue_down,
        "generation": generation,
    }


def channel_rows(period: Period, now: datetime | None = None) -> list[dict[str, Any]]:
    """Acquisition by channel: per source, a card per channel KPI (Section.CHANNELS), so a running period
    is compared with the same days of the period before, like the dashboard (KPIS.md §10.1)."""
    kpis = in_section(Section.CHANNELS)
    series = selectors.channel_series(period=period)
    exposure = period_exposure(period, now)
    before = period.previous().first_day
    rows = []
    for code, label in Source.choices:
        values = series.get(code, {})
        cards = {
            kpi.code: Card(
                kpi=kpi,
                snapshot=values.get(kpi.code, {}).get(period.first_day),
                previous=values.get(kpi.code, {}).get(before),
                target=None,
                exposure=exposure,
                period=period,
                now=now,
            )
            for kpi in kpis
        }
        rows.append({"code": code, "source": label, "cards": [cards[k.code] for k in kpis]})
    return rows


def _per_run(freshness: dict[str, Any], key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, cached under ``key`` for the last run (its finish time and the generation that every
    recompute and target change bumps, both from ``freshness()``), so a change shows at once; without
    Redis or before the first run it is computed every time."""
    as_of, generation = freshness["as_of"], freshness["generation"]
    if generation is None or as_of is None:
        return compute()
    full_key = ":".join(map(str, ("metrics", *key, as_of.timestamp(), generation)))
    try:
        value = cache.get(full_key)
    except (RedisError, OSError):
        value = None
    if value is None:
        value = compute()
        # Read from the replica just after a change (a new target), it may not show it yet: shown, not kept.
        young = isinstance(generation, int) and time.time_ns() - generation < replica.settle_seconds() * 10**9
        settling = young and replica.on_replica()
        if not settling:
            # Redis may have gone away since freshness(): the page is whole without the cache.
            with suppress(RedisError, OSError):
                cache.set(full_key, value, FRAGMENT_CACHE_SECONDS)
    return value


def cached_per_run(name: str, freshness: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """Data that costs a scan of whole tables (the data-quality rules' counts), computed once per KPI run
    for everyone who may see all of it (managers)."""
    return _per_run(freshness, ("data", name), compute)


def cached_fragment(request: Any, name: str, freshness: dict[str, Any], render: Callable[[], str]) -> str:
    """HTML derived from snapshots and targets only, rendered once per recompute for this user, language
    and query (RELIABILITY.md §5: cache the dashboard fragment per manager and period)."""
    query = hashlib.sha256(request.get_full_path().encode()).hexdigest()[:32]
    key = ("fragment", name, request.user.pk, get_language(), query)
    return SafeString(_per_run(freshness, key, lambda: str(render())))


def recompute_progress(run: SnapshotRun | None) -> int:
    """An estimate, 0–95 %, of how far a running recompute is: elapsed time against the last run's duration.

    The recompute writes everything in one transaction, so there are no partial rows to count; the estimate
    only drives the progress bar until the run finishes and the page refreshes.
    """
    if run is None:
        return 0
    last = selectors.snapshot_run_last_duration(kind=run.kind)
    elapsed = (timezone.now() - run.started_at).total_seconds()
    return min(95, int(elapsed / max(last or 5.0, 0.5) * 100))
