"""Satisfaction KPIs (KPIS.md §2): NPS, CSAT, CES and the survey response rate.

Answers count in the period of their ``score_submitted_at`` (a partial answer whose score was submitted
counts; the comment is optional). Team and user scopes use the account owner *at the time of the
answer* (stored on the response) and that owner's current team. Relationship and transactional NPS are
separate KPIs, never pooled. Survey KPIs carry their sample size, a 95 % interval and ``low_sample``
(KPIS.md G4). Response rates use invitations by send time and the customer's current owner.
"""

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Max, Q, QuerySet
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from metrics.kpis.base import (
    ALL_SCOPES,
    Better,
    Chart,
    Context,
    Family,
    Kpi,
    Plot,
    Question,
    Section,
    Significance,
    Unit,
)
from metrics.kpis.builders import HUNDRED, Dataset, OfDataset, RowFn, count, dec, grouped, total
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.details import MeanDetail, NpsDetail, ProportionDetail, ResponseDetail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, Part, dataset_part
from metrics.kpis.shared import live, local_days
from metrics.models import Scope
from metrics.periods import Period
from metrics.stats import Z95, wilson_interval
from surveys.models import Survey, SurveyInvitation, SurveyResponse

# Per owner (the account owner when the customer answered), and per support agent (the assignee, when the
# customer answered, of the ticket a CSAT or CES survey asked about: an agent's own satisfaction numbers).
ANSWER_SCOPES: ScopePaths = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id", Scope.AGENT: "agent_id"}
SERVICE_ANSWER_SCOPES = (*ALL_SCOPES, Scope.AGENT)
INVITATION_SCOPES: ScopePaths = {
    Scope.USER: "customer__owner_id",
    Scope.TEAM: "customer__owner__team_id",
    Scope.SURVEY: "survey__kind",
    Scope.TRIGGER: "trigger",
}
# Response rates pooled, and per survey kind and per trigger (KPIS.md §9.2 item 11, §10.12).
RESPONSE_RATE_SCOPES = (*ALL_SCOPES, Scope.SURVEY, Scope.TRIGGER)
LIVE = live("customer__")
SURVEY_EXCLUSIONS = _("answers and invitations of merged duplicates and internal/test customers are excluded")

NPS_KINDS = {
    "relationship": Q(survey__kind=Survey.Kind.NPS, survey__nps_type=Survey.NpsType.RELATIONSHIP),
    "transactional": Q(survey__kind=Survey.Kind.NPS, survey__nps_type=Survey.NpsType.TRANSACTIONAL),
}
CSAT = Q(survey__kind=Survey.Kind.CSAT)
CES = Q(survey__kind=Survey.Kind.CES)
PROMOTER = Q(score__gte=9)
DETRACTOR = Q(score__lte=6)
# The survey's own top box: 4–5 on the 5-point CSAT (top-2-box), 5–7 on the 7-point CES ("easy").
POSITIVE = Q(score__gte=F("survey__positive_min"))

ANSWERS = Dataset(
    name="survey_answers",
    rows=lambda ctx: SurveyResponse.objects.filter(LIVE),
    date="score_submitted_at",
    scopes=ANSWER_SCOPES,
    measures={
        **{
            name: measure
            for kind, q in NPS_KINDS.items()
            for name, measure in (
                (f"{kind}_n", count(q)),
                (f"{kind}_p", count(q & PROMOTER)),
                (f"{kind}_d", count(q & DETRACTOR)),
            )
        },
        "csat_n": count(CSAT),
        "csat_top": count(CSAT & POSITIVE),
        "csat_sum": total("score", CSAT),
        "ces_n": count(CES),
        "ces_easy": count(CES & POSITIVE),
        "ces_sum": total("score", CES),
        "ces_sumsq": total(F("score") * F("score"), CES),
    },
    # NPS compares each period with the one before it (significance of the change).
    compare=lambda p: (p.previous(),),
    # An answer is counted when its score is submitted; editing the comment later changes nothing here.
    changed=(),
)


def _answered_invitation_days(ctx: Context, since: datetime) -> set[date]:
    """Opening, answering or completing a link changes its invitation's row, on the day it was sent.

    Links can only be used inside their response window, so only invitations sent within the longest
    window before ``since`` can have changed.
    """
    sent_since = since - _longest_window(ctx) - timedelta(days=1)
    changed = SurveyInvitation.objects.filter(sent_at__gte=sent_since).filter(
        Q(opened_at__gte=since) | Q(started_at__gte=since) | Q(completed_at__gte=since)
    )
    return local_days(changed, "sent_at")


INVITATIONS = Dataset(
    name="survey_invitations",
    rows=lambda ctx: SurveyInvitation.objects.filter(LIVE, sent_at__isnull=False),
    date="sent_at",
    scopes=INVITATION_SCOPES,
    measures={
        "delivered": count(),
        "opened": count(Q(opened_at__isnull=False)),
        "started": count(Q(started_at__isnull=False)),
        "completed": count(Q(status=SurveyInvitation.Status.COMPLETED)),
    },
    touches=(_answered_invitation_days,),
)


# Statistics (pure functions, checked against hand-worked values in the tests)
# ---------------------------------------------------------------------------------------------------------


def nps_stats(n: int, promoters: int, detractors: int) -> dict[str, Any] | None:
    """NPS, its standard error and 95 % margin of error (KPIS.md §2.5); None for n = 0.

    Each answer is +1 / 0 / −1, so NPS/100 is a sample mean: Var(NPS) = 100² (p + d − (p − d)²) / n.
    """
    if n <= 0:
        return None
    p, d = promoters / n, detractors / n
    se = 100 * math.sqrt(max(p + d - (p - d) ** 2, 0.0) / n)
    nps = 100 * (p - d)
    return {"nps": nps, "se": se, "moe95": Z95 * se}


def nps_change_z(current: dict[str, Any] | None, previous: dict[str, Any] | None) -> float | None:
    """z of the change from the previous period; None when either side is empty or has no variance."""
    if current is None or previous is None:
        return None
    spread = math.sqrt(current["se"] ** 2 + previous["se"] ** 2)
    if spread == 0:
        return None
    return (current["nps"] - previous["nps"]) / spread


def mean_interval(n: int, total_: float, total_squares: float) -> dict[str, float | None]:
    """Mean, sample standard deviation and 95 % margin of error (x̄ ± 1.96·s/√n) from sums."""
    mean = total_ / n
    if n < 2:
        return {"mean": mean, "sd": None, "moe95": None}
    variance = max((total_squares - total_ * total_ / n) / (n - 1), 0.0)
    sd = math.sqrt(variance)
    return {"mean": mean, "sd": sd, "moe95": Z95 * sd / math.sqrt(n)}


def _round(value: float | None, places: int = 4) -> float | None:
    return None if value is None else round(value, places)


# Fewer answers than this and a survey KPI is "low n" (KPIS.md G4): shown muted, never coloured.
SURVEY_MIN_SAMPLE = settings.SURVEYS_LOW_SAMPLE


# Computations
# ---------------------------------------------------------------------------------------------------------

Fn = RowFn


def _nps(kind: str) -> OfDataset:
    def row(ctx: Context, kpi: Kpi) -> Fn:
        data = grouped(ctx, ANSWERS)

        def counts(values: Mapping[str, Any]) -> tuple[int, int, int]:
            n, promoters, detractors = (int(values.get(f"{kind}_{part}") or 0) for part in ("n", "p", "d"))
            return n, promoters, detractors

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
            n, promoters, detractors = counts(values)
            if n == 0 and scope != Scope.COMPANY:
                return None
            before = data.get((period.granularity, period.previous().first_day, scope, scope_id), {})
            prev_n, prev_p, prev_d = counts(before)
            current, previous = nps_stats(n, promoters, detractors), nps_stats(prev_n, prev_p, prev_d)
            z = nps_change_z(current, previous)
            passives = n - promoters - detractors
            extra = NpsDetail(
                nps_type=kind,
                promoters=promoters,
                passives=passives,
                detractors=detractors,
                promoters_pct=_round(100 * promoters / n) if n else None,
                passives_pct=_round(100 * passives / n) if n else None,
                detractors_pct=_round(100 * detractors / n) if n else None,
                se=_round(current["se"]) if current else None,
                moe95=_round(current["moe95"]) if current else None,
                low_sample=n < kpi.min_sample,
                previous=_round(previous["nps"]) if previous else None,
                previous_n=prev_n,
                z=_round(z),
                significant=None if z is None else abs(z) > Z95,
            )
            value = Decimal(100 * (promoters - detractors)) / n if n else None
            return value, Decimal(promoters - detractors), Decimal(n), n, extra

        return fn

    return OfDataset(ANSWERS, row)


def _csat_percent(ctx: Context, kpi: Kpi) -> Fn:
    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        n, top = int(values.get("csat_n") or 0), int(values.get("csat_top") or 0)
        interval = wilson_interval(top, n)  # None without answers
        if interval is None:
            empty = (None, Decimal(0), Decimal(0), 0, ProportionDetail(low_sample=True))
            return None if scope != Scope.COMPANY else empty
        low, high = interval
        extra = ProportionDetail(
            wilson_low=_round(100 * low),
            wilson_high=_round(100 * high),
            mean=_round(float(dec(values.get("csat_sum"))) / n),
            low_sample=n < kpi.min_sample,
        )
        return Decimal(top) * HUNDRED / n, Decimal(top), Decimal(n), n, extra

    return fn


def _mean(prefix: str, scale: tuple[int, int]) -> OfDataset:
    def row(ctx: Context, kpi: Kpi) -> Fn:
        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
            n = int(values.get(f"{prefix}_n") or 0)
            extra = MeanDetail(scale_min=scale[0], scale_max=scale[1], low_sample=n < kpi.min_sample)
            if n == 0:
                return None if scope != Scope.COMPANY else (None, Decimal(0), Decimal(0), 0, extra)
            sum_ = dec(values.get(f"{prefix}_sum"))
            if prefix == "ces":
                stats = mean_interval(n, float(sum_), float(dec(values.get("ces_sumsq"))))
                extra = replace(
                    extra,
                    sd=_round(stats["sd"]),
                    moe95=_round(stats["moe95"]),
                    easy_pct=_round(100 * int(values.get("ces_easy") or 0) / n),
                )
            return sum_ / n, sum_, Decimal(n), n, extra

        return fn

    return OfDataset(ANSWERS, row)


def _longest_window(ctx: Context) -> timedelta:
    days = ctx.memo("survey_window", lambda: Survey.objects.aggregate(v=Max("response_window_days"))["v"])
    return timedelta(days=days or 0)


def _response_rate(numerator: str) -> OfDataset:
    def row(ctx: Context, kpi: Kpi) -> Fn:
        window = _longest_window(ctx)

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            delivered = int(values.get("delivered") or 0)
            started, completed = int(values.get("started") or 0), int(values.get("completed") or 0)
            num = Decimal(completed if numerator == "completed" else started)
            extra = ResponseDetail(
                delivered=delivered,
                opened=int(values.get("opened") or 0),
                started=started,
                completed=completed,
                partial=started - completed,
                drop_off_pct=_round(100 * (started - completed) / started) if started else None,
            )
            value = num * HUNDRED / delivered if delivered else None
            # Invitations still inside their response window may yet be answered (KPIS.md §2.4, G5).
            provisional = not ctx.is_closed(period, window)
            return value, num, Decimal(delivered), delivered, extra, provisional

        return fn

    return OfDataset(INVITATIONS, row)


# Drill-downs: the live, access-scoped answers or invitations behind a number
# ---------------------------------------------------------------------------------------------------------


def _nps_part(kind: str) -> Part:
    """The answers of one NPS kind; they make the numerator P − D: promoters count +1, detractors −1."""
    answers = dataset_part(ANSWERS, f"{kind}_n", NUMERATOR)

    def promoters_less_detractors(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
        counts = records.order_by().aggregate(p=Count("pk", filter=PROMOTER), d=Count("pk", filter=DETRACTOR))
        return counts["p"] - counts["d"]

    return replace(answers, total=promoters_less_detractors, label=_("Answers (promoters − detractors)"))


def _answer_drill(numerator: str, denominator: str, label: Promise) -> Drill:
    return Drill(
        {
            NUMERATOR: dataset_part(ANSWERS, numerator, NUMERATOR, label=label),
            DENOMINATOR: dataset_part(ANSWERS, denominator, DENOMINATOR, label=_("Answers")),
        }
    )


def _nps_drill(kind: str) -> Drill:
    return Drill(
        {
            NUMERATOR: _nps_part(kind),
            DENOMINATOR: dataset_part(ANSWERS, f"{kind}_n", DENOMINATOR, label=_("Answers")),
        }
    )


def _response_drill(numerator: str, label: Promise) -> Drill:
    return Drill(
        {
            NUMERATOR: dataset_part(INVITATIONS, numerator, NUMERATOR, label=label),
            DENOMINATOR: dataset_part(
                INVITATIONS, "delivered", DENOMINATOR, label=_("Invitations delivered")
            ),
        }
    )


NPS_CHART = Chart("chart-nps", _("Relationship NPS"), "nps", order=40)
CSAT_CES_CHART = Chart(
    "chart-csat-ces", _("CSAT and CES"), "lines", order=50, y_title=_("CSAT %"), y2_title=_("CES (1–7)")
)

# The datasets these KPIs read.
DATASETS = [ANSWERS, INVITATIONS]

NPS_RELATIONSHIP = Kpi(
    code="nps_relationship",
    family=Family.SATISFACTION,
    label=_("NPS (relationship)"),
    unit=Unit.POINTS,
    better=Better.UP,
    formula=_(
        "share of promoters (9–10) − share of detractors (0–6) among the relationship NPS answers given in "
        "the period, from −100 to +100; details: shares, n, the 95-percent margin of error and whether the "
        "change from the previous period is significant (z-test, |z| > 1.96)"
    ),
    compute=_nps("relationship"),
    exclusions=SURVEY_EXCLUSIONS,
    drill=_nps_drill("relationship"),
    detail=NpsDetail,
    plots=(Plot(NPS_CHART, "nps"),),
    significance=Significance.NPS,
    min_sample=SURVEY_MIN_SAMPLE,
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE}),
    question=Question.SATISFACTION,
)

NPS_TRANSACTIONAL = Kpi(
    code="nps_transactional",
    family=Family.SATISFACTION,
    label=_("NPS (transactional)"),
    unit=Unit.POINTS,
    better=Better.UP,
    formula=_(
        "share of promoters (9–10) − share of detractors (0–6) among the NPS answers given after an event "
        "(never pooled with "
        "relationship NPS); details as for relationship NPS"
    ),
    compute=_nps("transactional"),
    exclusions=SURVEY_EXCLUSIONS,
    drill=_nps_drill("transactional"),
    detail=NpsDetail,
    significance=Significance.NPS,
    min_sample=SURVEY_MIN_SAMPLE,
)

CSAT_PERCENT = Kpi(
    code="csat",
    family=Family.SATISFACTION,
    label=_("CSAT"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "answers of 4 or 5 ÷ CSAT answers (1–5) given in the period (top-2-box); details: the Wilson "
        "95-percent interval and the mean"
    ),
    compute=OfDataset(ANSWERS, _csat_percent),
    scopes=SERVICE_ANSWER_SCOPES,
    exclusions=SURVEY_EXCLUSIONS,
    drill=_answer_drill("csat_top", "csat_n", _("Satisfied (4–5)")),
    detail=ProportionDetail,
    plots=(Plot(CSAT_CES_CHART, label=_("CSAT %")),),
    significance=Significance.PROPORTION,
    min_sample=SURVEY_MIN_SAMPLE,
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE}),
    question=Question.SATISFACTION,
)

CSAT_MEAN = Kpi(
    code="csat_mean",
    family=Family.SATISFACTION,
    label=_("CSAT (mean score)"),
    unit=Unit.NUMBER,
    better=Better.UP,
    formula=_("mean of the CSAT answers (1–5) given in the period"),
    compute=_mean("csat", (1, 5)),
    scopes=SERVICE_ANSWER_SCOPES,
    exclusions=SURVEY_EXCLUSIONS,
    drill=_answer_drill("csat_sum", "csat_n", _("Answers (their scores add up)")),
    detail=MeanDetail,
    significance=Significance.MEAN,
    min_sample=SURVEY_MIN_SAMPLE,
)

CES_MEAN = Kpi(
    code="ces_mean",
    family=Family.SATISFACTION,
    label=_("CES (mean score)"),
    unit=Unit.NUMBER,
    better=Better.UP,
    formula=_(
        "mean of the CES answers (1 = strongly disagree … 7 = strongly agree that it was easy) given in the "
        "period, reported out of 7; details: the 95-percent margin of error and the share of easy answers "
        "(5–7)"
    ),
    compute=_mean("ces", (1, 7)),
    scopes=SERVICE_ANSWER_SCOPES,
    exclusions=SURVEY_EXCLUSIONS,
    drill=_answer_drill("ces_sum", "ces_n", _("Answers (their scores add up)")),
    detail=MeanDetail,
    plots=(Plot(CSAT_CES_CHART, axis="y2", label=_("CES mean")),),
    significance=Significance.MEAN,
    min_sample=SURVEY_MIN_SAMPLE,
    question=Question.SATISFACTION,
)

RESPONSE_RATE_RR1 = Kpi(
    code="survey_response_rate",
    family=Family.SATISFACTION,
    label=_("Survey response rate (RR1)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "invitations answered completely ÷ invitations delivered in the period (by send time, all surveys "
        "pooled; per survey kind and per trigger in the breakdowns); provisional while links sent in the "
        "period can still be answered"
    ),
    compute=_response_rate("completed"),
    scopes=RESPONSE_RATE_SCOPES,
    exclusions=SURVEY_EXCLUSIONS,
    drill=_response_drill("completed", _("Answered completely")),
    detail=ResponseDetail,
    significance=Significance.PROPORTION,
    min_sample=SURVEY_MIN_SAMPLE,
)

RESPONSE_RATE_RR2 = Kpi(
    code="survey_response_rate_rr2",
    family=Family.SATISFACTION,
    label=_("Survey response rate incl. partials (RR2)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "invitations with a submitted score (complete or partial) ÷ invitations delivered in the period "
        "(by send time, all surveys pooled; per survey kind and per trigger in the breakdowns); provisional "
        "while links sent in the period can still be answered"
    ),
    compute=_response_rate("started"),
    scopes=RESPONSE_RATE_SCOPES,
    exclusions=SURVEY_EXCLUSIONS,
    drill=_response_drill("started", _("With a submitted score")),
    detail=ResponseDetail,
    significance=Significance.PROPORTION,
    min_sample=SURVEY_MIN_SAMPLE,
)

KPIS = [
    NPS_RELATIONSHIP,
    NPS_TRANSACTIONAL,
    CSAT_PERCENT,
    CSAT_MEAN,
    CES_MEAN,
    RESPONSE_RATE_RR1,
    RESPONSE_RATE_RR2,
]
