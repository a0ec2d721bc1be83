"""What a snapshot carries beside its numbers (its ``extra``), typed: one small dataclass per kind of KPI.

A KPI declares its detail class (``Kpi.detail``); its compute function fills one in, the snapshot stores
it as JSON, and every reader gets it back typed (``Kpi.details_of(snapshot)``), so a name such as
``moe95`` is spelled in one place. Every field may be missing (None): rows stored before a field existed
still read.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self


@dataclass(frozen=True)
class Detail:
    """No details (the base of all the others); ``compared`` is, for a period still running, the same
    elapsed span of the period before (KPIS.md §10.1): value, numerator, denominator, n, and its days."""

    compared: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Self:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in (data or {}).items() if key in names})

    def to_json(self) -> dict[str, Any]:
        """The fields that are set (a missing one reads back as None); shallow, as the fields hold plain
        values (``dataclasses.asdict`` deep-copies and is 10× slower over a rebuild's 1.3 M rows)."""
        return {name: value for name, value in vars(self).items() if value is not None}


@dataclass(frozen=True)
class Sampled(Detail):
    """A value from answers or events few enough to mislead (KPIS.md G4, §10.2)."""

    low_sample: bool | None = None


@dataclass(frozen=True)
class NpsDetail(Sampled):
    """NPS shares, its standard error and 95 % margin of error, and the change from the previous period."""

    nps_type: str | None = None
    promoters: int | None = None
    passives: int | None = None
    detractors: int | None = None
    promoters_pct: float | None = None
    passives_pct: float | None = None
    detractors_pct: float | None = None
    se: float | None = None
    moe95: float | None = None
    previous: float | None = None
    previous_n: int | None = None
    z: float | None = None
    significant: bool | None = None


@dataclass(frozen=True)
class ProportionDetail(Sampled):
    """A share of answers with its Wilson 95 % interval (in percent) and the mean score."""

    wilson_low: float | None = None
    wilson_high: float | None = None
    mean: float | None = None


@dataclass(frozen=True)
class MeanDetail(Sampled):
    """A mean score on its scale, with the sample standard deviation and 95 % margin of error."""

    scale_min: int | None = None
    scale_max: int | None = None
    sd: float | None = None
    moe95: float | None = None
    easy_pct: float | None = None


@dataclass(frozen=True)
class ResponseDetail(Detail):
    """The survey invitations of the period, step by step (KPIS.md §2.4)."""

    delivered: int | None = None
    opened: int | None = None
    started: int | None = None
    completed: int | None = None
    partial: int | None = None
    drop_off_pct: float | None = None


@dataclass(frozen=True)
class MeanBeside(Detail):
    """The mean beside a median or percentile."""

    mean: float | None = None


@dataclass(frozen=True)
class ResolutionDetail(Detail):
    """The median time to the first resolution beside that to the last one."""

    first_resolution_median: float | None = None


@dataclass(frozen=True)
class TicketsCreatedDetail(Detail):
    unreplied: int | None = None


@dataclass(frozen=True)
class TicketsSolvedDetail(Detail):
    reopened: int | None = None


@dataclass(frozen=True)
class ForecastDetail(Detail):
    """The weighted forecast: won so far, plus the weighted open deals expected to close in the period."""

    won_to_date: float | None = None
    open_weighted: float | None = None


@dataclass(frozen=True)
class GrowthDetail(Detail):
    """The period grown from, and whether an unfinished period was compared like for like."""

    compared_with: str | None = None
    like_for_like: bool | None = None


@dataclass(frozen=True)
class FunnelStep:
    stage: str
    reached: int
    in_progress: int
    to_next: float | None
    cumulative: float | None


@dataclass(frozen=True)
class FunnelDetail(Detail):
    """Each stage of the funnel: deals that reached it, still in it, and the conversions."""

    stages: tuple[Mapping[str, Any], ...] = ()

    @property
    def steps(self) -> list[FunnelStep]:
        return [FunnelStep(**step) for step in self.stages]


@dataclass(frozen=True)
class ForecastAccuracyDetail(Detail):
    forecast_at_start: float | None = None
    won: float | None = None


@dataclass(frozen=True)
class TextbookRetentionDetail(Detail):
    """E and N of (E − N) ÷ S."""

    end: int | None = None
    new: int | None = None


@dataclass(frozen=True)
class SlaDetail(Detail):
    """[met, met or breached] per target."""

    first_response: tuple[int, int] | None = None
    resolution: tuple[int, int] | None = None


@dataclass(frozen=True)
class BacklogDetail(Detail):
    net_change: int | None = None


@dataclass(frozen=True)
class ClvDetail(Detail):
    revenue: float | None = None
    churned: int | None = None
    arpa: float | None = None
    gross_margin_percent: float | None = None
    churn_rate_percent: float | None = None
    active_customers: int | None = None


@dataclass(frozen=True)
class RoiDetail(Detail):
    """The inputs of the CRM ROI (KPIS.md §5): its horizon, costs and gains and what they are made of."""

    missing: str | None = None
    before_go_live: bool | None = None
    horizon: tuple[str, str] | None = None
    costs: float | None = None
    gains: float | None = None
    time_saved_value: float | None = None
    licensed_user_months: int | None = None
    win_rate_after_go_live: float | None = None
    win_rate_baseline: float | None = None
    baseline_months: tuple[str, str] | None = None
    closed_amount: float | None = None
    gross_margin_percent: float | None = None
    payback_months: float | None = None
    # The 95 % interval of the win-rate uplift (percentage points) and the ROI at each end of it.
    win_rate_uplift_low: float | None = None
    win_rate_uplift_high: float | None = None
    roi_low: float | None = None
    roi_high: float | None = None

    @property
    def win_rate_uplift(self) -> float | None:
        if self.win_rate_after_go_live is None or self.win_rate_baseline is None:
            return None
        return self.win_rate_after_go_live - self.win_rate_baseline


@dataclass(frozen=True)
class CompletenessDetail(Detail):
    customer_filled: int | None = None
    customer_slots: int | None = None
    deal_filled: int | None = None
    deal_slots: int | None = None


@dataclass(frozen=True)
class ValidationDetail(Detail):
    customers_invalid: int | None = None
    customers_checked: int | None = None
    deals_invalid: int | None = None
    deals_checked: int | None = None


@dataclass(frozen=True)
class CohortDetail(Detail):
    """A cohort of new customers (KPIS.md §10.9): how many of them were active at the end of each month since
    the month they joined (``active[0]``: that month itself), for the months that have ended; ``month``: the
    month the value is read at (12 once it has ended, else the latest one)."""

    active: tuple[int, ...] | None = None
    month: int | None = None


@dataclass(frozen=True)
class RevenueRetentionDetail(Detail):
    """NRR and GRR (KPIS.md §10.9): the base (the earlier 12 months' revenue of the customers who had some)
    and how it moved in the 12 months after, how many base customers expanded, contracted or were lost, and
    the windows as local days: [earlier from, later from) and [later from, until)."""

    base: float | None = None
    expansion: float | None = None
    contraction: float | None = None
    churned: float | None = None
    expanded: int | None = None
    contracted: int | None = None
    lost: int | None = None
    windows: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class WaterfallDetail(Detail):
    """The revenue waterfall (KPIS.md §10.9): previous + new + expansion − contraction − churned +
    reactivated = current, the customers in each bucket, and the spans compared as local days: [compared
    from, compared until) and [current from, current until) (a running period to date against the same
    elapsed days of the period before)."""

    previous: float | None = None
    new: float | None = None
    expansion: float | None = None
    contraction: float | None = None
    churned: float | None = None
    reactivated: float | None = None
    current: float | None = None
    new_customers: int | None = None
    expanded: int | None = None
    contracted: int | None = None
    lost: int | None = None
    reactivated_customers: int | None = None
    spans: tuple[str, str, str, str] | None = None


@dataclass(frozen=True)
class VelocityDetail(Detail):
    """Pipeline velocity's four factors (KPIS.md §10.7), each as its own KPI's snapshot of the same period
    and scope holds it: open deals (the pipeline's n), win rate (%, won of closed), average deal size (won
    with an amount), sales cycle (median days, over the won deals)."""

    open_deals: int | None = None
    win_rate: float | None = None
    won: int | None = None
    closed: int | None = None
    avg_deal_size: float | None = None
    won_priced: int | None = None
    won_priced_amount: float | None = None
    cycle_days: float | None = None
    cycle_n: int | None = None


@dataclass(frozen=True)
class StageStays:
    """Time in one stage: completed stays (left the stage in the period), and with the stays still running
    counted at their time so far (``*_open``, the running period only)."""

    stage: int
    name: str
    n: int = 0
    median: float | None = None
    p90: float | None = None
    pipeline: str = ""
    n_open: int | None = None
    median_open: float | None = None
    p90_open: float | None = None
    still_in: int | None = None


@dataclass(frozen=True)
class TimeInStageDetail(Detail):
    """Days in each open stage (KPIS.md §10.7): the median and p90 of the stays that ended in the period,
    over all stages and per stage; for the running period also with the stays still running at their time
    so far (``*_open``; ``still_in`` of them)."""

    p90: float | None = None
    n_open: int | None = None
    median_open: float | None = None
    p90_open: float | None = None
    still_in: int | None = None
    stages: tuple[Mapping[str, Any], ...] = ()

    @property
    def per_stage(self) -> list[StageStays]:
        return [StageStays(**stage) for stage in self.stages]
