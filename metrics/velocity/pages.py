"""The KPI pages of pipeline velocity (its four factors, which one moved it) and of time in stage (median
and p90 per stage, the stays behind each stage), and the download of those stays (KPIS.md §10.7).

Both read snapshots (velocity's factors are their own KPIs' snapshots: one query); the stays of a stage
are live records, through the CRM's access selector.
"""

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.core.paginator import Page
from django.http import QueryDict
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.web import CappedPaginator
from crm.models import Deal, PipelineStage
from metrics import charts, dashboard
from metrics.kpis.base import Kpi
from metrics.kpis.details import StageStays, TimeInStageDetail
from metrics.kpis.sales import AVG_DEAL_SIZE, PIPELINE_VALUE, ROTTING_DEALS, SALES_CYCLE_MEDIAN, WIN_RATE
from metrics.kpis.velocity import (
    FACTORS,
    TIME_IN_STAGE,
    VELOCITY,
    Stay,
    open_stages,
    stage_stays,
    stays_deals,
)

STAYS_PAGE_SIZE = 25
# The stays a stage's list (and its download) reads at most, longest first.
STAYS_CAP = CappedPaginator.COUNT_CAP


def kpi_panel(
    *,
    user: User,
    kpi: Kpi,
    filters: dashboard.Filters,
    card: dashboard.Card,
    query: str,
    stage: str | None,
    page: str | None,
) -> dict[str, Any]:
    """What the KPI page shows beside every KPI's card for these two: velocity's factors, or time in stage
    per stage with the stays of one stage (``stage``, a stage id; the slowest by default). ``query``: the
    page's query (without the page number)."""
    if kpi is VELOCITY:
        return {"velocity": velocity_factors(filters=filters, card=card)}
    if kpi is TIME_IN_STAGE:
        found = time_in_stage(user=user, filters=filters, card=card, stage=stage, page=page)
        return {"stage_times": {**found, "query": _without(query, "stage", "part")}}
    return {}


def _without(query: str, *names: str) -> str:
    """``query`` without the parameters ``names`` (the links that set them anew)."""
    parsed = QueryDict(query, mutable=True)
    for name in names:
        parsed.pop(name, None)
    return parsed.urlencode()


# Velocity
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Factor:
    """One factor of velocity on its page: its value and change (its own KPI's card) and its effect on
    velocity's change."""

    kpi: Kpi
    label: str
    # The drill-down part of velocity that lists its records.
    part: str
    card: dashboard.Card
    now: Decimal | None
    before: Decimal | None
    display: str
    change: dict[str, Any] | None
    effect: Decimal | None = None

    @property
    def effect_display(self) -> str | None:
        return None if self.effect is None else dashboard.format_change(VELOCITY, self.effect)


def _open_deals(card: dashboard.Card) -> tuple[Decimal | None, Decimal | None]:
    """Open deals now and in what the pipeline's card compares with: the pipeline's n."""

    def n(snapshot: Any) -> Decimal | None:
        return None if snapshot is None or snapshot.sample_size is None else Decimal(snapshot.sample_size)

    return n(card.snapshot), n(card.baseline)


def _relative_change(now: Decimal | None, before: Decimal | None) -> dict[str, Any] | None:
    """A count's change in percent, uncoloured (no test)."""
    if now is None or before is None or before == 0:
        return None
    delta = (now - before) / before * 100
    return {"text": f"{delta:+.0f} %", "up": delta > 0, "flat": delta == 0, "good": None, "arrow": True}


def velocity_factors(*, filters: dashboard.Filters, card: dashboard.Card) -> dict[str, Any]:
    """Velocity's four factors for the shown period and scope, each from its own KPI's snapshots (one
    query), how each changed against what velocity is compared with, and each one's share of velocity's
    change (KPIS.md §10.4 for a product: the changes of the logarithms add up)."""
    series = dashboard.load_series(filters, list(FACTORS))
    current, previous = filters.period.first_day, filters.period.previous().first_day
    exposure = dashboard.period_exposure(filters.period)
    cards = {
        kpi.code: dashboard.Card(
            kpi=kpi,
            snapshot=series.get(kpi.code, {}).get(current),
            previous=series.get(kpi.code, {}).get(previous),
            target=None,
            exposure=exposure,
            period=filters.period,
        )
        for kpi in FACTORS
    }
    pipeline = cards[PIPELINE_VALUE.code]
    open_now, open_before = _open_deals(pipeline)
    factors = [
        Factor(
            PIPELINE_VALUE,
            _("Open deals"),
            "open",
            pipeline,
            open_now,
            open_before,
            "—" if open_now is None else dashboard.number_format(open_now, 0, force_grouping=True),
            _relative_change(open_now, open_before),
        )
    ]
    for kpi, part in ((WIN_RATE, "won"), (AVG_DEAL_SIZE, "priced"), (SALES_CYCLE_MEDIAN, "cycle")):
        c = cards[kpi.code]
        before = c.baseline.value if c.baseline is not None else None
        factors.append(Factor(kpi, str(kpi.label), part, c, c.value, before, c.display, c.change))
    _effects(factors)
    moved = [f for f in factors if f.effect]
    biggest = max(moved, key=lambda f: abs(f.effect or Decimal(0))) if moved else None
    return {
        "factors": factors,
        "biggest": biggest,
        "compared_label": card.compared_label,
        "currency": settings.CRM_CURRENCY,
    }


def _effects(factors: list[Factor]) -> None:
    """Each factor's part of velocity's change: v = o × w × a ÷ c, so ln v1 − ln v0 is the sum of the
    factors' log changes (the cycle's with its sign turned); each gets that share of v1 − v0, and the
    shares add up to it exactly. Left out when a factor is missing or 0 on either side."""
    values = [(f.now, f.before) for f in factors]
    if any(now is None or before is None or now <= 0 or before <= 0 for now, before in values):
        return
    logs = [math.log(float(now) / float(before)) for now, before in values]  # type: ignore[arg-type]
    logs[-1] = -logs[-1]  # a longer cycle slows velocity down
    product_now = _product([now for now, _b in values])  # type: ignore[misc]
    product_before = _product([before for _n, before in values])  # type: ignore[misc]
    change, total = product_now - product_before, sum(logs)
    for factor, log in zip(factors, logs, strict=True):
        # No change overall (the moves cancel out): each factor's first-order effect.
        share = log / total if total else log
        factor.effect = (change if total else product_before) * Decimal(str(share))


def _product(values: list[Decimal]) -> Decimal:
    """Velocity from its factors in the page's order: open × win rate (%) ÷ 100 × size ÷ cycle."""
    open_deals, win_rate, size, cycle = values
    return open_deals * win_rate / 100 * size / cycle


# Time in stage
# ---------------------------------------------------------------------------------------------------------


@dataclass
class StageRow:
    """One stage on the time-in-stage page: its figures in the shown period, as the snapshot holds them."""

    stage: PipelineStage
    figures: StageStays | None

    @property
    def name(self) -> str:
        return str(self.stage)

    def days(self, name: str) -> str:
        value = getattr(self.figures, name, None) if self.figures else None
        return dashboard.format_value(TIME_IN_STAGE, None if value is None else Decimal(str(value)))

    @property
    def median(self) -> str:
        return self.days("median")

    @property
    def p90(self) -> str:
        return self.days("p90")

    @property
    def median_open(self) -> str:
        return self.days("median_open")

    @property
    def p90_open(self) -> str:
        return self.days("p90_open")

    @property
    def n(self) -> int:
        return self.figures.n if self.figures else 0

    @property
    def n_open(self) -> int:
        return (self.figures.n_open or 0) if self.figures else 0

    @property
    def still_in(self) -> int:
        return (self.figures.still_in or 0) if self.figures else 0


def _selected(rows: list[StageRow], stage: str | None, running: bool) -> StageRow | None:
    """The stage asked for (by id), else the slowest: the highest median (with the deals still in it while
    the period runs)."""
    for row in rows:
        if stage is not None and str(row.stage.pk) == stage:
            return row

    def slowest(row: StageRow) -> float:
        if row.figures is None:
            return -1.0
        value = row.figures.median_open if running else row.figures.median
        return -1.0 if value is None else value

    return max(rows, key=slowest, default=None)


def time_in_stage(
    *, user: User, filters: dashboard.Filters, card: dashboard.Card, stage: str | None, page: str | None
) -> dict[str, Any]:
    """Median and p90 days per open stage in the shown period and scope (the snapshot's details), its chart,
    and one page of one stage's stays (live records ``user`` may see), longest first."""
    detail = cast(TimeInStageDetail, TIME_IN_STAGE.details_of(card.snapshot.extra if card.snapshot else None))
    by_stage = {s.stage: s for s in detail.per_stage}
    rows = [StageRow(s, by_stage.get(s.pk)) for s in open_stages()]
    running = detail.n_open is not None
    selected = _selected(rows, stage, running)
    stays: Page | None = None
    deals: dict[int, Deal] = {}
    if selected is not None:
        found = stays_of(user=user, filters=filters, stage=selected.stage)
        stays = CappedPaginator(found, STAYS_PAGE_SIZE, count=len(found)).get_page(page)
        deals = stays_deals(user, stays.object_list)
    return {
        "rows": rows,
        "running": running,
        "selected": selected,
        "stays": stays,
        "stay_rows": [(stay, deals.get(stay.deal_id)) for stay in (stays.object_list if stays else ())],
        "chart": time_in_stage_chart(rows, running=running),
        "rotting": ROTTING_DEALS,
        "median_open": dashboard.format_value(TIME_IN_STAGE, _decimal(detail.median_open)),
        "p90": dashboard.format_value(TIME_IN_STAGE, _decimal(detail.p90)),
        "still_in": detail.still_in,
    }


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def stays_of(*, user: User, filters: dashboard.Filters, stage: PipelineStage) -> list[Stay]:
    """The stays in ``stage`` behind the shown period's figures that ``user`` may see (at most the cap and
    one more, so the page can say there are more), longest first."""
    return stage_stays(
        user=user,
        period=filters.period,
        scope=filters.scope_of(TIME_IN_STAGE),
        scope_id=filters.scope_id,
        stage=stage,
        now=timezone.now(),
        limit=STAYS_CAP + 1,
    )


def time_in_stage_chart(rows: list[StageRow], *, running: bool) -> dict[str, Any]:
    """A bar of the median days per stage with a whisker up to the 90th percentile (the stays that ended in
    the period; while it runs, a second bar with the deals still in the stage at their time so far)."""
    names = [row.name for row in rows]
    hover = "%{x}<br>" + _("median %(median)s, 90th percentile %(p90)s") % {
        "median": "%{y:.1f}",
        "p90": "%{customdata:.1f}",
    }

    def bar(suffix: str, name: str, color: str) -> dict[str, Any]:
        medians = [getattr(row.figures, f"median{suffix}", None) if row.figures else None for row in rows]
        p90s = [getattr(row.figures, f"p90{suffix}", None) if row.figures else None for row in rows]
        above = [
            None if m is None or p is None else round(p - m, 4) for m, p in zip(medians, p90s, strict=True)
        ]
        return {
            "type": "bar",
            "name": name,
            "x": names,
            "y": medians,
            "customdata": p90s,
            "hovertemplate": hover + "<extra></extra>",
            "marker": {"color": color},
            "error_y": {"type": "data", "symmetric": False, "array": above, "arrayminus": [0] * len(rows)},
        }

    data = [bar("", _("Stays that ended"), charts.PALETTE[0])]
    if running:
        data.append(bar("_open", _("With the deals still in the stage"), charts.PALETTE[2]))
    layout = charts._layout(_("Days in each stage"), y_title=_("days"))
    layout |= {"barmode": "group", "hovermode": "closest"}
    return charts.tidy({"data": data, "layout": layout})


def stays_export_rows(*, user: User, filters: dashboard.Filters, stage: PipelineStage) -> list[list[Any]]:
    """The download of one stage's stays: a header row, then deal, customer, owner, stage, entered, left
    (empty while still in the stage) and days, longest first."""
    found = stays_of(user=user, filters=filters, stage=stage)[:STAYS_CAP]
    deals = stays_deals(user, found)
    header = [_("Deal"), _("Customer"), _("Owner"), _("Stage"), _("Entered"), _("Left"), _("Days in stage")]
    rows: list[list[Any]] = [header]
    for stay in found:
        deal: Deal | None = deals.get(stay.deal_id)
        if deal is None:
            continue
        rows.append(
            [
                deal.title,
                deal.customer.name,
                str(deal.owner),
                str(stage),
                timezone.localtime(stay.entered).replace(tzinfo=None),
                None if stay.left is None else timezone.localtime(stay.left).replace(tzinfo=None),
                round(float(stay.days), 2),
            ]
        )
    return rows


def export_stage(stage: str | None) -> PipelineStage | None:
    """The open stage whose stays are downloaded (by id); None for anything else."""
    return next((s for s in open_stages() if stage is not None and str(s.pk) == stage), None)
