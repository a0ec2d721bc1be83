"""The context of the KPI detail page, its downloads and the manager pages beside the dashboard.

Each function builds part of one page's context from the selectors and the dashboard's view model
(``metrics.dashboard``); the views parse the request, add the form and query strings, and render.
"""

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from accounts.models import User
from accounts.web import CappedPaginator
from crm.data import quality
from metrics import charts, contribution, dashboard, selectors
from metrics.kpis import in_section
from metrics.kpis.base import Basis, Better, Family, Kpi, Section, Unit
from metrics.kpis.dimensions import Dimension, breakdown_dimensions, custom_dimensions
from metrics.models import CustomerRfm, KpiSnapshot, Scope
from metrics.periods import Period, local_date
from metrics.selectors import SnapshotValues

DRILL_PAGE_SIZE = 25
DEFAULT_PART_LABELS = {"numerator": _lazy("Numerator"), "denominator": _lazy("Denominator")}


def _unit_label(kpi: Kpi) -> str:
    if kpi.unit == Unit.CURRENCY_PER_DAY:
        return _("%(currency)s/day") % {"currency": settings.CRM_CURRENCY}
    return settings.CRM_CURRENCY if kpi.unit == Unit.CURRENCY else str(Unit(kpi.unit).label)


# KPI detail
# ---------------------------------------------------------------------------------------------------------


def kpi_detail_context(*, user: User, kpi: Kpi, filters: dashboard.Filters) -> dict[str, Any]:
    """The KPI page's card, facts and trend for the filters' period and scope (snapshots only)."""
    series = dashboard.load_series(filters, [kpi]).get(kpi.code, {})
    targets = dashboard.load_targets(filters, [kpi]).get(kpi.code, {})
    snapshot = series.get(filters.period.first_day)
    card = dashboard.Card(
        kpi=kpi,
        snapshot=snapshot,
        previous=series.get(filters.period.previous().first_day),
        target=targets.get(filters.period.first_day),
        exposure=dashboard.period_exposure(filters.period),
        period=filters.period,
    )
    return {
        "kpi": kpi,
        "kpi_meta": {
            "family": Family(kpi.family).label,
            "basis": Basis(kpi.basis).label,
            "better": Better(kpi.better).label,
        },
        "filters": filters,
        "card": card,
        "snapshot": snapshot,
        "facts": dashboard.detail_facts(kpi, snapshot.extra) if snapshot else [],
        "trend": charts.kpi_trend_chart(
            kpi=kpi, periods=filters.periods, series=series, targets=targets, unit_label=_unit_label(kpi)
        ),
        "can_set_target": user.is_manager,
    }


def kpi_drilldown_context(
    *, user: User, kpi: Kpi, filters: dashboard.Filters, part: str | None, page: str | None
) -> dict[str, Any]:
    """One page of the live records behind the KPI's ``part`` (its first part when ``part`` is none of
    them), or why there are none."""
    parts = kpi.drilldown.parts if kpi.drilldown is not None else {}
    part = part if part in parts else next(iter(parts), "")
    drill, drill_error = None, None
    if parts:
        try:
            records = selectors.kpi_drilldown(
                user=user,
                kpi_code=kpi.code,
                granularity=filters.granularity,
                period_start=filters.period.start,
                scope=filters.scope_of(kpi),
                scope_id=filters.scope_id,
                part=part,
            )
            drill = selectors.drill_page(
                records=records, number=page, per_page=DRILL_PAGE_SIZE, cap=CappedPaginator.COUNT_CAP
            )
        except selectors.DrilldownError as exc:
            drill_error = str(exc)
    return {
        "drill": drill,
        "drill_error": drill_error,
        "part": part,
        "parts": [(name, p.label or DEFAULT_PART_LABELS.get(name, name)) for name, p in parts.items()],
    }


def kpi_breakdowns(*, user: User, kpi: Kpi, filters: dashboard.Filters) -> list[dict[str, Any]]:
    """The KPI for the shown period per dimension it declares (per team, person, channel, survey kind,
    trigger): managers see every row, a rep only their own per-person row. Then per option of each
    single-choice custom field of its record type, live from the records in the filters' scope: a
    manager's from all of them, anyone else's from the records they may see (one query per field)."""
    found = []
    for dimension in breakdown_dimensions(kpi.scopes):
        if not (user.is_manager or dimension.own_row):
            continue
        rows = list(
            selectors.kpi_breakdown(
                user=user,
                kpi=kpi.code,
                granularity=filters.granularity,
                period_start=filters.period.start,
                scope=dimension.scope,
            )
        )
        if rows:
            found.append(_breakdown(user, kpi, filters, dimension, rows))
    for dimension in custom_dimensions(kpi):
        rows = _custom_rows(user, kpi, filters, dimension)
        if rows:
            found.append(_breakdown(user, kpi, filters, dimension, rows))
    return found


def _custom_rows(
    user: User, kpi: Kpi, filters: dashboard.Filters, dimension: Dimension, *, before: bool = False
) -> list[KpiSnapshot]:
    """A custom dimension's rows for the shown period, or (``before``) for what it is compared with: the
    period before, up to the same elapsed days while the shown one runs (KPIS.md §10.1)."""
    if dimension.field is None:
        return []
    period = filters.period
    first_day, until = period.first_day, period.next().first_day
    if before:
        first_day, until = period.previous().first_day, period.first_day
        if filters.running:
            elapsed = timedelta(days=(local_date(timezone.now()) - period.first_day).days + 1)
            until = min(first_day + elapsed, until)
    return selectors.kpi_custom_breakdown(
        user=user,
        kpi=kpi,
        field=dimension.field,
        granularity=filters.granularity,
        first_day=first_day,
        until=until,
        scope=filters.scope_of(kpi),
        scope_id=filters.scope_id,
    )


def _breakdown(
    user: User, kpi: Kpi, filters: dashboard.Filters, dimension: Dimension, rows: list[KpiSnapshot]
) -> dict[str, Any]:
    """One dimension's table, its chart and (for a manager) why the KPI changed."""
    names = dimension.names([r.scope_id for r in rows])
    table = _ranked(kpi, rows, names)
    why = _why_it_changed(user, kpi, filters, dimension, rows, names) if user.is_manager else None
    chart = charts.by_user_chart(
        title=f"{kpi.label} — {dimension.label}",
        names=[t["name"] for t in table],
        bars=[charts._num(t["snapshot"].value) for t in table],
        bar_name=str(kpi.label),
        y_title=_unit_label(kpi),
    )
    return {
        "scope": dimension.scope,
        "label": dimension.label,
        "rows": table,
        "chart": chart,
        "id": f"chart-{dimension.scope}",
        "why": why,
        # A custom field's rows are counted from the records when the page is shown, headed by the field.
        "heading": dimension.field.label if dimension.field is not None else None,
        "live": dimension.field is not None,
    }


def _ranked(kpi: Kpi, rows: list[KpiSnapshot], names: dict[str, str]) -> list[dict[str, Any]]:
    """The rows named and formatted, largest value first and those without a value last."""
    table = (
        {
            "name": names.get(r.scope_id, r.scope_id),
            "snapshot": r,
            "display": dashboard.format_value(kpi, r.value),
        }
        for r in rows
    )
    return sorted(table, key=lambda row: (row["snapshot"].value is None, -(row["snapshot"].value or 0)))


def _why_it_changed(
    user: User,
    kpi: Kpi,
    filters: dashboard.Filters,
    dimension: Dimension,
    rows: list[KpiSnapshot],
    names: dict[str, str],
) -> dict[str, Any] | None:
    """The change split over this breakdown's segments (KPIS.md §10.4), against what the card compares
    with (the same elapsed days of the period before while a week or month runs, else the whole period
    before): the three that pushed it up most and down most, with their n; None when the KPI is neither
    a sum nor a ratio (a median, a state) or there is nothing to compare with."""
    if dimension.field is not None:
        # Live rows carry no stored like-for-like values: those before are read over the same days.
        before_rows, like_for_like = _custom_rows(user, kpi, filters, dimension, before=True), False
    else:
        before_rows = list(
            selectors.kpi_breakdown(
                user=user,
                kpi=kpi.code,
                granularity=filters.granularity,
                period_start=filters.period.previous().start,
                scope=dimension.scope,
            )
        )
        like_for_like = filters.running
    found = dashboard.explain(
        kpi,
        {s.scope_id: s for s in rows},
        {s.scope_id: s for s in before_rows},
        like_for_like=like_for_like,
    )
    if not found:
        return None
    up, down = contribution.top(found, minimum=kpi.min_sample)
    return {
        "up": [_contribution_row(kpi, c, names) for c in up],
        "down": [_contribution_row(kpi, c, names) for c in down],
        "ratio": kpi.unit == Unit.PERCENT,
    }


def _contribution_row(kpi: Kpi, c: contribution.Contribution, names: dict[str, str]) -> dict[str, Any]:
    return {
        "name": names.get(c.key, c.key),
        "total": dashboard.format_change(kpi, c.total),
        "rate": None if c.rate is None else dashboard.format_change(kpi, c.rate),
        "mix": None if c.mix is None else dashboard.format_change(kpi, c.mix),
        "n": c.n,
    }


# Downloads
# ---------------------------------------------------------------------------------------------------------


def kpi_export_header(kpi: Kpi) -> list[str]:
    """The columns of a KPI download."""
    return [
        _("Period"),
        _("Scope"),
        _("Who"),
        str(kpi.label),
        _("Numerator"),
        _("Denominator"),
        _("Sample size"),
        _("To date: compared with"),
        _("Value then"),
    ]


def kpi_export_rows(
    *, user: User, kpi: Kpi, filters: dashboard.Filters, breakdown: bool
) -> tuple[str, list[list[Any]]]:
    """A KPI download's file name (no extension) and rows: the shown period's breakdowns as ``user`` sees
    them, or the series of the filters' periods and scope."""
    if breakdown:
        rows = [
            _export_row(kpi, filters.period, table["label"], row["name"], row["snapshot"])
            for table in kpi_breakdowns(user=user, kpi=kpi, filters=filters)
            for row in table["rows"]
        ]
        return f"{kpi.code}-breakdown-{filters.period.first_day}", rows
    series = dashboard.load_series(filters, [kpi]).get(kpi.code, {})
    who = str(filters.rep or filters.team or _("Company"))
    scope = str(Scope(filters.scope_of(kpi)).label)
    rows = [_export_row(kpi, p, scope, who, series.get(p.first_day)) for p in filters.periods]
    return f"{kpi.code}-{filters.granularity}-{filters.period.first_day}", rows


def _export_row(
    kpi: Kpi, period: Period, scope: str, who: str, snapshot: KpiSnapshot | SnapshotValues | None
) -> list[Any]:
    """One row of a KPI download; a week or month still running also carries what it is compared with
    (the same elapsed days of the period before, KPIS.md §10.1) and the KPI's value then."""
    span, then = _compared_then(kpi, period, snapshot)
    return [
        charts.period_label(period),
        str(scope),
        who,
        dashboard.export_value(kpi, snapshot.value) if snapshot else None,
        _float(snapshot.numerator) if snapshot else None,
        _float(snapshot.denominator) if snapshot else None,
        snapshot.sample_size if snapshot else None,
        span,
        then,
    ]


def _compared_then(
    kpi: Kpi, period: Period, snapshot: KpiSnapshot | SnapshotValues | None
) -> tuple[str | None, float | int | None]:
    """The days a running period is compared with, and the KPI's value over them (None, None otherwise)."""
    compared = None
    if snapshot is not None and period.start <= timezone.now() < period.end:
        compared = kpi.details_of(snapshot.extra).compared
    if not (compared and compared.get("until")):
        return None, None
    last = date.fromisoformat(compared["until"]) - timedelta(days=1)
    then = dashboard.compared_values(compared, snapshot.computed_at).value
    return f"{compared['from']} – {last.isoformat()}", dashboard.export_value(kpi, then)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


# Adoption, segments and channels, data quality
# ---------------------------------------------------------------------------------------------------------


def adoption_context(*, user: User, filters: dashboard.Filters, sort: str) -> dict[str, Any]:
    """Adoption per person in the filters' period (sorted by ``sort``), its trends and the staff feedback."""
    rows = selectors.staff_adoption_rows(period=filters.period, sort=sort)
    return {
        "filters": filters,
        "rows": rows,
        "inactive": [r for r in rows if r["inactive"]],
        "sort": sort,
        "inactive_days": selectors.INACTIVE_AFTER_DAYS,
        "trends": dashboard.family_charts(filters, Family.ADOPTION, user),
        "per_user": charts.by_user_chart(
            title=_("Active days per person"),
            names=[r["name"] for r in rows],
            bars=[r["active_days"] for r in rows],
            bar_name=_("Active days"),
            y_title=_("days"),
        ),
        "feedback": selectors.staff_feedback_list(limit=50),
        "freshness": dashboard.freshness(),
    }


def segments_context(*, user: User, segment: str | None, page: str | None) -> dict[str, Any]:
    """The newest RFM scoring: each segment's size and change, the biggest moves between segments since
    the scoring it is compared with, and one page of ``segment``'s customers."""
    as_of_dates = selectors.rfm_as_of_dates()
    as_of = as_of_dates[0] if as_of_dates else None
    previous = selectors.rfm_comparison_date(as_of_dates=as_of_dates)
    segment = segment if segment in CustomerRfm.Segment.values else None
    members = None
    if as_of is not None and segment:
        members = CappedPaginator(
            selectors.customer_rfm_list(user=user, as_of=as_of, segment=segment), DRILL_PAGE_SIZE
        ).get_page(page)
    summary, movement = _rfm_summary_and_movement(user, as_of, previous)
    labels = dict(CustomerRfm.Segment.choices)
    return {
        "as_of": as_of,
        "previous": previous,
        "segments": summary,
        "segment": segment,
        "segment_label": labels.get(segment),
        "members": members,
        "movement": _biggest_moves(movement, labels),
    }


def _rfm_summary_and_movement(
    user: User, as_of: date | None, previous: date | None
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
    """The scorings change nightly: their summary and moves (a join of two scorings of every customer, a
    manager sees them all) are counted once per KPI run and scoring."""
    freshness = dashboard.freshness()
    summary = dashboard.cached_per_run(
        f"rfm-summary:{as_of}:{previous}",
        freshness,
        lambda: selectors.rfm_segment_summary(user=user, as_of=as_of, previous=previous),
    )
    movement = (
        dashboard.cached_per_run(
            f"rfm-movement:{as_of}:{previous}",
            freshness,
            lambda: selectors.rfm_movement(user=user, before=previous, after=as_of),
        )
        if previous
        else {}
    )
    return summary, movement


def _biggest_moves(
    movement: dict[tuple[str, str], int], labels: dict[str, str]
) -> list[tuple[str, str, int]]:
    """The 15 biggest moves from one segment to another (or out of the scoring): from, to, customers."""
    return sorted(
        (
            (labels.get(a, a), labels.get(b, b) if b else _("(no longer scored)"), n)
            for (a, b), n in movement.items()
            if a != b
        ),
        key=lambda row: -row[2],
    )[:15]


def channels_context(*, period: Period) -> dict[str, Any]:
    """Acquisition by channel in ``period``: a card per channel KPI and source."""
    sources = dashboard.channel_rows(period)
    return {
        "channel_kpis": in_section(Section.CHANNELS),
        "sources": sources,
        # What the changes compare with while a week or month runs, as the snapshots stored it.
        "compared_label": next(
            (card.compared_label for row in sources for card in row["cards"] if card.compared_label), None
        ),
    }


def data_quality_context(
    *, user: User, filters: dashboard.Filters, rule: str | None, page: str | None
) -> dict[str, Any]:
    """The data-quality cards, each rule's count and one page of the records failing ``rule``.

    The rules' counts cover every record (a scan of each table), so they are counted once per KPI run and
    say so; the list of one rule's records is live, so a fixed record leaves it at once.
    """
    cards = _quality_cards(filters)
    freshness = dashboard.freshness()
    counts = dashboard.cached_per_run("quality-rule-counts", freshness, lambda: quality.rule_counts())
    rules = [{"rule": r, **counts[r.code]} for r in quality.RULES]
    if rule not in quality.RULES_BY_CODE:
        # The first rule with something to fix (as counted); none at all: the list says so.
        rule = next((row["rule"].code for row in rules if row["failing"]), None)
    failing = None
    if rule is not None:
        failing = CappedPaginator(
            quality.quality_failure_list(user=user, rule=rule), DRILL_PAGE_SIZE
        ).get_page(page)
    return {
        "cards": cards,
        "rules": rules,
        "rule": rule,
        "rule_label": quality.RULES_BY_CODE[rule].label if rule else "",
        "page": failing,
        "failures": quality.failure_links(failing.object_list) if failing else [],
        "counted_at": freshness["as_of"],
    }


def _quality_cards(filters: dashboard.Filters) -> list[dashboard.Card]:
    """The data-quality cards of the whole company for the filters' periods."""
    company = dashboard.Filters(granularity=filters.granularity, period=filters.period, count=filters.count)
    families, _series = dashboard.build_cards(company)
    return [card for _label, group in families for card in group if card.kpi.family == Family.DATA_QUALITY]
