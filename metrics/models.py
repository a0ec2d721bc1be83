from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder
from crm.models import Customer

KPI_VALUE = {"max_digits": 24, "decimal_places": 6}


class Granularity(models.TextChoices):
    """Reporting period lengths; weeks are ISO weeks starting on Monday (KPIS.md G1)."""

    WEEK = "week", _("Week")
    MONTH = "month", _("Month")
    QUARTER = "quarter", _("Quarter")
    YEAR = "year", _("Year")


class Scope(models.TextChoices):
    """Whose number a snapshot row is: the company's, a team's, a user's, an acquisition channel's, (for
    the survey response rates, KPIS.md §10.12) one survey kind's or one trigger's, or (for CSAT and CES)
    one support agent's: the answers about the tickets they were assigned; for the deal and new-customer
    KPIs, one customer segment's (KPIS.md §10.4)."""

    COMPANY = "company", _("Company")
    TEAM = "team", _("Team")
    USER = "user", _("User")
    SOURCE = "source", _("Source")
    SURVEY = "survey", _("Survey kind")
    TRIGGER = "trigger", _("Survey trigger")
    AGENT = "agent", _("Support agent")
    SEGMENT = "segment", _("Customer segment")
    # The campaign KPIs (KPIS.md §10.11): one campaign's figures; ``scope_id`` is its primary key.
    CAMPAIGN = "campaign", _("Campaign")


# The scopes a target can be set for and a dashboard shown for: the others are breakdowns only.
OWNER_SCOPES = (Scope.COMPANY, Scope.TEAM, Scope.USER)


class KpiSnapshot(models.Model):
    """One KPI value for one period and scope, written only by ``metrics.services.snapshots_recompute``.

    ``scope_id`` is "" for the company, the team's or user's primary key as text, the source code
    (``crm.models.Source``), the survey kind or the survey trigger (``surveys.models.Survey``). Percent
    KPIs hold 0–100. ``value`` is NULL when the denominator is empty.
    """

    kpi = models.CharField(_("KPI"), max_length=60)
    granularity = models.CharField(_("granularity"), max_length=8, choices=Granularity.choices)
    period_start = models.DateTimeField(_("period start"), validators=[validate_date_in_range])
    period_end = models.DateTimeField(_("period end"), validators=[validate_date_in_range])
    scope = models.CharField(_("scope"), max_length=8, choices=Scope.choices)
    scope_id = models.CharField(_("scope id"), max_length=40, blank=True, default="")
    value = models.DecimalField(_("value"), **KPI_VALUE, null=True, blank=True)
    numerator = models.DecimalField(_("numerator"), **KPI_VALUE, null=True, blank=True)
    denominator = models.DecimalField(_("denominator"), **KPI_VALUE, null=True, blank=True)
    # bigint: a ratio's sample size is its denominator, a sum of amounts for some (rotting share)
    sample_size = models.PositiveBigIntegerField(_("sample size"), null=True, blank=True)
    extra = models.JSONField(_("details"), default=dict, blank=True, encoder=StorableJSONEncoder)
    # A cohort or grace window that is still open: the value may still change (KPIS.md G5).
    is_provisional = models.BooleanField(_("provisional"), default=False)
    computed_at = models.DateTimeField(_("computed at"), validators=[validate_date_in_range])
    definition_version = models.PositiveSmallIntegerField(_("definition version"))

    class Meta:
        ordering = ["kpi", "granularity", "scope", "scope_id", "period_start"]
        verbose_name = _("KPI snapshot")
        verbose_name_plural = _("KPI snapshots")
        constraints = [
            # Column order serves the dashboard's series read (kpi, granularity, scope, scope_id, range).
            models.UniqueConstraint(
                fields=["kpi", "granularity", "scope", "scope_id", "period_start"],
                name="kpisnapshot_unique_key",
            ),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="kpisnapshot_period"),
            models.CheckConstraint(
                condition=Q(scope="company", scope_id="") | (~Q(scope="company") & ~Q(scope_id="")),
                name="kpisnapshot_scope_id",
            ),
        ]
        indexes = [
            models.Index(fields=["granularity", "period_start"], name="kpisnapshot_period_idx"),
            # The periods a recompute covers, per KPI: its stale rows are found through this.
            models.Index(fields=["kpi", "granularity", "period_start"], name="kpisnapshot_kpi_period"),
        ]

    def __str__(self) -> str:
        return f"{self.kpi} {self.granularity} {self.period_start:%Y-%m-%d} {self.scope}:{self.scope_id}"


class KpiTarget(models.Model):
    """A manager's target for one KPI, period and scope."""

    kpi = models.CharField(_("KPI"), max_length=60)
    granularity = models.CharField(_("granularity"), max_length=8, choices=Granularity.choices)
    period_start = models.DateTimeField(_("period start"), validators=[validate_date_in_range])
    scope = models.CharField(_("scope"), max_length=8, choices=Scope.choices, default=Scope.COMPANY)
    scope_id = models.CharField(_("scope id"), max_length=40, blank=True, default="")
    value = models.DecimalField(_("target"), **KPI_VALUE)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, validators=[validate_date_in_range])
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["kpi", "granularity", "scope", "scope_id", "period_start"]
        verbose_name = _("KPI target")
        verbose_name_plural = _("KPI targets")
        constraints = [
            models.UniqueConstraint(
                fields=["kpi", "granularity", "scope", "scope_id", "period_start"],
                name="kpitarget_unique_key",
            ),
            models.CheckConstraint(
                condition=Q(scope="company", scope_id="") | (~Q(scope="company") & ~Q(scope_id="")),
                name="kpitarget_scope_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kpi} {self.granularity} {self.period_start:%Y-%m-%d} {self.scope}:{self.scope_id}"


class SnapshotRun(models.Model):
    """One run of the snapshot or RFM recompute: freshness ("data as of") and health of the engine."""

    class Kind(models.TextChoices):
        RECENT = "recent", _("Recent periods")
        LONG = "long", _("Medians of quarters and years")
        RANGE = "range", _("Range")
        FULL = "full", _("Full rebuild")
        RFM = "rfm", _("RFM segments")

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        OK = "ok", _("Finished")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped (another run was in progress)")

    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.RUNNING)
    granularities = models.CharField(_("granularities"), max_length=40, blank=True)
    range_start = models.DateTimeField(_("from"), null=True, blank=True, validators=[validate_date_in_range])
    range_end = models.DateTimeField(_("until"), null=True, blank=True, validators=[validate_date_in_range])
    kpis = models.JSONField(
        _("KPIs"), default=list, blank=True, help_text=_("Empty: all KPIs."), encoder=StorableJSONEncoder
    )
    started_at = models.DateTimeField(_("started at"), validators=[validate_date_in_range])
    finished_at = models.DateTimeField(
        _("finished at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    duration_seconds = models.FloatField(_("duration (s)"), null=True, blank=True)
    rows = models.PositiveIntegerField(_("rows written"), default=0)
    error = models.TextField(_("error"), blank=True)
    datasets = models.JSONField(
        _("time per dataset"),
        default=dict,
        # Also a database default: workers of the previous release, still running during a deploy, insert
        # runs without it.
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        encoder=StorableJSONEncoder,
        help_text=_(
            "Per dataset: milliseconds spent scanning it (scan_ms), rewriting the facts of its changed days "
            "(changed_days_ms) and the grouped rows it gave."
        ),
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = _("snapshot run")
        verbose_name_plural = _("snapshot runs")
        indexes = [models.Index(fields=["kind", "status", "-started_at"], name="snapshotrun_kind_status")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.started_at:%Y-%m-%d %H:%M} {self.status}"


class KpiFact(models.Model):
    """Totals of one KPI dataset's additive measures for one day or month and one user or source.

    The KPI engine's intermediate layer (``metrics.kpis.facts``): a full rebuild writes them from the
    records, the every-few-minutes run rewrites only the days whose records changed and re-adds their
    weeks and months from the day facts, and every period's counts and sums are added up from them
    (weeks from week facts, longer periods from month facts).

    ``values`` holds the dataset's measures as integers (sums of money in cents), in the order that
    ``KpiFactState.measures`` names: ``values[1]`` (SQL arrays count from 1) is ``measures[1]``. An
    array rather than a column per measure, because every dataset has measures of its own; rather than
    JSON, because the engine adds up and compares hundreds of thousands of them per run.
    ``scope`` is "user" (``scope_id`` the user's id, "" for no user), "source" or "" (neither).
    """

    class Grain(models.TextChoices):
        DAY = "day", _("Day")
        WEEK = "week", _("Week")
        MONTH = "month", _("Month")

    dataset = models.CharField(_("dataset"), max_length=40)
    grain = models.CharField(_("grain"), max_length=5, choices=Grain.choices)
    day = models.DateField(
        _("day"), help_text=_("The day, or the first day of the month."), validators=[validate_date_in_range]
    )
    scope = models.CharField(_("scope"), max_length=8, blank=True)
    scope_id = models.CharField(_("scope id"), max_length=40, blank=True)
    values = ArrayField(models.BigIntegerField(), verbose_name=_("values"))

    class Meta:
        verbose_name = _("KPI fact")
        verbose_name_plural = _("KPI facts")
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "grain", "day", "scope", "scope_id"], name="kpifact_unique_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.dataset} {self.grain} {self.day} {self.scope}:{self.scope_id}"


class KpiFactState(models.Model):
    """How far one dataset's facts are complete: its definition when built and the refresh watermark."""

    dataset = models.CharField(_("dataset"), max_length=40, unique=True)
    signature = models.CharField(_("definition signature"), max_length=64)
    built_at = models.DateTimeField(_("rebuilt from all records at"), validators=[validate_date_in_range])
    refreshed_at = models.DateTimeField(
        _("refreshed at"),
        help_text=_("Changes made before this instant are in the facts."),
        validators=[validate_date_in_range],
    )
    long_refreshed_at = models.DateTimeField(
        _("quarters and years refreshed at"),
        null=True,
        blank=True,
        help_text=_(
            "Statistics (medians, percentiles) of quarters and years include changes made before this."
        ),
        validators=[validate_date_in_range],
    )
    inputs = models.CharField(
        _("inputs signature"),
        max_length=64,
        blank=True,
        help_text=_("Teams, seats, spend, costs, settings, stages and surveys when snapshots were written."),
    )
    long_inputs = models.CharField(_("inputs signature of quarters and years"), max_length=64, blank=True)
    measures = ArrayField(
        models.CharField(max_length=80),
        verbose_name=_("measures"),
        default=list,
        blank=True,
        help_text=_(
            "What each of the facts' values holds, in order; a measure counted per granularity is named "
            "measure@granularity."
        ),
    )

    days_from = models.DateField(
        _("day facts from"),
        null=True,
        blank=True,
        help_text=_(
            "The first day whose day facts are complete: a change to a later day rewrites that day and "
            "re-adds its week and month from the day facts; an earlier change rescans its whole week and "
            "month from the records."
        ),
        validators=[validate_date_in_range],
    )

    class Meta:
        verbose_name = _("KPI fact state")
        verbose_name_plural = _("KPI fact states")

    def __str__(self) -> str:
        return f"{self.dataset} @ {self.refreshed_at:%Y-%m-%d %H:%M}"


class CustomerRfm(models.Model):
    """A customer's RFM scores as of one date (KPIS.md §8); 5 is best. Kept per ``as_of`` for movement."""

    class Segment(models.TextChoices):
        CHAMPIONS = "champions", _("Champions")
        LOYAL = "loyal", _("Loyal")
        POTENTIAL = "potential", _("Potential loyalists")
        AT_RISK = "at_risk", _("At risk")
        LOST = "lost", _("Lost")
        HIBERNATING = "hibernating", _("Hibernating")
        NEEDS_ATTENTION = "attention", _("Needs attention")
        NO_RECENT = "no_recent", _("No recent purchase")

    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.CASCADE, related_name="rfm_scores"
    )
    as_of = models.DateField(_("as of"), validators=[validate_date_in_range])
    last_purchase_at = models.DateTimeField(
        _("last purchase"), null=True, blank=True, validators=[validate_date_in_range]
    )
    recency_days = models.PositiveIntegerField(_("recency (days)"), null=True, blank=True)
    frequency = models.PositiveIntegerField(_("frequency"), default=0)
    monetary = models.DecimalField(_("monetary"), max_digits=16, decimal_places=2, default=0)
    r = models.PositiveSmallIntegerField(_("R"), null=True, blank=True)
    f = models.PositiveSmallIntegerField(_("F"), null=True, blank=True)
    m = models.PositiveSmallIntegerField(_("M"), null=True, blank=True)
    segment = models.CharField(_("segment"), max_length=12, choices=Segment.choices)

    class Meta:
        ordering = ["-as_of", "customer"]
        verbose_name = _("customer RFM score")
        verbose_name_plural = _("customer RFM scores")
        constraints = [
            models.UniqueConstraint(fields=["customer", "as_of"], name="customerrfm_unique_customer_as_of"),
            models.CheckConstraint(
                condition=(Q(r__isnull=True) & Q(f__isnull=True) & Q(m__isnull=True))
                | (Q(r__gte=1, r__lte=5) & Q(f__gte=1, f__lte=5) & Q(m__gte=1, m__lte=5)),
                name="customerrfm_scores_1_5",
            ),
        ]
        indexes = [models.Index(fields=["as_of", "segment"], name="customerrfm_as_of_segment")]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.as_of}: {self.r}{self.f}{self.m} {self.segment}"

    @property
    def cell(self) -> str:
        return f"{self.r}{self.f}{self.m}" if self.r else ""


class ReportDelivery(models.Model):
    """One weekly KPI report sent to one manager: makes the weekly send idempotent (no second copy)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    week_start = models.DateField(_("week"), validators=[validate_date_in_range])
    sent_at = models.DateTimeField(_("sent at"), auto_now_add=True, validators=[validate_date_in_range])

    class Meta:
        ordering = ["-week_start", "user"]
        verbose_name = _("report delivery")
        verbose_name_plural = _("report deliveries")
        constraints = [
            models.UniqueConstraint(fields=["user", "week_start"], name="reportdelivery_once_per_week")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.week_start}"


# Forecast calibration (KPIS.md §10.6): models kept in their own module, registered with the metrics app here.
from metrics.forecasts.models import ForecastCalibration, FrozenForecast, FrozenForecastItem  # noqa: E402

__all__ = ["ForecastCalibration", "FrozenForecast", "FrozenForecastItem"]

# Customer health (KPIS.md §10.10): models kept in their own module, registered with the metrics app here.
from metrics.health.models import CustomerHealth, CustomerHealthRun, HealthSettings  # noqa: E402

__all__ += ["CustomerHealth", "CustomerHealthRun", "HealthSettings"]

# Alerts (KPIS.md §10.8): models kept in their own module, registered with the metrics app here.
from metrics.alerts.models import Alert, AlertNotice  # noqa: E402

__all__ += ["Alert", "AlertNotice"]
