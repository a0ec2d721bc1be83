"""KPI breakdowns by the company's own choice fields (``crm.custom_fields``), read live from the records.

The declared breakdowns (team, person, channel, segment) are snapshot scopes, computed with the KPI. A
custom field can be added, renamed or archived at any time, so a breakdown by one is not stored: the KPI
page groups the KPI's own dataset by the field (``custom ->> key``) for the shown period and scope, with
the same measures the snapshot is made of, and through the access selector of the records for anyone
but a manager (``drilldown.visible``), as the drill-down does. Its rows are unsaved ``KpiSnapshot``
instances, the shape every breakdown table, chart and "why it changed" reads.

Only KPIs that are one dataset's ratio or measure (``builders.ratio``, ``builders.measure``) over
customers, deals or tickets, dated by a field of theirs, have them; a stock, a cohort built by hand, a
window function or rows written in SQL do not. Multiple-choice fields are left out: a record with two
options would count in both rows, and the rows would no longer add up to the KPI.
"""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone

from crm.custom_fields.models import CustomField
from crm.models import Customer, Deal, Ticket
from metrics.kpis.base import Context, Kpi, Run
from metrics.kpis.builders import HUNDRED, Measured, Ratio, dec, divide, opt_dec, scope_filter
from metrics.kpis.dataset import Dataset, Measure
from metrics.kpis.drilldown import PercentileCont, visible
from metrics.models import KpiSnapshot, Scope
from metrics.periods import local_midnight

if TYPE_CHECKING:
    from accounts.models import User

ENTITIES: dict[type, str] = {
    Customer: CustomField.Entity.CUSTOMER,
    Deal: CustomField.Entity.DEAL,
    Ticket: CustomField.Entity.TICKET,
}
# The scope id of the records without a value for the field (shown as "(empty)").
EMPTY = ""


@dataclass(frozen=True)
class Source:
    """What a KPI is computed from: one dataset and the measures of its value (a ratio's numerator and
    denominator; a measure and its sample)."""

    dataset: Dataset
    value: str
    denominator: str | None = None
    sample: str | None = None


def _plain(ds: Dataset) -> bool:
    """Whether the dataset's rows are its records in the period by one of their own dates."""
    built_by_hand = ds.day_sql is not None or ds.day_rows is not None
    as_of_now = ds.current_only or ds.as_of_run or ds.opening_balance
    return isinstance(ds.date, str) and not (ds.window or built_by_hand or as_of_now)


def source_of(kpi: Kpi) -> Source | None:
    """The dataset and measures ``kpi`` is computed from, when it can be broken down live."""
    compute = kpi.compute
    if isinstance(compute, Ratio) and isinstance(compute.dataset, Dataset):
        found = Source(compute.dataset, compute.numerator, denominator=compute.denominator)
    elif isinstance(compute, Measured):
        found = Source(compute.dataset, compute.name, sample=compute.sample)
    else:
        return None
    return found if _plain(found.dataset) else None


@cache
def record_entity(code: str) -> str | None:
    """The record type (custom-field entity) whose fields break down the KPI ``code``; None: none do."""
    from metrics.kpis import get_kpi

    found = source_of(get_kpi(code))
    if found is None:
        return None
    model = found.dataset.rows(_context()).model
    return ENTITIES.get(model)


def _context() -> Context:
    return Context(Run(periods={}, now=timezone.now()))


def breakdown_fields(kpi: Kpi) -> list[CustomField]:
    """The active single-choice fields of the KPI's record type (one query; none without one)."""
    from crm.custom_fields.services import fields_of

    entity = record_entity(kpi.code)
    if entity is None:
        return []
    return [f for f in fields_of(entity) if f.kind == CustomField.Kind.CHOICE]


def _aggregate(measure: Measure, granularity: str) -> Any:
    where = measure.where or Q()
    if measure.where_by_granularity is not None:
        where &= measure.where_by_granularity(granularity)
    only = where if where else None
    if measure.agg == "count":
        return Count("pk", filter=only)
    if measure.value is None:
        raise ValueError(f"a {measure.agg!r} measure needs a value")
    if measure.agg == "count_distinct":
        return Count(measure.value, distinct=True, filter=only)
    if measure.agg == "sum":
        return Sum(measure.value, filter=only)
    if measure.agg == "avg":
        return Avg(measure.value, filter=only)
    if measure.agg == "percentile":
        return PercentileCont(measure.value, measure.fraction, filter=only)
    raise ValueError(f"no live breakdown for {measure.agg!r}")


def _in_days(ds: Dataset, first_day: date, until: date) -> Q:
    """Rows dated from ``first_day`` up to (not including) ``until``, local days."""
    if ds.date_is_day:
        return Q(**{f"{ds.date}__gte": first_day, f"{ds.date}__lt": until})
    return Q(**{f"{ds.date}__gte": local_midnight(first_day), f"{ds.date}__lt": local_midnight(until)})


def _rows(
    source: Source, *, user: "User", first_day: date, until: date, scope: str, scope_id: str
) -> QuerySet:
    ds = source.dataset
    rows = ds.rows(_context()).filter(
        _in_days(ds, first_day, until), scope_filter(scope, scope_id, ds.scopes)
    )
    if not user.is_manager:  # a manager's access selectors are unscoped: no join needed
        rows = rows.filter(pk__in=visible(rows.model, user).values("pk"))
    return rows


def breakdown(
    *,
    kpi: Kpi,
    field: CustomField,
    user: "User",
    granularity: str,
    first_day: date,
    until: date,
    scope: str = Scope.COMPANY,
    scope_id: str = "",
) -> list[KpiSnapshot]:
    """``kpi`` per option of ``field`` over the days [first_day, until) within ``scope``, counting only
    the records ``user`` may see: one grouped query. A row per option held by a record (``EMPTY`` for
    the records without one), as unsaved snapshots; none when the KPI cannot be broken down so."""
    source = source_of(kpi)
    if source is None or field.kind != CustomField.Kind.CHOICE:
        return []
    if scope != Scope.COMPANY and scope not in source.dataset.scopes:
        return []
    names = [n for n in (source.value, source.denominator, source.sample) if n]
    measures = {f"m_{n}": _aggregate(source.dataset.measures[n], granularity) for n in names}
    rows = _rows(source, user=user, first_day=first_day, until=until, scope=scope, scope_id=scope_id)
    grouped = rows.order_by().values(option=KeyTextTransform(field.key, "custom")).annotate(**measures)
    now = timezone.now()
    found = []
    for values in grouped:
        numbers = {n: _scaled(source.dataset.measures[n], values[f"m_{n}"]) for n in names}
        value, numerator, denominator, sample = _figures(kpi, source, numbers)
        found.append(
            KpiSnapshot(
                kpi=kpi.code,
                granularity=granularity,
                period_start=local_midnight(first_day),
                period_end=local_midnight(until),
                scope=f"cf-{field.key}",
                scope_id=EMPTY if values["option"] is None else str(values["option"]),
                value=value,
                numerator=numerator,
                denominator=denominator,
                sample_size=sample,
                extra={},
                computed_at=now,
                definition_version=kpi.definition_version,
            )
        )
    return found


def _scaled(measure: Measure, raw: Any) -> Any:
    if raw is not None and measure.scale and measure.prescaled:
        return Decimal(raw) / measure.scale
    return raw


def _figures(
    kpi: Kpi, source: Source, numbers: dict[str, Any]
) -> tuple[Decimal | None, Decimal | None, Decimal | None, int | None]:
    """(value, numerator, denominator, sample size) as the KPI's builder makes them from its measures."""
    if source.denominator is not None:
        num, den = dec(numbers[source.value]), dec(numbers[source.denominator])
        return divide(num, den, HUNDRED if kpi.is_percent else Decimal(1)), num, den, int(den)
    n = int(numbers[source.sample] or 0) if source.sample else None
    raw = numbers[source.value]
    if source.dataset.measures[source.value].agg in ("avg", "percentile"):
        return (opt_dec(raw) if n is None or n > 0 else None), None, None, n
    return dec(raw), None, None, n
