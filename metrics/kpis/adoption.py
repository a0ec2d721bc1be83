"""Staff adoption KPIs (KPIS.md §7), from seats, usage events and login events.

Licensed users at a period's end hold a seat then that started at least 7 days before the end (newer
seats are left out of the denominator); service accounts never count, and a user without a seat is
in neither numerator nor denominator. Active = at least one action through the web UI or the API in
the period (imports and system actions do not count); records created count web creations only.
"""

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils.translation import gettext_lazy as _
from psycopg import sql as pg

from accounts.models import LoginEvent, Seat, UsageEvent, User
from metrics.kpis.base import (
    MIN_EVENTS,
    Better,
    Chart,
    Context,
    Family,
    Kpi,
    Plot,
    Question,
    Row,
    Section,
    Significance,
    Unit,
)
from metrics.kpis.builders import HUNDRED, Dataset, Offset, divide, grouped, in_spans, rows_from, total
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, Part, visible
from metrics.models import Scope
from metrics.periods import Period, local_midnight, reporting_tz

NEW_SEAT_GRACE = timedelta(days=7)
ACTIVE_VIA = (UsageEvent.Via.WEB, UsageEvent.Via.API)
ADOPTION_CHART = Chart("chart-adoption", _("CRM adoption"), "lines", order=80, y_title="%")
ADOPTION_EXCLUSIONS = _("service accounts, users without a seat and seats younger than 7 days are excluded")
NAMES = ("licensed", "active", "access", "creates", "days")


def _usage_day_sql(ctx: Context, spans: Sequence[tuple[date, date]]) -> tuple[pg.Composable, list[Any]]:
    """Per user and local day: actions (web or API), web creations, logins, and whether it was active."""
    tz = settings.TIME_ZONE
    ranges = in_spans(pg.Identifier("at"), len(spans))
    bounds = [moment for lo, hi in spans for moment in (local_midnight(lo), local_midnight(hi))]
    sql = pg.SQL("""
        SELECT day AS on_day, 'user' AS scope, user_id::text AS scope_id,
               sum(actions)::bigint AS part_0, sum(creates)::bigint AS part_1, sum(logins)::bigint AS part_2,
               (sum(actions) > 0)::int::bigint AS part_3
        FROM (
            SELECT user_id, (at AT TIME ZONE %s)::date AS day,
                   count(*) FILTER (WHERE via IN (%s, %s)) AS actions,
                   count(*) FILTER (WHERE via = %s AND verb = %s) AS creates, 0 AS logins
            FROM accounts_usageevent WHERE {ranges} GROUP BY 1, 2
            UNION ALL
            SELECT user_id, (at AT TIME ZONE %s)::date, 0, 0, count(*)
            FROM accounts_loginevent WHERE {ranges} GROUP BY 1, 2
        ) AS e
        GROUP BY user_id, day
    """).format(ranges=ranges)
    params = [tz, *ACTIVE_VIA, UsageEvent.Via.WEB, UsageEvent.Verb.CREATE, *bounds, tz, *bounds]
    return sql, params


# Usage and logins per user and day (users only: licences decide who counts, see adoption_counts).
USAGE = Dataset(
    name="usage",
    rows=lambda ctx: UsageEvent.objects.none(),
    date="at",
    scopes={Scope.USER: "user_id"},
    measures={
        "actions": total("actions"),
        "creates": total("creates"),
        "logins": total("logins"),
        "days": total("active_day"),
    },
    changed=(),
    day_sql=_usage_day_sql,
)


def adoption_counts(ctx: Context) -> dict[tuple[str, Any, str, str], dict[str, int]]:
    """Licensed, active and login-active users, web creations and active days per period and scope."""

    def build() -> dict[tuple[str, Any, str, str], dict[str, int]]:
        usage: dict[tuple[str, Any], dict[str, dict[str, Any]]] = defaultdict(dict)
        for (g, day, scope, scope_id), values in grouped(ctx, USAGE).items():
            if scope == Scope.USER:
                usage[(g, day)][scope_id] = values
        out: dict[tuple[str, Any, str, str], dict[str, int]] = {}
        for g in ctx.granularities:
            for period in ctx.periods[g]:
                if not ctx.touches(period):
                    continue
                for (scope, scope_id), counts in _counts_at(
                    ctx, period.end, usage[(g, period.first_day)]
                ).items():
                    out[(g, period.first_day, scope, scope_id)] = counts
        return out

    return ctx.memo("adoption", build, reads=(USAGE.name,))


def _counts_at(
    ctx: Context, end: datetime, usage: Mapping[str, Mapping[str, Any]]
) -> dict[tuple[str, str], dict[str, int]]:
    """The counts of a span ending at ``end`` by scope, from each user's usage in it (``usage``, by user
    id): users holding a seat at ``end`` that began at least 7 days before it."""
    staff, seats = ctx.memo("adoption seats", _staff_and_seats)
    out: dict[tuple[str, str], dict[str, int]] = {}
    for user_id, spans in seats.items():
        if not any(s < end - NEW_SEAT_GRACE and (e is None or e >= end) for s, e in spans):
            continue
        u = usage.get(str(user_id), {})
        active = int(u.get("actions") or 0) > 0
        counts = (
            1,
            int(active),
            int(int(u.get("logins") or 0) > 0),
            int(u.get("creates") or 0) if active else 0,
            int(u.get("days") or 0),
        )
        keys = [(Scope.COMPANY, ""), (Scope.USER, str(user_id))]
        if staff[user_id] is not None:
            keys.append((Scope.TEAM, str(staff[user_id])))
        for key in keys:
            acc = out.setdefault(key, dict.fromkeys(NAMES, 0))
            for name, value in zip(NAMES, counts, strict=True):
                acc[name] += value
    return out


def _staff_and_seats() -> tuple[dict[int, int | None], dict[int, list[tuple[datetime, datetime | None]]]]:
    """Staff (not service accounts) with their team, and each one's seats."""
    staff: dict[int, int | None] = dict(
        User.objects.filter(is_service_account=False).values_list("id", "team_id")
    )
    seats: dict[int, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for user_id, started, ended in Seat.objects.filter(user_id__in=staff).values_list(
        "user_id", "started_at", "ended_at"
    ):
        seats[user_id].append((started, ended))
    return staff, seats


@dataclass(frozen=True)
class AdoptionRatio:
    """KPI = one adoption count ÷ another (× 100 when ``percent``). While a week or month runs, it is
    compared with the same elapsed days of the period before (KPIS.md §10.1): the people holding a seat at
    the end of those days, and their usage on them, from the day facts."""

    numerator: str
    denominator: str
    percent: bool
    day_datasets = (USAGE,)

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        return rows_from(ctx, kpi, adoption_counts(ctx), self.row)

    def row(self, values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        num, den = Decimal(values.get(self.numerator, 0)), Decimal(values.get(self.denominator, 0))
        return divide(num, den, HUNDRED if self.percent else Decimal(1)), num, den, int(den), None

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple:
        def build() -> dict[tuple[str, str], dict[str, int]]:
            by_user = {
                sid: v for (scope, sid), v in at.totals.get(USAGE.name, {}).items() if scope == Scope.USER
            }
            return _counts_at(ctx, local_midnight(at.until), by_user)

        counts = ctx.memo(("adoption at", at.until), build)
        return self.row(counts.get((at.scope, at.scope_id), {}), at.before, at.scope, at.scope_id)[:4]


def _licensed(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Staff of the scope holding a seat at the period's end that began at least 7 days before it."""
    seat = Seat.objects.filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=period.end),
        user=OuterRef("pk"),
        started_at__lt=period.end - NEW_SEAT_GRACE,
    )
    qs = visible(User, user).filter(Exists(seat), is_service_account=False).select_related("team")
    if scope == Scope.TEAM:
        qs = qs.filter(team_id=scope_id)
    elif scope == Scope.USER:
        qs = qs.filter(pk=scope_id)
    return qs


def _in_period(period: Period) -> Q:
    return Q(at__gte=period.start, at__lt=period.end)


def _active(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Licensed staff who did at least one thing in the CRM (web or API) in the period."""
    acted = UsageEvent.objects.filter(_in_period(period), user=OuterRef("pk"), via__in=ACTIVE_VIA)
    return _licensed(user, period, scope, scope_id).filter(Exists(acted))


def _signed_in(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    logins = LoginEvent.objects.filter(_in_period(period), user=OuterRef("pk"))
    return _licensed(user, period, scope, scope_id).filter(Exists(logins))


def _web_creations(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
    """Records the users created in the web UI in the period."""
    return UsageEvent.objects.filter(
        _in_period(period), user__in=records.values("pk"), via=UsageEvent.Via.WEB, verb=UsageEvent.Verb.CREATE
    ).count()


def _active_days(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
    """Days (in the reporting zone) with at least one web or API action, summed over the users."""
    days = (
        UsageEvent.objects.filter(_in_period(period), user__in=records.values("pk"), via__in=ACTIVE_VIA)
        .annotate(day=TruncDate("at", tzinfo=reporting_tz()))
        .order_by()
        .values("user_id", "day")
        .distinct()
    )
    return days.count()


LICENSED = Part(_licensed, DENOMINATOR, label=_("Licensed users"))
ACTIVE_USERS = _("Active users")


ADOPTION_RATE = Kpi(
    code="adoption_rate",
    family=Family.ADOPTION,
    label=_("CRM adoption rate"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "licensed users who did at least one thing in the CRM (web or API) in the period ÷ licensed users at "
        "the end of the period"
    ),
    compute=AdoptionRatio("active", "licensed", percent=True),
    exclusions=ADOPTION_EXCLUSIONS,
    drill=Drill({NUMERATOR: Part(_active, NUMERATOR, label=ACTIVE_USERS), DENOMINATOR: LICENSED}),
    plots=(Plot(ADOPTION_CHART, label=_("Adoption (actions)")),),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.WEEKLY_REPORT}),
    question=Question.USAGE,
)

ACCESS_ADOPTION = Kpi(
    code="access_adoption",
    family=Family.ADOPTION,
    label=_("Access adoption (logins)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "licensed users who signed in at least once in the period ÷ licensed users at the end of the period"
    ),
    compute=AdoptionRatio("access", "licensed", percent=True),
    exclusions=ADOPTION_EXCLUSIONS,
    drill=Drill(
        {NUMERATOR: Part(_signed_in, NUMERATOR, label=_("Users who signed in")), DENOMINATOR: LICENSED}
    ),
    plots=(Plot(ADOPTION_CHART, label=_("Access (logins)")),),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
)

RECORDS_PER_ACTIVE_USER = Kpi(
    code="records_per_active_user",
    family=Family.ADOPTION,
    label=_("Records created per active user"),
    unit=Unit.NUMBER,
    better=Better.UP,
    formula=_("records created in the web UI in the period by active licensed users ÷ active licensed users"),
    compute=AdoptionRatio("creates", "active", percent=False),
    exclusions=ADOPTION_EXCLUSIONS,
    drill=Drill(
        {
            NUMERATOR: Part(
                _active, NUMERATOR, _web_creations, _("Active users (their web creations add up)")
            ),
            DENOMINATOR: Part(_active, DENOMINATOR, label=ACTIVE_USERS),
        }
    ),
)

ACTIVE_DAYS_PER_USER = Kpi(
    code="active_days_per_user",
    family=Family.ADOPTION,
    label=_("Active days per user"),
    unit=Unit.NUMBER,
    better=Better.UP,
    formula=_("days with at least one web or API action, summed over licensed users ÷ licensed users"),
    compute=AdoptionRatio("days", "licensed", percent=False),
    exclusions=ADOPTION_EXCLUSIONS,
    drill=Drill(
        {
            NUMERATOR: Part(
                _licensed, NUMERATOR, _active_days, _("Licensed users (their active days add up)")
            ),
            DENOMINATOR: LICENSED,
        }
    ),
)

# The datasets these KPIs read.
DATASETS = [USAGE]

KPIS = [ADOPTION_RATE, ACCESS_ADOPTION, RECORDS_PER_ACTIVE_USER, ACTIVE_DAYS_PER_USER]
