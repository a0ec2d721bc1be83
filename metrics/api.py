"""The KPI numbers through the API: the registry, and a KPI's snapshots over a span for one scope.

Scopes follow the dashboard's rules: managers read the company, a team or a person; anyone else reads
only their own numbers (asking for another scope is a 404). Reads snapshot rows only, as the pages do.
"""

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from accounts.models import Team, User
from crm.api.common import ApiError, ErrorOut, not_found
from metrics import selectors
from metrics.kpis import get_kpi, registry
from metrics.kpis.base import Kpi
from metrics.models import Granularity, Scope
from metrics.periods import Period, periods_between, shift_date

router = Router(tags=["kpis"])
MAX_PERIODS = 400


class KpiOut(Schema):
    code: str
    family: str
    label: str
    unit: str
    better: str
    formula: str
    scopes: list[str]
    granularities: list[str]


class PointOut(Schema):
    period_start: date
    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    sample_size: int | None
    target: Decimal | None


class SeriesOut(Schema):
    kpi: KpiOut
    granularity: str
    scope: str
    id: str
    points: list[PointOut]


class SeriesQuery(Schema):
    granularity: str = "month"
    from_: date | None = Field(None, alias="from")
    to: date | None = None
    scope: str = ""
    id: str = ""


def _kpi_out(kpi: Any) -> dict[str, Any]:
    return {
        "code": kpi.code,
        "family": kpi.family,
        "label": str(kpi.label),
        "unit": kpi.unit,
        "better": kpi.better,
        "formula": str(kpi.formula),
        "scopes": list(kpi.scopes),
        "granularities": list(kpi.granularities),
    }


@router.get("/", response=list[KpiOut], summary="The KPIs (definitions)")
def kpi_list(request: HttpRequest) -> list[dict[str, Any]]:
    return [_kpi_out(kpi) for kpi in registry().values()]


def _scope(user: User, scope: str, scope_id: str) -> tuple[str, str]:
    """The scope asked for, if the user may read it (KPIS.md access rules); a rep's own by default."""
    if not user.is_manager:
        if scope in ("", Scope.USER, Scope.AGENT) and scope_id in ("", str(user.pk)):
            return (scope or Scope.USER), str(user.pk)
        raise not_found()
    if scope in ("", Scope.COMPANY):
        return Scope.COMPANY, ""
    if scope == Scope.TEAM and scope_id.isdigit() and Team.objects.filter(pk=int(scope_id[:18])).exists():
        return Scope.TEAM, scope_id
    if (
        scope in (Scope.USER, Scope.AGENT)
        and scope_id.isdigit()
        and User.objects.filter(pk=int(scope_id[:18])).exists()
    ):
        return scope, scope_id
    raise not_found()


def _kpi(code: str, granularity: str) -> Kpi:
    """The KPI ``code`` names (404 for none) if it has numbers at ``granularity`` (else 422)."""
    try:
        kpi = get_kpi(code)
    except KeyError:
        raise not_found() from None
    if granularity not in Granularity.values or granularity not in kpi.granularities:
        raise ApiError(
            422, "invalid", "Unknown granularity.", {"granularity": [", ".join(kpi.granularities)]}
        )
    return kpi


def _periods(q: SeriesQuery) -> list[Period]:
    """The periods from ``from`` to ``to`` (default: the last 12 up to today, at most MAX_PERIODS)."""
    today = timezone.localdate()
    to = min(q.to or today, today)
    start = q.from_ or shift_date(to, q.granularity, -11)
    if start > to:
        raise ApiError(422, "invalid", "`from` is after `to`.", {"from": ["Choose a day before `to`."]})
    start = max(start, shift_date(to, q.granularity, -MAX_PERIODS + 1))
    return periods_between(q.granularity, start, to + timedelta(days=1))


@router.get("/{code}", response={200: SeriesOut, 404: ErrorOut, 422: ErrorOut}, summary="A KPI's numbers")
def kpi_series(request: HttpRequest, code: str, q: Query[SeriesQuery]) -> dict[str, Any]:
    """Snapshots of one KPI per period from ``from`` to ``to`` (default: the last 12, at most 400), for
    ``scope`` (company, team, user, agent) and ``id``, with the target where one is set."""
    kpi = _kpi(code, q.granularity)
    scope, scope_id = _scope(request.user, q.scope, q.id)
    if scope not in kpi.scopes:
        raise ApiError(422, "invalid", "This KPI has no numbers for that scope.", {"scope": list(kpi.scopes)})
    points = selectors.kpi_points(
        kpi=kpi.code, granularity=q.granularity, periods=_periods(q), scope=scope, scope_id=scope_id
    )
    return {
        "kpi": _kpi_out(kpi),
        "granularity": q.granularity,
        "scope": scope,
        "id": scope_id,
        "points": points,
    }


targets_router = Router(tags=["kpis"])


class TargetOut(Schema):
    kpi: str
    granularity: str
    period_start: date
    scope: str
    scope_id: str
    value: Decimal


@targets_router.get("/", response={200: list[TargetOut], 404: ErrorOut}, summary="KPI targets")
def target_list(request: HttpRequest, scope: str = "", id: str = "") -> list[Any]:
    """The targets set for the scope you may read (your own, unless you are a manager), newest first."""
    scope, scope_id = _scope(request.user, scope, id)
    return list(selectors.kpi_target_list(scope=scope, scope_id=scope_id)[:1000])
