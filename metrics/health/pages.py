"""The context of the customer health pages: the list with each score's components and the backtest beside
it, one customer's score, the settings form. Stored rows only: a bounded number of queries per page."""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.models import User
from accounts.web import CappedPaginator
from metrics.health import selectors
from metrics.health.backtest import Backtest
from metrics.health.components import COMPONENTS, DEFAULT_WEIGHTS, Component
from metrics.health.models import Band, CustomerHealth, CustomerHealthRun
from metrics.kpis.health import AT_RISK_SHARE, BACKTEST_AUC, BACKTEST_LIFT, SCORE_MEAN
from metrics.periods import local_midnight

PAGE_SIZE = 25
BAND_BADGES: dict[str, str] = {
    Band.HEALTHY: "badge-success",
    Band.AT_RISK: "badge-warning",
    Band.CRITICAL: "badge-danger",
}


@dataclass(frozen=True)
class Points:
    """One component of one score as a page shows it: its points of its weight, and what they came from."""

    component: Component
    points: Decimal
    weight: int
    fact: str

    @property
    def lost(self) -> bool:
        return self.points < self.weight


def _day(value: date | datetime) -> str:
    """A day as the reporting time zone sees it (an instant's local date, not its UTC one)."""
    if isinstance(value, datetime):
        value = timezone.localtime(value)
    return formats.date_format(value, "SHORT_DATE_FORMAT")


def _money(value: Decimal) -> str:
    return f"{formats.number_format(value, 0, force_grouping=True)} {settings.CRM_CURRENCY}"


def _facts(score: CustomerHealth) -> dict[str, str]:
    """What each component's points came from, in words."""
    if score.last_touch_at is None:
        recency = _("no contact or purchase yet")
    else:
        days = max(0, (local_midnight(score.as_of) - score.last_touch_at).days)
        recency = ngettext("last contact %(n)s day ago", "last contact %(n)s days ago", days) % {"n": days}
    if score.survey_score is None:
        satisfaction = _("no NPS or CSAT answer in 12 months")
    else:
        satisfaction = _("%(kind)s %(score)s on %(day)s") % {
            "kind": score.survey_kind.upper(),
            "score": score.survey_score,
            "day": _day(score.survey_at),
        }
    renewal = (
        _("term ends %(day)s, no renewal deal") % {"day": _day(score.renewal_due_on)}
        if score.renewal_due_on
        else _("no renewal due without a deal")
    )
    complaints, late, owner = score.complaints, score.sla_breaches, score.owner_activities
    return {
        "recency": recency,
        "satisfaction": satisfaction,
        "complaints": ngettext("%(n)s complaint in 90 days", "%(n)s complaints in 90 days", complaints)
        % {"n": complaints},
        "sla": ngettext("%(n)s ticket late in 90 days", "%(n)s tickets late in 90 days", late) % {"n": late},
        "renewal": renewal,
        "revenue": _("%(now)s in 12 months, %(before)s the 12 before")
        % {"now": _money(score.revenue_12m), "before": _money(score.revenue_prior_12m)},
        "owner": ngettext(
            "%(n)s activity by the owner in 90 days", "%(n)s activities by the owner in 90 days", owner
        )
        % {"n": owner},
    }


def points_of(score: CustomerHealth, weights: dict[str, int]) -> list[Points]:
    """Each component of ``score`` with the weight it was scored with."""
    facts = _facts(score)
    return [
        Points(c, getattr(score, c.points_field), weights.get(c.code, 0), facts[c.code]) for c in COMPONENTS
    ]


def _weights(run: CustomerHealthRun | None) -> dict[str, int]:
    """The weights the newest scoring used (the defaults before the first one)."""
    if run is None:
        return dict(DEFAULT_WEIGHTS)
    return {**DEFAULT_WEIGHTS, **(run.settings or {}).get("weights", {})}


def verdict_sentence(backtest: Backtest) -> str:
    """The backtest's answer in one sentence: beats the base rate, does not, or not enough data."""
    verdict = CustomerHealthRun.Verdict
    if backtest.verdict == verdict.TOO_FEW:
        return _(
            "Not enough data to test the score: %(churned)s of %(n)s customers at the month starts churned "
            "within 90 days (at least 10 who churned and 10 who stayed are needed)."
        ) % {"churned": backtest.churned, "n": backtest.observations}
    figures = {
        "lift": formats.number_format(backtest.lift or 0, 2),
        "auc": formats.number_format(backtest.auc or 0, 3),
        "margin": formats.number_format(backtest.auc_margin or 0, 3),
    }
    if backtest.verdict == verdict.BEATS:
        return (
            _(
                "The score beats the base rate: customers it flagged churned %(lift)s× as often as all "
                "customers, and its AUC of %(auc)s is above chance (0.5) by more than the noise margin of "
                "%(margin)s."
            )
            % figures
        )
    if not backtest.flagged:
        return _(
            "The score does not beat the base rate: it flagged no customer at the month starts. Do not rely "
            "on it; change its weights or bands."
        )
    return (
        _(
            "The score does not beat the base rate: customers it flagged churned %(lift)s× as often as all "
            "customers, and its AUC of %(auc)s is not above chance (0.5) by more than the noise margin of "
            "%(margin)s. Do not rely on it; change its weights or bands."
        )
        % figures
    )


def backtest_context(run: CustomerHealthRun | None) -> dict[str, Any]:
    backtest = Backtest.from_json(run.backtest) if run else None
    return {
        "run": run,
        "backtest": backtest,
        "verdict": verdict_sentence(backtest) if backtest else None,
        "beats": bool(backtest and backtest.verdict == CustomerHealthRun.Verdict.BEATS),
    }


def health_list_context(*, user: User, band: str | None, sort: str, page: str | None) -> dict[str, Any]:
    """The list of the scores ``user`` may see (one band, one order, one page), the count per band and the
    newest backtest."""
    run = selectors.health_run_latest()
    weights = _weights(run)
    counts = selectors.customer_health_bands(user=user, run=run)
    scores = selectors.customer_health_list(user=user, as_of=run.as_of if run else None, band=band, sort=sort)
    # Counted already, per band: the paginator reads one page and no count.
    shown = CappedPaginator(scores, PAGE_SIZE, count=counts[band] if band else counts["total"]).get_page(page)
    current = selectors.health_settings()
    return {
        **backtest_context(run),
        "page": shown,
        "rows": [(score, BAND_BADGES[score.band], points_of(score, weights)) for score in shown.object_list],
        "counts": counts,
        "bands": [(b, Band(b).label, counts.get(b, 0), BAND_BADGES[b]) for b in Band.values],
        "band": band,
        "sort": sort,
        "settings": current,
        # The weights changed after the newest scoring: the list shows the old points until it is redone.
        "rescoring": bool(
            run and current.updated_at and run.computed_at and current.updated_at > run.computed_at
        ),
        "components": [(c, weights.get(c.code, 0)) for c in COMPONENTS],
        "kpis": {"share": AT_RISK_SHARE, "mean": SCORE_MEAN, "auc": BACKTEST_AUC, "lift": BACKTEST_LIFT},
    }


def customer_health_context(*, user: User, customer: Any) -> dict[str, Any]:
    """One customer's newest score with its components (None when the customer is not scored)."""
    score = selectors.customer_health_of(user=user, customer=customer)
    run = selectors.health_run_latest() if score is not None else None
    return {
        "customer": customer,
        "score": score,
        "badge": BAND_BADGES[score.band] if score else "",
        "points": points_of(score, _weights(run)) if score else [],
        "as_of": score.as_of if score else None,
    }
