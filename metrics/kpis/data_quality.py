"""Data-quality KPIs (KPIS.md §7). Field values have no history, so these describe the data as it is
now: each run writes them for the current period only, and the rows of past periods keep what was
measured while those periods were current.

Checked records: customers that are not merged duplicates or internal, and their deals.

Field completeness counts the company's active required custom fields too (customers: each such field;
open deals: each that applies to the deal's stage), per record in SQL from the field definitions, so a
field made required counts wherever the records are counted next (the facts of days whose records did
not change take it in with the nightly rebuild).
"""

import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import (
    BooleanField,
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Lower, Trim
from django.utils.translation import gettext_lazy as _
from redis.exceptions import RedisError

from accounts.models import User
from crm.custom_fields.models import CustomField
from crm.data import quality
from crm.models import Customer, Deal
from crm.selectors import customer_list, deal_list
from metrics.kpis.base import Basis, Better, Chart, Context, Family, Kpi, Plot, Question, Row, Section, Unit
from metrics.kpis.builders import (
    HUNDRED,
    Dataset,
    count,
    divide,
    grouped,
    rows_from,
    scope_filter,
    stock,
    total,
)
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.details import CompletenessDetail, ValidationDetail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, Part, dataset_part, record_count
from metrics.kpis.shared import DEAL_SCOPES, OPEN, WON, live
from metrics.models import Scope
from metrics.periods import Period, local_date

logger = logging.getLogger(__name__)
# Long enough to outlive any quiet spell between changes; a change makes a new key anyway.
DUPLICATES_CACHE_SECONDS = 24 * 3600

# Placeholders people type instead of leaving a field empty count as empty.
EMPTY_VALUES = ["", "-", "n/a", "na", "none", "null", "unknown", "?"]
CUSTOMER_FIELDS = ("industry", "city", "segment")
EMAIL_SYNTAX = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
STALE_DAYS = 30
OWNER_SCOPES: ScopePaths = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}
QUALITY_CHART = Chart("chart-quality", _("Data quality"), "lines", order=90, y_title="%")
DQ_EXCLUSIONS = _("merged duplicates and internal/test customers (and their deals) are not checked")


def _filled(field: str) -> Q:
    return ~Q(**{f"{field}_clean__in": EMPTY_VALUES})


def _count_of(fields: QuerySet) -> Coalesce:
    """SQL: how many rows ``fields`` (a subquery, possibly correlated with the record) has."""
    counted = fields.order_by().values("entity").annotate(n=Count("pk")).values("n")[:1]
    return Coalesce(Subquery(counted), Value(0), output_field=IntegerField())


def custom_slots(entity: str) -> dict[str, Coalesce]:
    """Per record: its required custom fields (``custom_slots``: the active required fields of ``entity``;
    deals: those required from any stage, or from one the deal's stage is at or after) and how many of
    them it fills (``custom_filled``)."""
    fields = quality.required_fields(entity)
    if entity == CustomField.Entity.DEAL:
        fields = fields.filter(
            Q(required_from_stage__isnull=True)
            | Q(
                required_from_stage__pipeline_id=OuterRef("stage__pipeline_id"),
                required_from_stage__order__lte=OuterRef("stage__order"),
            )
        )
    return {
        "custom_slots": _count_of(fields),
        "custom_filled": _count_of(fields.filter(quality.has_custom_key())),
    }


def _customer_rows(ctx: Context | None) -> QuerySet:
    """Live customers with their checked fields cleaned (the same in every run: ``ctx`` is not read)."""
    cleaned = {f"{f}_clean": Lower(Trim(f)) for f in ("email", "phone", *CUSTOMER_FIELDS)}
    return (
        Customer.objects.filter(live())
        .annotate(**cleaned)
        .annotate(**custom_slots(CustomField.Entity.CUSTOMER))
    )


INVALID_CUSTOMER = (_filled("email") & ~Q(email__regex=EMAIL_SYNTAX)) | (_filled("phone") & Q(phone_key=""))

# The checks describe the records as they are now: counted on each record's creation day and added up
# over all days (a stock), so an edit rewrites the facts of one day only.
DQ_CUSTOMERS = Dataset(
    name="dq_customers",
    rows=_customer_rows,
    date="created_at",
    opening_balance=True,
    current_only=True,
    scopes=OWNER_SCOPES,
    measures={
        "records": count(),
        "filled_contact": count(_filled("email") | _filled("phone")),
        **{f"filled_{f}": count(_filled(f)) for f in CUSTOMER_FIELDS},
        "invalid": count(INVALID_CUSTOMER),
        "filled_custom": total("custom_filled"),
        "custom_slots": total("custom_slots"),
    },
)


def _is_stale(now: datetime) -> Q:
    """Open and untouched for 30 days (no stage move, no activity logged), or past its expected close."""
    since = now - timedelta(days=STALE_DAYS)
    untouched = Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=since)
    return Q(created_at__lt=since) & untouched | Q(expected_close_date__lt=local_date(now))


def _open_deal_rows(ctx: Context) -> QuerySet:
    return Deal.objects.filter(live("customer__"), status=OPEN).annotate(
        as_of=Value(ctx.now, output_field=DateTimeField()),
        stale=ExpressionWrapper(_is_stale(ctx.now), output_field=BooleanField()),
    )


INVALID_DEAL = (
    Q(status=WON) & (Q(amount__isnull=True) | Q(amount=0))
    | Q(amount__lt=0)
    | Q(closed_at__lt=F("created_at"))
    | Q(term_end__lte=F("term_start"))
)


def _deal_rows(ctx: Context | None) -> QuerySet:
    return Deal.objects.filter(live("customer__")).annotate(**custom_slots(CustomField.Entity.DEAL))


DQ_DEALS = Dataset(
    name="dq_deals",
    rows=_deal_rows,
    date="created_at",
    opening_balance=True,
    current_only=True,
    scopes=DEAL_SCOPES,
    by_user="owner_id",
    measures={
        "records": count(),
        "open": count(Q(status=OPEN)),
        "open_amount": count(Q(status=OPEN, amount__isnull=False)),
        "open_close_date": count(Q(status=OPEN, expected_close_date__isnull=False)),
        "invalid": count(INVALID_DEAL),
        "open_custom_slots": total("custom_slots", Q(status=OPEN)),
        "open_custom_filled": total("custom_filled", Q(status=OPEN)),
    },
)

# Staleness moves with the clock, not with the records: the open deals are checked on every run.
STALE = Dataset(
    name="dq_stale",
    rows=_open_deal_rows,
    date="as_of",
    scopes=DEAL_SCOPES,
    measures={"open": count(), "stale": count(Q(stale=True))},
    always=True,
    current_only=True,
    as_of_run=True,
)


def _combined(ctx: Context, fn: Any) -> Any:
    customers, deals = stock(ctx, DQ_CUSTOMERS), stock(ctx, DQ_DEALS)

    def row(_v: dict[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        key = (period.granularity, period.first_day, scope, scope_id)
        if period != ctx.current(period.granularity):
            return None
        return fn(customers.get(key, {}), deals.get(key, {}))

    return {key: {} for key in {*customers, *deals}}, row


def _completeness(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    def fn(c: dict[str, Any], d: dict[str, Any]) -> tuple:
        customer_filled = sum(int(c.get(f"filled_{f}", 0)) for f in ("contact", *CUSTOMER_FIELDS, "custom"))
        deal_filled = sum(int(d.get(f, 0)) for f in ("open_amount", "open_close_date", "open_custom_filled"))
        customer_slots = 4 * int(c.get("records", 0)) + int(c.get("custom_slots", 0))
        deal_slots = 2 * int(d.get("open", 0)) + int(d.get("open_custom_slots", 0))
        filled, slots = customer_filled + deal_filled, customer_slots + deal_slots
        extra = CompletenessDetail(
            customer_filled=customer_filled,
            customer_slots=customer_slots,
            deal_filled=deal_filled,
            deal_slots=deal_slots,
        )
        return divide(Decimal(filled), Decimal(slots), HUNDRED), Decimal(filled), Decimal(slots), slots, extra

    keys, row = _combined(ctx, fn)
    return rows_from(ctx, kpi, keys, row)


def _validation(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    def fn(c: dict[str, Any], d: dict[str, Any]) -> tuple:
        invalid = c.get("invalid", 0) + d.get("invalid", 0)
        checked = c.get("records", 0) + d.get("records", 0)
        extra = ValidationDetail(
            customers_invalid=int(c.get("invalid", 0)),
            customers_checked=int(c.get("records", 0)),
            deals_invalid=int(d.get("invalid", 0)),
            deals_checked=int(d.get("records", 0)),
        )
        return (
            divide(Decimal(invalid), Decimal(checked), HUNDRED),
            Decimal(invalid),
            Decimal(checked),
            checked,
            extra,
        )

    keys, row = _combined(ctx, fn)
    return rows_from(ctx, kpi, keys, row)


def _stale(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    data = grouped(ctx, STALE)

    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        if period != ctx.current(period.granularity):
            return None
        stale, open_deals = Decimal(values.get("stale") or 0), Decimal(values.get("open") or 0)
        return divide(stale, open_deals, HUNDRED), stale, open_deals, int(open_deals), None

    return rows_from(ctx, kpi, data, fn)


def duplicate_clusters(*, fresh: bool = False) -> list[list[tuple[int, int | None]]]:
    """Clusters of live customers sharing an e-mail or phone key, oldest first: [(id, owner id), ...].

    Finding them groups every customer by both keys; the result is cached under a fingerprint of the
    customer table (every write stamps ``updated_at``; a delete lowers the count), so a run with no
    customer changed since the last one reads it back. ``fresh``: compute it anyway (the nightly rebuild).
    """
    stats = Customer.objects.aggregate(n=Count("id"), last_id=Max("id"), last_change=Max("updated_at"))
    last_change = stats["last_change"].timestamp() if stats["last_change"] else None
    key = f"metrics:duplicate-clusters:{stats['n']}:{stats['last_id']}:{last_change}"
    if not fresh:
        try:
            cached = cache.get(key)
        except (RedisError, OSError):
            cached = None
        if cached is not None:
            return cached
    clusters = _duplicate_clusters()
    try:
        cache.set(key, clusters, timeout=DUPLICATES_CACHE_SECONDS)
    except (RedisError, OSError) as exc:
        logger.warning("could not cache the duplicate clusters: %s", exc)
    return clusters


def _duplicate_clusters() -> list[list[tuple[int, int | None]]]:
    # One indexed lookup per key kind (a union), not a test of every customer against both key lists.
    by_key = [
        Customer.objects.filter(live(), **{f"{field}__in": _shared(field)})
        .order_by()
        .values_list("id", "owner_id", "email_key", "phone_key")
        for field in ("email_key", "phone_key")
    ]
    candidates = sorted(by_key[0].union(by_key[1]).order_by())
    parent = {row[0]: row[0] for row in candidates}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_by_key: dict[tuple[str, str], int] = {}
    for customer_id, _owner, email_key, phone_key in candidates:
        for key in (("e", email_key), ("p", phone_key)):
            if key[1]:
                other = first_by_key.setdefault(key, customer_id)
                a, b = find(customer_id), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    clusters: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
    for customer_id, owner_id, _e, _p in candidates:
        clusters[find(customer_id)].append((customer_id, owner_id))
    return [members for members in clusters.values() if len(members) > 1]


def _shared(field: str) -> QuerySet:
    return (
        Customer.objects.filter(live())
        .exclude(**{field: ""})
        .order_by()
        .values(field)
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values(field)
    )


def _duplicates(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    """Redundant records (all but the oldest of each cluster) ÷ live records, per owner scope."""
    customers = stock(ctx, DQ_CUSTOMERS)
    team_of = dict(User.objects.values_list("id", "team_id"))
    redundant: dict[tuple[str, str], int] = defaultdict(int)
    for members in duplicate_clusters(fresh=not ctx.incremental):
        for _customer_id, owner_id in members[1:]:
            redundant[(Scope.COMPANY, "")] += 1
            if owner_id is not None:
                redundant[(Scope.USER, str(owner_id))] += 1
                if team_of.get(owner_id) is not None:
                    redundant[(Scope.TEAM, str(team_of[owner_id]))] += 1

    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        if period != ctx.current(period.granularity):
            return None
        extra_records, records = (
            Decimal(redundant.get((scope, scope_id), 0)),
            Decimal(values.get("records", 0)),
        )
        return divide(extra_records, records, HUNDRED), extra_records, records, int(records), None

    return rows_from(ctx, kpi, customers, fn)


def _customers_checked(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The customers the checks read (not merged away, not internal), with their fields cleaned."""
    return _customer_rows(None).filter(
        scope_filter(scope, scope_id, OWNER_SCOPES), pk__in=customer_list(user=user).values("pk")
    )


def _redundant(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """All but the oldest customer of each duplicate cluster."""
    redundant = [cid for members in duplicate_clusters() for cid, _owner in members[1:]]
    return _customers_checked(user, period, scope, scope_id).filter(pk__in=redundant)


def _deals_checked(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return deal_list(user=user).filter(live("customer__"), scope_filter(scope, scope_id, DEAL_SCOPES))


def _counting(condition: Q, times: int = 1) -> Any:
    def total(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
        return times * records.order_by().filter(condition).count()

    return total


def _filled_customer_slots(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
    """Filled fields of the customers: a contact (e-mail or phone), industry, city and segment each, and
    their required custom fields."""
    conditions = [_filled("email") | _filled("phone"), *(_filled(f) for f in CUSTOMER_FIELDS)]
    counts = records.order_by().aggregate(
        **{f"f{i}": Count("pk", filter=c) for i, c in enumerate(conditions)},
        custom=Coalesce(Sum(custom_slots(CustomField.Entity.CUSTOMER)["custom_filled"]), 0),
    )
    return sum(counts.values())


def _slots(entity: str, fields: int) -> Any:
    """All fields of the records: ``fields`` built-in ones each, and their required custom fields."""

    def total(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
        counts = records.order_by().aggregate(
            n=Count("pk"), custom=Coalesce(Sum(custom_slots(entity)["custom_slots"]), 0)
        )
        return fields * counts["n"] + counts["custom"]

    return total


def _open_deals_checked(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return _deals_checked(user, period, scope, scope_id).filter(status=OPEN)


def _filled_deal_slots(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
    """Filled fields of the open deals: the amount and the expected close date each, and the required
    custom fields that apply to them."""
    counts = records.order_by().aggregate(
        amount=Count("pk", filter=Q(amount__isnull=False)),
        close=Count("pk", filter=Q(expected_close_date__isnull=False)),
        custom=Coalesce(Sum(custom_slots(CustomField.Entity.DEAL)["custom_filled"]), 0),
    )
    return counts["amount"] + counts["close"] + counts["custom"]


COMPLETENESS_DRILL = Drill(
    {
        "customers": Part(
            _customers_checked,
            "customer_filled",
            _filled_customer_slots,
            _("Customers (4 fields each, and their required custom fields)"),
            also=(("customer_slots", _slots(CustomField.Entity.CUSTOMER, 4)),),
        ),
        "deals": Part(
            _open_deals_checked,
            "deal_filled",
            _filled_deal_slots,
            _("Open deals (2 fields each, and the required custom fields of their stage)"),
            also=(("deal_slots", _slots(CustomField.Entity.DEAL, 2)),),
        ),
    }
)

VALIDATION_DRILL = Drill(
    {
        "customers": Part(
            _customers_checked,
            "customers_invalid",
            _counting(INVALID_CUSTOMER),
            _("Customers checked"),
            also=(("customers_checked", record_count),),
        ),
        "deals": Part(
            _deals_checked,
            "deals_invalid",
            _counting(INVALID_DEAL),
            _("Deals checked"),
            also=(("deals_checked", record_count),),
        ),
    }
)


# The datasets these KPIs read.
DATASETS = [DQ_CUSTOMERS, DQ_DEALS, STALE]

DUPLICATE_RATE = Kpi(
    code="duplicate_rate",
    family=Family.DATA_QUALITY,
    label=_("Duplicate rate"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_(
        "(customers in duplicate clusters − clusters) ÷ customers; a cluster is customers sharing a "
        "normalised "
        "e-mail or phone number (E.164), linked transitively; now, for the current period"
    ),
    compute=_duplicates,
    basis=Basis.CURRENT,
    exclusions=DQ_EXCLUSIONS,
    drill=Drill(
        {
            NUMERATOR: Part(
                _redundant, NUMERATOR, label=_("Redundant customers (all but the oldest of a cluster)")
            ),
            DENOMINATOR: Part(_customers_checked, DENOMINATOR, label=_("Customers")),
        }
    ),
    plots=(Plot(QUALITY_CHART, label=_("Duplicate rate")),),
    question=Question.DATA,
)

FIELD_COMPLETENESS = Kpi(
    code="field_completeness",
    family=Family.DATA_QUALITY,
    label=_("Field completeness"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "filled required fields ÷ required fields; customers: e-mail or phone, industry, city, segment; open "
        "deals: amount, expected close date; and the required custom fields of each (a deal's from its stage "
        "on); '', '-', 'n/a', 'unknown' count as empty; now"
    ),
    compute=_completeness,
    basis=Basis.CURRENT,
    exclusions=DQ_EXCLUSIONS,
    drill=COMPLETENESS_DRILL,
    detail=CompletenessDetail,
    plots=(Plot(QUALITY_CHART, label=_("Field completeness")),),
    sections=frozenset({Section.GO_LIVE}),
    question=Question.DATA,
)

VALIDATION_ERROR_RATE = Kpi(
    code="validation_error_rate",
    family=Family.DATA_QUALITY,
    label=_("Validation error rate"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_(
        "records failing at least one rule ÷ records checked (customers and deals); rules: e-mail syntax, "
        "phone "
        "not a possible number, won deal without amount, negative amount, closed before created, term ending "
        "before it starts; now"
    ),
    compute=_validation,
    basis=Basis.CURRENT,
    exclusions=DQ_EXCLUSIONS,
    drill=VALIDATION_DRILL,
    detail=ValidationDetail,
    plots=(Plot(QUALITY_CHART, label=_("Validation errors")),),
    question=Question.DATA,
)

STALE_DEALS = Kpi(
    code="stale_deals",
    family=Family.DATA_QUALITY,
    label=_("Stale open deals"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_(
        "open deals with no activity and no stage move in 30 days (and older than that), or past their "
        "expected "
        "close date ÷ open deals; now"
    ),
    compute=_stale,
    basis=Basis.CURRENT,
    exclusions=DQ_EXCLUSIONS,
    drill=Drill(
        {
            NUMERATOR: dataset_part(STALE, "stale", NUMERATOR, label=_("Stale open deals")),
            DENOMINATOR: dataset_part(STALE, "open", DENOMINATOR, label=_("Open deals")),
        }
    ),
)

KPIS = [DUPLICATE_RATE, FIELD_COMPLETENESS, VALIDATION_ERROR_RATE, STALE_DEALS]
