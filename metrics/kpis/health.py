"""Customer health KPIs (KPIS.md §10.10), read from what the nightly scoring stored (``metrics.health``):
the share of active customers at risk or critical and their average score, per owner, team and company; and
the backtest's AUC and lift, for the company.

The scoring run keeps its counts per owner (``CustomerHealthRun.by_owner``), so each KPI run reads one row
instead of every score. Scores exist as of the newest scoring only, so these describe now: each run writes
the current periods, and the rows of past periods keep what was measured while they were current (as the
data-quality KPIs do). The drill-down lists the customers of the newest scoring (for the current period),
through the customer access rules; its owner is the customer's owner now, the snapshot's the owner at the
scoring (they differ only for an account moved since the last night). Their codes start with ``health_``:
the KPI page links those to the customer health page.
"""

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Subquery, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.models import Customer
from crm.selectors import customer_list
from metrics.health.models import FLAGGED, Band, CustomerHealth, CustomerHealthRun
from metrics.kpis import facts
from metrics.kpis.base import (
    ALL_SCOPES,
    COMPANY_ONLY,
    MIN_EVENTS,
    Basis,
    Better,
    Context,
    Family,
    Kpi,
    Row,
    Significance,
    Unit,
)
from metrics.kpis.builders import HUNDRED, divide, scope_filter
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.details import Detail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, Part
from metrics.kpis.shared import live
from metrics.models import Scope
from metrics.periods import Period

HEALTH_SCOPES: ScopePaths = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}
EXCLUSIONS = _(
    "merged duplicates and internal/test customers are excluded; only customers active at the start of the "
    "day of the newest scoring are scored"
)
SCORE = "score"

# One scope's counts: customers per band and the sum of their scores.
Counts = Mapping[str, Decimal]


def _newest_run(ctx: Context) -> CustomerHealthRun | None:
    return ctx.memo("health run", lambda: CustomerHealthRun.objects.order_by("-as_of").first())


def _scope_counts(ctx: Context, run: CustomerHealthRun) -> dict[tuple[str, str], dict[str, Decimal]]:
    """The run's counts per owner added up per person, their current team and the company."""
    team_of = ctx.memo("teams of users", facts.teams_of_users)
    totals: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    totals[(Scope.COMPANY, "")] = defaultdict(Decimal)  # a row even with nobody scored
    for owner, counts in (run.by_owner or {}).items():
        keys = [(Scope.COMPANY, "")]
        if owner:
            keys.append((Scope.USER, owner))
            if owner in team_of:
                keys.append((Scope.TEAM, team_of[owner]))
        for key in keys:
            for name, value in counts.items():
                totals[key][name] += Decimal(str(value))
    return totals


def _current_periods(ctx: Context, kpi: Kpi) -> Iterator[Period]:
    for g in ctx.requested(kpi.granularities):
        period = ctx.period(g, ctx.current(g).first_day)
        if period is not None and ctx.answers(period):
            yield period


@dataclass(frozen=True)
class FromScoring:
    """A KPI of the newest scoring's counts per scope: ``fn`` turns one scope's counts into value,
    numerator, denominator, sample size and details."""

    fn: Callable[[Counts], tuple]

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        run = _newest_run(ctx)
        if run is None:
            return
        totals = _scope_counts(ctx, run)
        for period in _current_periods(ctx, kpi):
            for (scope, scope_id), counts in totals.items():
                if scope in kpi.scopes:
                    yield Row(period.granularity, period.first_day, scope, scope_id, *self.fn(counts))


@dataclass(frozen=True)
class BandsDetail(Detail):
    """How many of the scored customers are in each band."""

    healthy: int | None = None
    at_risk: int | None = None
    critical: int | None = None


def _scored(counts: Counts) -> Decimal:
    return sum((counts.get(band, Decimal(0)) for band in Band.values), Decimal(0))


def _flagged_share(counts: Counts) -> tuple:
    flagged, scored = sum((counts.get(b, Decimal(0)) for b in FLAGGED), Decimal(0)), _scored(counts)
    bands = BandsDetail(
        healthy=int(counts.get(Band.HEALTHY, 0)),
        at_risk=int(counts.get(Band.AT_RISK, 0)),
        critical=int(counts.get(Band.CRITICAL, 0)),
    )
    return divide(flagged, scored, HUNDRED), flagged, scored, int(scored), bands


def _mean_score(counts: Counts) -> tuple:
    total, scored = counts.get(SCORE, Decimal(0)), _scored(counts)
    return divide(total, scored), total, scored, int(scored), None


# The drill-down: the customers of the newest scoring
# ---------------------------------------------------------------------------------------------------------


def _customers(*bands: str) -> Callable[[User, Period, str, str], QuerySet]:
    """The customers ``user`` may see in the scope, scored in one of ``bands`` by the newest scoring: for
    the period running now (the scores describe now; earlier periods' numbers came from earlier ones)."""

    def records(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
        if not period.contains(timezone.now()):
            return Customer.objects.none()
        newest = CustomerHealth.objects.order_by("-as_of").values("as_of")[:1]
        scored = CustomerHealth.objects.filter(as_of=Subquery(newest), band__in=bands).values("customer_id")
        return customer_list(user=user).filter(
            live(), scope_filter(scope, scope_id, HEALTH_SCOPES), pk__in=scored
        )

    return records


def _score_sum(records: QuerySet, period: Period, scope: str, scope_id: str) -> Decimal:
    newest = CustomerHealth.objects.order_by("-as_of").values("as_of")[:1]
    scores = CustomerHealth.objects.filter(as_of=Subquery(newest), customer__in=records.values("pk"))
    return scores.aggregate(v=Sum("score"))["v"] or Decimal(0)


EVERY_BAND = tuple(Band.values)
SCORED = Part(_customers(*EVERY_BAND), DENOMINATOR, label=_("Scored customers"))


AT_RISK_SHARE = Kpi(
    code="health_at_risk_share",
    family=Family.RETENTION,
    label=_("Customers at risk (health score)"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_(
        "active customers whose health score is at risk or critical ÷ active customers scored, from the "
        "newest nightly scoring; the score's components, weights and bands are on the customer health page"
    ),
    compute=FromScoring(_flagged_share),
    drill=Drill(
        {
            NUMERATOR: Part(_customers(*FLAGGED), NUMERATOR, label=_("At risk or critical")),
            Band.CRITICAL: Part(_customers(Band.CRITICAL), Band.CRITICAL, label=Band.CRITICAL.label),
            Band.AT_RISK: Part(_customers(Band.AT_RISK), Band.AT_RISK, label=Band.AT_RISK.label),
            Band.HEALTHY: Part(_customers(Band.HEALTHY), Band.HEALTHY, label=Band.HEALTHY.label),
            DENOMINATOR: SCORED,
        }
    ),
    basis=Basis.CURRENT,
    scopes=ALL_SCOPES,
    detail=BandsDetail,
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
    exclusions=EXCLUSIONS,
)

SCORE_MEAN = Kpi(
    code="health_score_mean",
    family=Family.RETENTION,
    label=_("Average health score"),
    unit=Unit.NUMBER,
    better=Better.UP,
    formula=_("Σ health scores (0–100) of the active customers scored ÷ customers scored, newest scoring"),
    compute=FromScoring(_mean_score),
    drill=Drill(
        {
            NUMERATOR: Part(_customers(*EVERY_BAND), NUMERATOR, _score_sum, _("Their scores, added up")),
            DENOMINATOR: SCORED,
        }
    ),
    basis=Basis.CURRENT,
    scopes=ALL_SCOPES,
    exclusions=EXCLUSIONS,
)


@dataclass(frozen=True)
class BacktestDetail(Detail):
    """The newest backtest's figures beside the one a KPI shows."""

    as_of: str | None = None
    base_rate: float | None = None
    precision: float | None = None
    recall: float | None = None
    lift: float | None = None
    auc: float | None = None
    auc_margin: float | None = None
    churned: int | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class BacktestFigure:
    """One figure of the newest backtest for the company's current periods; its sample is the backtest's
    observations (customers × month starts). ``scale``: 100 for a percent."""

    name: str
    scale: Decimal = Decimal(1)

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        run = _newest_run(ctx)
        if run is None:
            return
        figure = getattr(run, self.name)
        value = None if figure is None else Decimal(str(figure)) * self.scale
        details = BacktestDetail(
            as_of=run.as_of.isoformat(),
            base_rate=run.base_rate,
            precision=run.precision,
            recall=run.recall,
            lift=run.lift,
            auc=run.auc,
            auc_margin=run.auc_margin,
            churned=run.churned,
            verdict=run.verdict,
        )
        for period in _current_periods(ctx, kpi):
            yield Row(period.granularity, period.first_day, Scope.COMPANY, "", value, None, None,
                      run.observations, details)  # fmt: skip


BACKTEST_AUC = Kpi(
    code="health_backtest_auc",
    family=Family.RETENTION,
    label=_("Health score AUC (backtest)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "the chance that a customer who churned within 90 days of a month start had scored lower on it than "
        "one who stayed (ties count half), over the last 12 month starts whose 90 days are over; 50 % means "
        "no better than chance"
    ),
    compute=BacktestFigure("auc", HUNDRED),
    basis=Basis.CURRENT,
    scopes=COMPANY_ONLY,
    detail=BacktestDetail,
    exclusions=EXCLUSIONS,
)

BACKTEST_LIFT = Kpi(
    code="health_backtest_lift",
    family=Family.RETENTION,
    label=_("Health score lift (backtest)"),
    unit=Unit.RATIO,
    better=Better.UP,
    formula=_(
        "churn rate within 90 days of the customers at risk or critical at a month start ÷ the churn rate of "
        "all customers scored then, over the last 12 month starts whose 90 days are over; 1× is no better "
        "than the base rate"
    ),
    compute=BacktestFigure("lift"),
    basis=Basis.CURRENT,
    scopes=COMPANY_ONLY,
    detail=BacktestDetail,
    exclusions=EXCLUSIONS,
)

# No dataset: the KPIs read the scoring run's counts.
DATASETS: list[Any] = []

KPIS = [AT_RISK_SHARE, SCORE_MEAN, BACKTEST_AUC, BACKTEST_LIFT]
