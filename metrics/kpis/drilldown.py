"""The records behind a KPI's numbers, and how they add up to them.

A KPI's number comes with its records (the product's promise): each :class:`Part` is one list of
records (the numerator's, the denominator's) and the rule by which they give one of the snapshot's
numbers. For a KPI built from a dataset (``ratio``, ``measure``) the parts are derived from the same
declaration the number is computed from: the dataset's rows (its filter) narrowed by the measure's
filter, in the period by the dataset's date, in the scope by its scope paths, then through the
access-scoped selector of the records' model. Nothing is written twice. KPIs computed another way (a
stock from history, users' activity) declare their parts by hand; ``tests/metrics/test_drilldown_
reconciles.py`` checks every part against the snapshots.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import Aggregate, Avg, Count, FloatField, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.functional import Promise

from metrics.periods import Period

if TYPE_CHECKING:
    from accounts.models import User
    from metrics.kpis.dataset import Dataset, Measure

# The snapshot column a part's records give.
NUMERATOR, DENOMINATOR, VALUE, SAMPLE = "numerator", "denominator", "value", "sample_size"
PARTS = ("numerator", "denominator")

# (user, period, scope, scope id) -> the records, already limited to what ``user`` may see.
Records = Callable[["User", Period, str, str], QuerySet]
# (the part's records, period, scope, scope id) -> the number they make.
Total = Callable[[QuerySet, Period, str, str], Decimal | int | None]


def record_count(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
    return records.order_by().count()


def sum_of(expression: Any) -> Total:
    """Σ ``expression`` over the records (0 when there are none)."""

    def total(records: QuerySet, period: Period, scope: str, scope_id: str) -> Decimal:
        return records.order_by().aggregate(v=Sum(expression))["v"] or Decimal(0)

    return total


@dataclass(frozen=True)
class Part:
    """One list of records behind a KPI and the number it makes: ``total`` of ``records`` equals the
    snapshot's ``gives`` column (or, for another name, that entry of the snapshot's details). ``also``:
    more (gives, total) pairs the same records make (e.g. filled fields and all fields)."""

    records: Records
    gives: str = NUMERATOR
    total: Total = record_count
    label: Promise | None = None
    also: tuple[tuple[str, Total], ...] = ()

    @property
    def checks(self) -> tuple[tuple[str, Total], ...]:
        return ((self.gives, self.total), *self.also)


@dataclass(frozen=True)
class Drill:
    """The parts of a KPI by name (``numerator``, ``denominator``), in the order the page shows them."""

    parts: Mapping[str, Part] = field(default_factory=dict)

    def records(self, user: "User", period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
        return self.parts[part].records(user, period, scope, scope_id)


# Records of a dataset's measure
# ---------------------------------------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY value)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


def measure_rows(
    dataset: "Dataset", measure: "Measure", period: Period, scope: str, scope_id: str
) -> QuerySet:
    """The dataset's rows that ``measure`` aggregates for one period and scope (not yet access-scoped)."""
    from metrics.kpis.base import Context, Run
    from metrics.kpis.builders import period_range, scope_filter

    ctx = Context(Run(periods={period.granularity: [period]}, now=timezone.now()))
    where = measure.where or Q()
    if measure.where_by_granularity is not None:
        where &= measure.where_by_granularity(period.granularity)
    if not isinstance(dataset.date, str):
        raise ValueError(f"{dataset.name}: its rows are dated by an expression, which has no drill-down")
    in_scope = scope_filter(scope, scope_id, dataset.scopes)
    in_period = period_range(period, date_field=dataset.date, day=dataset.date_is_day)
    if not dataset.window:
        return dataset.rows(ctx).filter(where, in_period, in_scope)
    # Window functions (e.g. each customer's previous deal) must see the rows outside the period too, so
    # the period is applied after them: the window runs over the histories of the period's rows.
    ctx.scan = [(period.start, period.end)]
    rows = dataset.rows(ctx).filter(where, in_scope)
    matching = list(rows.values_list("pk", flat=True))
    return rows.model.objects.filter(in_period, pk__in=matching)


def _aggregate(measure: "Measure") -> Any:
    if measure.agg == "count":
        return Count("pk")
    value = measure.value
    if value is None:
        raise ValueError(f"a {measure.agg!r} measure needs a value")
    if measure.agg == "count_distinct":
        return Count(value, distinct=True)
    if measure.agg == "sum":
        return Sum(value)
    if measure.agg == "avg":
        return Avg(value)
    if measure.agg == "percentile":
        return PercentileCont(value, measure.fraction)
    raise ValueError(f"no drill-down total for {measure.agg!r}")


def dataset_part(dataset: "Dataset", name: str, gives: str, *, label: Promise | None = None) -> Part:
    """The records behind one measure of a dataset, through the access selector of the rows' model."""
    measure = dataset.measures[name]

    def records(user: "User", period: Period, scope: str, scope_id: str) -> QuerySet:
        rows = measure_rows(dataset, measure, period, scope, scope_id)
        date = dataset.date if isinstance(dataset.date, str) else "pk"  # measure_rows refuses the others
        return _visible_rows(rows, user, newest_by=date)

    def total(records_: QuerySet, period: Period, scope: str, scope_id: str) -> Decimal | int | None:
        rows = measure_rows(dataset, measure, period, scope, scope_id).filter(pk__in=records_.values("pk"))
        value = rows.order_by().aggregate(v=_aggregate(measure))["v"]
        if value is None:
            return 0 if measure.agg in ("count", "count_distinct", "sum") else None
        if measure.scale and measure.prescaled:
            return Decimal(value) / measure.scale
        return value

    return Part(records=records, gives=gives, total=total, label=label)


def _visible_rows(rows: QuerySet, user: "User", *, newest_by: str) -> QuerySet:
    """``rows`` that ``user`` may see, newest first by ``newest_by`` (the date that puts them in the
    period) where it is a field of theirs. Plain conditions are added to the access selector's query,
    so the planner reads them whole; rows shaped otherwise (annotations, distinct) are matched by
    primary key. Either way the page of a big period sorts the period's rows: ordered by creation time
    instead, the planner walks every record from the newest looking for the period's (minutes for the
    renewals due in a month at 10 M deals)."""
    allowed = visible(rows.model, user)
    query = rows.query
    if query.annotations or query.distinct or query.is_sliced or query.combinator or query.extra:
        found = allowed.filter(pk__in=rows.values("pk"))
    else:
        found = allowed & rows.order_by()
    try:
        rows.model._meta.get_field(newest_by)
    except FieldDoesNotExist:
        return found
    return found.order_by(f"-{newest_by}", "-pk")


def visible(model: type, user: "User") -> QuerySet:
    """Every record of ``model`` that ``user`` may see: the access selector of each model a KPI counts."""
    from accounts.models import User as UserModel
    from crm.models import CampaignTouch, Customer, Deal, SpendEntry, Ticket
    from crm.selectors import customer_list, deal_list, ticket_list
    from surveys.models import SurveyInvitation, SurveyResponse
    from surveys.selectors import invitation_list, survey_response_list

    selectors: dict[type, Callable[[], QuerySet]] = {
        Deal: lambda: deal_list(user=user),
        Customer: lambda: customer_list(user=user),
        Ticket: lambda: ticket_list(user=user),
        # A campaign's touches of the customers the user may see (metrics.kpis.campaigns).
        CampaignTouch: lambda: CampaignTouch.objects.filter(
            customer__in=customer_list(user=user)
        ).select_related("customer", "campaign"),
        SurveyResponse: lambda: survey_response_list(user=user),
        SurveyInvitation: lambda: invitation_list(user=user),
        # Spend and the staff list are the managers' (a rep sees their own user only).
        SpendEntry: lambda: SpendEntry.objects.all() if user.is_manager else SpendEntry.objects.none(),
        UserModel: lambda: (
            UserModel.objects.all() if user.is_manager else UserModel.objects.filter(pk=user.pk)
        ),
    }
    if model not in selectors:
        raise LookupError(f"no access rule for {model.__name__}: add its selector to metrics.kpis.drilldown")
    return selectors[model]()
