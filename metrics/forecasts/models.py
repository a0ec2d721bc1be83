"""Frozen forecasts, their per-deal items and the stored calibration."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder

FORECAST_MONEY = {"max_digits": 20, "decimal_places": 4}
# Forecasts are frozen for these period lengths (years are too long to be a forecast anyone acts on).
FROZEN_GRANULARITIES = ("week", "month", "quarter")


class FrozenForecast(models.Model):
    """What the forecast of one period said for one scope (company, a team, a rep) when the period began.

    Written once by ``metrics.forecasts.services`` and never recomputed: a deal won, lost or moved later
    leaves it as it was. ``frozen_at`` after the period's start means it was frozen late (the scheduler
    was down at the start), and then ``won_to_date`` holds what was won in the period by then, as the
    weighted forecast of a running period does (KPIS.md §4). ``reconstructed`` rows were worked out
    afterwards from the stage history and the stage probabilities' versions (upgrades, the demo).
    """

    granularity = models.CharField(_("granularity"), max_length=8)
    period_start = models.DateTimeField(_("period start"), validators=[validate_date_in_range])
    period_end = models.DateTimeField(_("period end"), validators=[validate_date_in_range])
    scope = models.CharField(_("scope"), max_length=8)
    scope_id = models.CharField(_("scope id"), max_length=40, blank=True, default="")
    frozen_at = models.DateTimeField(_("frozen at"), validators=[validate_date_in_range])
    reconstructed = models.BooleanField(_("reconstructed from history"), default=False)
    won_to_date = models.DecimalField(_("won so far"), **FORECAST_MONEY, default=0)
    open_weighted = models.DecimalField(_("open deals, weighted"), **FORECAST_MONEY, default=0)
    forecast = models.DecimalField(_("weighted forecast"), **FORECAST_MONEY, default=0)
    commit = models.DecimalField(_("commit (open)"), **FORECAST_MONEY, default=0)
    best_case = models.DecimalField(_("best case (open)"), **FORECAST_MONEY, default=0)
    pipeline = models.DecimalField(_("pipeline (open)"), **FORECAST_MONEY, default=0)
    omitted = models.DecimalField(_("omitted (open)"), **FORECAST_MONEY, default=0)
    deals = models.PositiveIntegerField(_("open deals"), default=0)
    won_deals = models.PositiveIntegerField(_("deals won so far"), default=0)

    class Meta:
        ordering = ["granularity", "scope", "scope_id", "period_start"]
        verbose_name = _("frozen forecast")
        verbose_name_plural = _("frozen forecasts")
        constraints = [
            models.UniqueConstraint(
                fields=["granularity", "period_start", "scope", "scope_id"], name="frozenforecast_unique_key"
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="frozenforecast_period"
            ),
            models.CheckConstraint(
                condition=Q(scope="company", scope_id="") | (Q(scope__in=["team", "user"]) & ~Q(scope_id="")),
                name="frozenforecast_scope_id",
            ),
            models.CheckConstraint(
                condition=Q(granularity__in=FROZEN_GRANULARITIES), name="frozenforecast_granularity"
            ),
        ]

    def __str__(self) -> str:
        start = timezone.localtime(self.period_start)
        return f"{self.granularity} {start:%Y-%m-%d} {self.scope}:{self.scope_id} {self.forecast}"

    @property
    def commit_forecast(self) -> Decimal:
        """The category forecast "commit" (KPIS.md §4): won so far + the open commit deals."""
        return self.won_to_date + self.commit

    @property
    def best_case_forecast(self) -> Decimal:
        """The category forecast "best case": commit + the open best-case deals."""
        return self.commit_forecast + self.best_case

    @property
    def is_late(self) -> bool:
        return self.frozen_at > self.period_start


class FrozenForecastItem(models.Model):
    """One deal in one period's frozen forecast: the probability, category and amount it carried then
    (``won``: already won in the period when it was frozen late, counted at 100 %). The Brier score is
    computed from these once the deals have closed."""

    granularity = models.CharField(_("granularity"), max_length=8)
    period_start = models.DateTimeField(_("period start"), validators=[validate_date_in_range])
    deal = models.ForeignKey(
        "crm.Deal", verbose_name=_("deal"), on_delete=models.CASCADE, related_name="forecast_items"
    )
    # Whose forecast it was in: the owner and their team when it was frozen; and the stage the deal was in.
    # No database constraint or index on these three (Django still clears them when a user, team or stage
    # goes; nothing looks items up by them): each cost as much as the row itself when years of items are
    # reconstructed. The deal's key has its index (the Brier score joins the closed deals' items by it).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    stage = models.ForeignKey(
        "crm.PipelineStage",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    amount = models.DecimalField(_("amount"), max_digits=14, decimal_places=2, null=True, blank=True)
    probability = models.PositiveSmallIntegerField(_("probability %"))
    category = models.CharField(_("forecast category"), max_length=10, blank=True)
    won = models.BooleanField(_("won already"), default=False)

    class Meta:
        ordering = ["granularity", "period_start", "deal"]
        verbose_name = _("frozen forecast item")
        verbose_name_plural = _("frozen forecast items")
        constraints = [
            models.UniqueConstraint(
                fields=["granularity", "period_start", "deal"], name="frozenforecastitem_unique_deal"
            ),
            models.CheckConstraint(
                condition=Q(probability__gte=0, probability__lte=100), name="frozenforecastitem_probability"
            ),
        ]

    def __str__(self) -> str:
        start = timezone.localtime(self.period_start)
        return f"{self.granularity} {start:%Y-%m-%d} deal {self.deal_id} @ {self.probability} %"


class ForecastCalibration(models.Model):
    """The stage calibration and Brier scores over the deals closed in the last four whole quarters,
    computed by a scheduled task (a pass over those deals' stage history) and read by the page.

    ``stages``: ``[{"stage": id, "reached": n, "won": k}]``, deals that reached the stage (or a later one;
    a won deal reached every open stage) and how many of them were won. ``brier``: per granularity of
    the frozen forecasts, ``{"company": [Σ(p − outcome)², n], "team:<id>": …, "user:<id>": …}``.
    """

    computed_at = models.DateTimeField(_("computed at"), validators=[validate_date_in_range])
    window_start = models.DateTimeField(_("closed from"), validators=[validate_date_in_range])
    window_end = models.DateTimeField(_("closed until"), validators=[validate_date_in_range])
    stages = models.JSONField(_("stages"), default=list, encoder=StorableJSONEncoder)
    brier = models.JSONField(_("Brier scores"), default=dict, encoder=StorableJSONEncoder)

    class Meta:
        ordering = ["-computed_at", "-id"]
        verbose_name = _("forecast calibration")
        verbose_name_plural = _("forecast calibrations")
        indexes = [models.Index(fields=["-computed_at", "-id"], name="forecastcalibration_latest")]

    def __str__(self) -> str:
        return f"{timezone.localtime(self.computed_at):%Y-%m-%d %H:%M}"
