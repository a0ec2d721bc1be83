"""The declarative KPI definition, the compute context and the result row."""

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import models
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from metrics.kpis.details import Detail
from metrics.models import Scope
from metrics.periods import GRANULARITIES, Period, period_of

if TYPE_CHECKING:
    from metrics.kpis.drilldown import Drill


class Family(models.TextChoices):
    SALES = "sales", _("Sales")
    RETENTION = "retention", _("Retention")
    SATISFACTION = "satisfaction", _("Satisfaction")
    SERVICE = "service", _("Service")
    ECONOMICS = "economics", _("Unit economics")
    ADOPTION = "adoption", _("Adoption")
    DATA_QUALITY = "data_quality", _("Data quality")
    CAMPAIGNS = "campaigns", pgettext_lazy("marketing", "Campaigns")


class Unit(models.TextChoices):
    COUNT = "count", _("count")
    CURRENCY = "currency", _("amount")
    PERCENT = "percent", _("%")
    DAYS = "days", _("days")
    HOURS = "hours", _("hours")
    RATIO = "ratio", _("ratio")
    NUMBER = "number", _("number")
    # A score from −100 to +100 (NPS), shown as a whole number; its changes are in points.
    POINTS = "points", _("points")
    # A rate of money (pipeline velocity): not a sum over time or segments, so no pace and no contributions.
    CURRENCY_PER_DAY = "currency_day", _("amount per day")


class Better(models.TextChoices):
    UP = "up", _("Higher is better")
    DOWN = "down", _("Lower is better")
    NEUTRAL = "neutral", _("Neither")


class Basis(models.TextChoices):
    """How a KPI relates to its period (KPIS.md G2, G5)."""

    PERIOD = "period", _("Events in the period")
    COHORT = "cohort", _("Cohort created in the period, followed to its outcome")
    STOCK = "stock", _("State at the end of the period")
    CURRENT = "current", _("Current state (current period only)")


class Significance(models.TextChoices):
    """How a change of the KPI between two periods is tested (KPIS.md §10.2)."""

    PROPORTION = "proportion", _("two proportions (z-test, Fisher's exact test at small counts)")
    NPS = "nps", _("two NPS (z-test of the difference)")
    COUNT = "count", _("two counts (exact test of two Poisson rates)")
    MEAN = "mean", _("two means (Welch's t-test)")
    NONE = "none", _("not tested")


class Question(models.TextChoices):
    """The scorecard's lines (KPIS.md §10.5): the questions the product answers, in this order."""

    SATISFACTION = "satisfaction", _("Are customers satisfied?")
    SALES_GROWTH = "sales_growth", _("Are sales growing?")
    RETENTION = "retention", _("Do customers stay?")
    SERVICE = "service", _("Is service fast and on time?")
    DATA = "data", _("Is the data accurate?")
    USAGE = "usage", _("Does the team use the CRM?")


class Section(models.TextChoices):
    """Pages and reports beside the dashboard that show a chosen few KPIs."""

    WEEKLY_REPORT = "weekly_report", _("Weekly report")
    GO_LIVE = "go_live", _("Before and after go-live")
    GO_LIVE_ROI = "go_live_roi", _("Return on the CRM")
    CHANNELS = "channels", _("Acquisition channels")


@dataclass(frozen=True)
class Chart:
    """A chart of the dashboard; KPIs take their place in it with a :class:`Plot`.

    ``kind`` picks the figure builder: ``lines`` (one line per KPI, on the ``y`` or ``y2`` axis),
    ``revenue`` (bars, a line on ``y2`` and the forecast), ``funnel`` (the stages of one KPI's details),
    ``nps`` (the score with its margin of error) or ``by_person`` (bars and dots per person).
    """

    id: str
    title: Promise
    kind: str
    order: int
    y_title: Promise | str = ""
    y2_title: Promise | str = ""


@dataclass(frozen=True)
class Plot:
    """Where a KPI is drawn: its chart, its role in it (``line``, ``bars``, ``forecast``, …), its axis."""

    chart: Chart
    role: str = "line"
    axis: str = "y"
    label: Promise | None = None


# Below these a change is not read as real (KPIS.md §10.2): closed deals for win rates and deal sizes, events
# for count-based rates; surveys use their own (SURVEYS_LOW_SAMPLE).
MIN_CLOSED_DEALS = 10
MIN_EVENTS = 10

ALL_SCOPES = (Scope.COMPANY, Scope.TEAM, Scope.USER)
ACQUISITION_SCOPES = (Scope.COMPANY, Scope.TEAM, Scope.USER, Scope.SOURCE)
# Deal and customer KPIs broken down by customer segment too (why it changed, KPIS.md §10.4).
SEGMENTED_SCOPES = (*ALL_SCOPES, Scope.SEGMENT)
SEGMENTED_ACQUISITION_SCOPES = (*ACQUISITION_SCOPES, Scope.SEGMENT)
COMPANY_ONLY = (Scope.COMPANY,)
MONTHLY_AND_LONGER = ("month", "quarter", "year")
DEFAULT_EXCLUSIONS = _("merged duplicates and internal/test customers are excluded")


class Row(NamedTuple):
    """One computed snapshot value; ``value`` is None when the denominator is empty."""

    granularity: str
    first_day: date
    scope: str
    scope_id: str
    value: Decimal | None
    numerator: Decimal | None = None
    denominator: Decimal | None = None
    sample_size: int | None = None
    # The KPI's detail class, or a plain dict (stored as it is).
    extra: Detail | dict[str, Any] | None = None
    provisional: bool = False


@dataclass(frozen=True)
class Kpi:
    """A KPI: what it means (shown to users) and how to compute all its periods and scopes at once."""

    code: str
    family: str
    label: Promise
    unit: str
    better: str
    formula: Promise
    compute: Callable[["Context", "Kpi"], Iterable[Row]]
    basis: str = Basis.PERIOD
    scopes: tuple[str, ...] = ALL_SCOPES
    granularities: tuple[str, ...] = GRANULARITIES
    definition_version: int = 1
    exclusions: Promise = DEFAULT_EXCLUSIONS
    # The records behind the numbers, when ``compute`` is not a dataset builder that knows them.
    drill: "Drill | None" = None
    # What its snapshots carry beside the numbers (``extra``), typed.
    detail: type[Detail] = Detail
    # Where it is drawn on the dashboard.
    plots: tuple[Plot, ...] = ()
    # Below this sample size (answers, closed deals, events) a value is shown muted, without colour.
    min_sample: int = 0
    significance: str = Significance.NONE
    # The pages and reports beside the dashboard it appears on.
    sections: frozenset[str] = frozenset()
    # The scorecard line it answers (the first KPI of a line is its headline).
    question: str | None = None
    # Computed by a scheduled task of its own (a scan too heavy for the 5-minute run and the nightly
    # rebuild, e.g. time in stage): those runs leave it out; a run that names it, or a range run, computes it.
    own_task: bool = False

    @property
    def drilldown(self) -> "Drill | None":
        """The records behind the KPI's numbers: declared, or derived from its compute builder."""
        return self.drill or getattr(self.compute, "drill", None)

    def details_of(self, extra: Mapping[str, Any] | None) -> Detail:
        """A snapshot's ``extra`` as this KPI's detail class."""
        return self.detail.from_json(extra)

    @property
    def current_only(self) -> bool:
        return self.basis == Basis.CURRENT

    @property
    def is_percent(self) -> bool:
        return self.unit == Unit.PERCENT


@dataclass(frozen=True)
class Run:
    """What a recompute is: the periods it answers (per granularity), its clock and its kind. It never
    changes while the run goes; what the run finds is its ``Context``."""

    # Per granularity; kept sorted, without repeats (a tuple each).
    periods: Mapping[str, Sequence[Period]]
    now: datetime
    # Incremental: rewrite the facts of the days whose records changed since each dataset's watermark
    # (``facts.prepare``), then answer only the periods those days count for. Full: everything from the
    # records (storing the facts built on the way).
    incremental: bool = False
    # The hourly run of the statistics (medians, percentiles) of quarters and years, which the
    # every-few-minutes run leaves out: only KPIs reading them are answered.
    long_statistics: bool = False
    # The requested periods by granularity and first day.
    _by_day: Mapping[str, Mapping[date, Period]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        periods = {g: tuple(sorted(set(ps))) for g, ps in self.periods.items() if ps}
        object.__setattr__(self, "periods", periods)
        object.__setattr__(self, "_by_day", {g: {p.first_day: p for p in ps} for g, ps in periods.items()})

    @property
    def granularities(self) -> list[str]:
        return [g for g in GRANULARITIES if g in self.periods]

    def requested(self, granularities: Iterable[str]) -> list[str]:
        """Those of ``granularities`` this run recomputes, in the usual order."""
        return [g for g in self.granularities if g in granularities]

    def period(self, granularity: str, first_day: date) -> Period | None:
        """The requested period of ``granularity`` starting on ``first_day``, or None if not requested."""
        return self._by_day.get(granularity, {}).get(first_day)

    def current(self, granularity: str) -> Period:
        return period_of(self.now, granularity)

    def bounds(
        self, granularities: Iterable[str], compare: Callable[[Period], Iterable[Period]] | None = None
    ) -> tuple[datetime, datetime]:
        """The instants that cover every requested period of ``granularities`` (and those compared with)."""
        firsts, lasts = [], []
        for g in granularities:
            if g in self.periods:
                first = self.periods[g][0]
                firsts.append(min(p.start for p in (first, *(compare(first) if compare else ()))))
                lasts.append(self.periods[g][-1].end)
        if not firsts:
            return self.now, self.now
        return min(firsts), max(lasts)

    def is_closed(self, period: Period, grace: timedelta = timedelta(0)) -> bool:
        return period.end + grace <= self.now


@dataclass
class Context:
    """What a run (``Run``) has found so far: the memo (so each base scan runs once), the days each
    dataset's records changed on, the periods to recompute, what the KPI being computed has read.

    The run's own attributes (``periods``, ``now``, ``incremental``, ``long_statistics``) and questions
    (``requested``, ``period``, ``current``, ``bounds``, ``is_closed``) are read through the context.
    """

    run: Run
    # Every period of every KPI is touched (e.g. a user changed team): nothing may be skipped.
    everything: bool = False
    _memo: dict[Any, Any] = field(default_factory=dict)
    _memo_deps: dict[Any, set[str]] = field(default_factory=dict)
    _computing: list[set[str]] = field(default_factory=list)
    # Dataset name -> the days whose records changed (incremental runs).
    dirty: dict[str, "Dirty"] = field(default_factory=dict)
    # Granularity -> the requested periods an incremental run recomputes (None: all of them).
    touched: dict[str, set[Period]] | None = None
    # Dataset name -> touched periods it left out (statistics of quarters and years, hourly).
    skipped: dict[str, set[Period]] = field(default_factory=dict)
    # Incremental runs: dataset name -> the periods its own changes touch (datasets not here, computed in
    # every run, go by ``touched``). A dataset computes just these, and a KPI answers the periods that
    # the datasets it read touch: an edit of last month's deal recomputes last month's pipeline, not
    # last month's ticket medians.
    touched_by: dict[str, set[Period]] = field(default_factory=dict)
    # Dataset name -> periods it computes on top of its own, for a KPI that reads it with a dataset that
    # touches them (``widen``).
    widened: dict[str, set[Period]] = field(default_factory=dict)
    # Incremental runs: every dataset by name.
    datasets: dict[str, Any] = field(default_factory=dict)
    # Names of the datasets of statistics (not additive: computed from the records, not from facts).
    statistics: set[str] = field(default_factory=set)
    # What the KPI being computed has read (dataset names).
    reads: set[str] = field(default_factory=set)
    # Every dataset kept as facts or tracked by a watermark that this run computed.
    tracked: dict[str, Any] = field(default_factory=dict)
    # Dataset name -> the first day of its complete day facts: read from the fact states by an incremental
    # run; set by a full build from the days it stored (``facts.days_from``).
    days_from: dict[str, date] = field(default_factory=dict)
    # Full builds: the scans running ahead on a second connection (facts.Prefetch), if any.
    prefetch: Any = None
    # While a scan is compiled: the ranges of dates it reads ((None, end): everything before end).
    scan: list[tuple[Any, Any]] = field(default_factory=list)
    # While a dataset's days are rescanned for some users only (``Dataset.by_user``): their ids.
    scan_users: list[int] | None = None
    # ``answers`` of the KPI being computed, by (period, number of datasets it had read).
    _answered: dict[tuple[Period, int], bool] = field(default_factory=dict)
    # Dataset name -> milliseconds per step and rows: a slow run explains itself (SnapshotRun.datasets).
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    # A part of a rebuild fanned out across workers (``metrics.services.fanout``): the datasets whose facts
    # this part stores; it builds the others' periods from the records without storing them. None: all.
    stores_facts: frozenset[str] | None = None

    @property
    def periods(self) -> Mapping[str, Sequence[Period]]:
        return self.run.periods

    @property
    def now(self) -> datetime:
        return self.run.now

    @property
    def incremental(self) -> bool:
        return self.run.incremental

    @property
    def long_statistics(self) -> bool:
        return self.run.long_statistics

    @property
    def granularities(self) -> list[str]:
        return self.run.granularities

    def requested(self, granularities: Iterable[str]) -> list[str]:
        return self.run.requested(granularities)

    def period(self, granularity: str, first_day: date) -> Period | None:
        # Asked once per grouped row: the run's index read directly, not through a second call.
        return self.run._by_day.get(granularity, {}).get(first_day)

    def current(self, granularity: str) -> Period:
        return self.run.current(granularity)

    def bounds(
        self, granularities: Iterable[str], compare: Callable[[Period], Iterable[Period]] | None = None
    ) -> tuple[datetime, datetime]:
        return self.run.bounds(granularities, compare)

    def is_closed(self, period: Period, grace: timedelta = timedelta(0)) -> bool:
        return self.run.is_closed(period, grace)

    def memo(self, key: Any, compute: Callable[[], Any], *, reads: Iterable[str] = ()) -> Any:
        """``compute()`` once per recompute; ``reads``: what it depends on, noted for every caller.

        The datasets it reads are remembered, so ``release`` can drop it when none is needed any more.
        """
        for name in (*reads, *self._memo_deps.get(key, ())):
            self.read(name)
        if key not in self._memo:
            deps = set(reads)
            self._computing.append(deps)
            try:
                self._memo[key] = compute()
            finally:
                self._computing.pop()
            self._memo_deps[key] = deps
        return self._memo[key]

    def timed(self, name: str, step: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, its milliseconds noted under dataset ``name`` and ``step`` (and its rows, if it
        has a length)."""
        clock = time.perf_counter()
        result = compute()
        entry = self.timings.setdefault(name, {})
        entry[f"{step}_ms"] = round(entry.get(f"{step}_ms", 0) + 1000 * (time.perf_counter() - clock), 1)
        if hasattr(result, "__len__"):
            entry["rows"] = entry.get("rows", 0) + len(result)
        return result

    def release(self, keep: set[str]) -> None:
        """Drop every memoised result that depends only on datasets outside ``keep`` (the datasets the
        KPIs still to compute read): a full rebuild's memory stays flat instead of holding every
        dataset's periods to the end."""
        for key, deps in list(self._memo_deps.items()):
            if deps and not deps & keep:
                del self._memo[key], self._memo_deps[key]

    def stores(self, dataset: str) -> bool:
        """Whether this run stores the facts of ``dataset`` when it builds them."""
        return self.stores_facts is None or dataset in self.stores_facts

    def start_kpi(self) -> None:
        """Forget what the previous KPI read."""
        self.reads = set()
        self._answered = {}

    def read(self, name: str) -> None:
        """Note that the KPI being computed (and any result being memoised) depends on dataset ``name``."""
        self.reads.add(name)
        for deps in self._computing:
            deps.add(name)

    def touches(self, period: Period) -> bool:
        """Whether this run recomputes ``period`` for any KPI (every period in a full run)."""
        return self.touched is None or period in self.touched.get(period.granularity, ())

    def answers(self, period: Period) -> bool:
        """Whether the KPI being computed is recomputed for ``period`` in this run: every period in a full
        run; in an incremental one the touched periods, but for those a dataset it read left out."""
        if self.touched is None:
            return True
        # Per period and what the KPI has read so far (it only grows): asked once per row otherwise.
        key = (period, len(self.reads))
        answer = self._answered.get(key)
        if answer is None:
            answer = self._answered[key] = (
                self.touches(period)
                and not (self.long_statistics and not self.reads & self.statistics)
                and not any(period in self.skipped.get(name, ()) for name in self.reads)
            )
        return answer

    def needed(
        self,
        granularity: str,
        compare: Callable[[Period], Iterable[Period]] | None,
        dataset: str | None = None,
    ) -> list[Period]:
        """The periods of ``granularity`` a dataset computes: the requested ones (in an incremental run
        those that ``dataset``'s changes touch, or any change without one) and those they are compared
        with."""
        periods = [p for p in self.periods.get(granularity, []) if self.computes(dataset, p)]
        extra = [c for p in periods for c in (compare(p) if compare else ())]
        return sorted({*periods, *extra})

    def computes(self, dataset: str | None, period: Period) -> bool:
        """Whether ``dataset`` computes ``period`` in this run."""
        if dataset is None or dataset not in self.touched_by:
            return self.touches(period)
        return period in self.touched_by[dataset] or period in self.widened.get(dataset, ())

    def answered_by_reads(self, period: Period, reads: Iterable[str] | None = None) -> bool:
        """Once a KPI is computed: whether the datasets it read (``reads``, by default what the KPI just
        computed read) touch ``period``; any change does for a KPI that read none."""
        reads = self.reads if reads is None else reads
        if self.touched is None or self.everything or not reads:
            return self.touches(period)
        return any(
            period in self.touched_by[name] if name in self.touched_by else self.touches(period)
            for name in reads
        )

    def widen(self, periods: set[Period], reads: Iterable[str] | None = None) -> bool:
        """Make every dataset in ``reads`` (by default those the KPI just computed read) compute
        ``periods`` too, forgetting what was computed without them; False if each already does (the
        KPI's rows are complete)."""
        short = {}
        for name in self.reads if reads is None else reads:
            ds = self.datasets.get(name)
            own = {p for p in periods if ds is None or self._computable(ds, p)}
            if any(not self.computes(name, p) for p in own):
                short[name] = own
        for name, own in short.items():
            self.widened.setdefault(name, set()).update(own)
            entry = self.timings.setdefault(name, {})
            entry["widened"] = entry.get("widened", 0) + 1
        for key, deps in list(self._memo_deps.items()):
            if deps & short.keys():
                del self._memo[key], self._memo_deps[key]
        return bool(short)

    def widen_ahead(self, reads: Iterable[Iterable[str]]) -> None:
        """Before any KPI is computed: widen the datasets that KPIs read together (``reads``: the datasets
        each KPI read the last time), so that each is computed once."""
        every = [p for periods in self.periods.values() for p in periods]
        for names in reads:
            names = list(names)
            if len(names) > 1:
                self.widen({p for p in every if self.answered_by_reads(p, names)}, names)

    def _computable(self, ds: Any, period: Period) -> bool:
        """Whether ``ds`` can compute ``period`` at all (its granularities; the current period only)."""
        if period.granularity not in ds.granularities:
            return False
        return not ds.current_only or period == self.current(period.granularity)


@dataclass(frozen=True)
class Dirty:
    """The days whose records changed for one dataset in an incremental run, and the periods that touches."""

    days: frozenset[date]
    compare: Callable[[Period], Iterable[Period]] | None = None
    # A stock: a change on any earlier day moves the level at every later period end.
    cumulative: bool = False

    def touches(self, period: Period) -> bool:
        if not self.days:
            return False
        end = period.next().first_day
        if self.cumulative:
            return min(self.days) < end
        ranges = [
            (p.first_day, p.next().first_day)
            for p in (period, *(self.compare(period) if self.compare else ()))
        ]
        return any(lo <= day < hi for day in self.days for lo, hi in ranges)


def iter_periods(ctx: Context, kpi: Kpi) -> Iterator[Period]:
    for g in ctx.requested(kpi.granularities):
        yield from ctx.periods[g]
