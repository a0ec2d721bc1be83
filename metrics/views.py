"""The KPI dashboard, KPI detail with drill-down, targets and the recompute button.

Dashboard pages read snapshot rows only (see ``metrics.dashboard``); the drill-down lists live records,
always through the CRM's access selectors. A rep sees the same pages for their own numbers only.
"""

from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from accounts import dates
from accounts.models import StaffFeedback, User
from accounts.security import security_log
from accounts.web import CappedPaginator, partial_template
from crm import selectors as crm_selectors
from crm.data import quality
from crm.data.exports import csv_response, xlsx_response
from metrics import charts, contribution, dashboard, selectors
from metrics.forms import DashboardFilterForm, TargetForm
from metrics.kpis import in_section, registry
from metrics.kpis.base import Basis, Better, Family, Kpi, Section, Unit
from metrics.kpis.dimensions import breakdown_dimensions
from metrics.models import CustomerRfm, KpiSnapshot, Scope, SnapshotRun
from metrics.periods import period_of
from metrics.services import RecomputeError, kpi_target_set

DRILL_PAGE_SIZE = 25
DEFAULT_PART_LABELS = {"numerator": _lazy("Numerator"), "denominator": _lazy("Denominator")}
BY_REP_LIMIT = 30


def _filters(request: HttpRequest) -> tuple[DashboardFilterForm, dashboard.Filters]:
    form = DashboardFilterForm({"granularity": "month", **request.GET.dict()}, user=request.user)
    data = form.cleaned()
    filters = dashboard.resolve_filters(
        user=request.user,
        granularity=data["granularity"],
        period=data["period"].isoformat() if data["period"] else None,
        count=data["count"],
        team=data.get("team"),
        rep=data.get("rep"),
    )
    return form, filters


def _unit_label(kpi: Kpi) -> str:
    return settings.CRM_CURRENCY if kpi.unit == Unit.CURRENCY else str(Unit(kpi.unit).label)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def dashboard_view(request: HttpRequest) -> HttpResponse:
    form, filters = _filters(request)
    freshness = dashboard.freshness()
    query = request.GET.urlencode()

    def panels() -> str:
        families, series = dashboard.build_cards(filters)
        families = dashboard.for_role(families, request.user)
        charts = dashboard.build_charts(filters, series, request.user)
        dashboard.explain_cards(families, filters, request.user)
        scorecard = dashboard.scorecard(families) if request.user.is_manager else []
        context = {"families": families, "charts": charts, "query": query, "scorecard": scorecard}
        return render_to_string("metrics/_dashboard_panels.html", context, request=request)

    context = {
        "form": form,
        "filters": filters,
        # A rep's numbers lead with their own pipeline and tasks (live, two indexed aggregates).
        "my_day": crm_selectors.my_day(user=request.user) if request.user.is_rep else None,
        "complete_query": _complete_query(request, filters),
        "panels": dashboard.cached_fragment(request, "dashboard", freshness, panels),
        "freshness": freshness,
        "query": query,
    }
    return render(request, partial_template(request, "metrics/dashboard.html", "dashboard-body"), context)


# KPI detail and drill-down
# ---------------------------------------------------------------------------------------------------------


def _kpi_or_404(code: str) -> Kpi:
    try:
        return registry()[code]
    except KeyError:
        raise Http404 from None


@login_required
@require_GET
@vary_on_headers("HX-Request")
def kpi_detail_view(request: HttpRequest, code: str) -> HttpResponse:
    kpi = _kpi_or_404(code)
    form, filters = _filters(request)
    if filters.scope not in kpi.scopes or filters.granularity not in kpi.granularities:
        raise Http404
    series = dashboard.load_series(filters, [kpi]).get(kpi.code, {})
    targets = dashboard.load_targets(filters, [kpi]).get(kpi.code, {})
    snapshot = series.get(filters.period.first_day)
    parts = kpi.drilldown.parts if kpi.drilldown is not None else {}
    part = request.GET.get("part") if request.GET.get("part") in parts else next(iter(parts), "")
    freshness = dashboard.freshness()

    def breakdowns() -> str:
        context = {"kpi": kpi, "breakdowns": _breakdowns(request.user, kpi, filters)}
        return render_to_string("metrics/_kpi_breakdowns.html", context, request=request).strip()

    drill, drill_error = None, None
    if parts:
        try:
            records = selectors.kpi_drilldown(
                user=request.user,
                kpi_code=kpi.code,
                granularity=filters.granularity,
                period_start=filters.period.start,
                scope=filters.scope_of(kpi),
                scope_id=filters.scope_id,
                part=part,
            )
            drill = selectors.drill_page(
                records, request.GET.get("page"), DRILL_PAGE_SIZE, CappedPaginator.COUNT_CAP
            )
        except selectors.DrilldownError as exc:
            drill_error = str(exc)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "kpi": kpi,
        "kpi_meta": {
            "family": Family(kpi.family).label,
            "basis": Basis(kpi.basis).label,
            "better": Better(kpi.better).label,
        },
        "form": form,
        "filters": filters,
        "card": dashboard.Card(
            kpi=kpi,
            snapshot=snapshot,
            previous=series.get(filters.period.previous().first_day),
            target=targets.get(filters.period.first_day),
            exposure=dashboard.period_exposure(filters.period),
            period=filters.period,
        ),
        "snapshot": snapshot,
        "facts": dashboard.detail_facts(kpi, snapshot.extra) if snapshot else [],
        "trend": charts.kpi_trend_chart(
            kpi=kpi, periods=filters.periods, series=series, targets=targets, unit_label=_unit_label(kpi)
        ),
        "breakdowns": dashboard.cached_fragment(request, f"breakdown:{kpi.code}", freshness, breakdowns),
        "drill": drill,
        "drill_error": drill_error,
        "part": part,
        "parts": [(name, p.label or DEFAULT_PART_LABELS.get(name, name)) for name, p in parts.items()],
        "query": query.urlencode(),
        "can_set_target": request.user.is_manager,
        "freshness": freshness,
    }
    return render(request, partial_template(request, "metrics/kpi_detail.html", "drilldown"), context)


def _breakdowns(user: User, kpi: Kpi, filters: dashboard.Filters) -> list[dict]:
    """The KPI for the shown period per dimension it declares (per team, person, channel, survey kind,
    trigger): managers see every row, a rep only their own per-person row."""
    found = []
    for dimension in breakdown_dimensions(kpi.scopes):
        scope, label = dimension.scope, dimension.label
        if not (user.is_manager or dimension.own_row):
            continue
        rows = list(
            selectors.kpi_breakdown(
                user=user,
                kpi=kpi.code,
                granularity=filters.granularity,
                period_start=filters.period.start,
                scope=scope,
            )
        )
        if not rows:
            continue
        names = dimension.names([r.scope_id for r in rows])
        table = sorted(
            (
                {
                    "name": names.get(r.scope_id, r.scope_id),
                    "snapshot": r,
                    "display": dashboard.format_value(kpi, r.value),
                }
                for r in rows
            ),
            key=lambda row: (row["snapshot"].value is None, -(row["snapshot"].value or 0)),
        )
        why = _why_it_changed(user, kpi, filters, scope, rows, names) if user.is_manager else None
        chart = charts.by_user_chart(
            title=f"{kpi.label} — {label}",
            names=[t["name"] for t in table],
            bars=[charts._num(t["snapshot"].value) for t in table],
            bar_name=str(kpi.label),
            y_title=_unit_label(kpi),
        )
        found.append(
            {
                "scope": scope,
                "label": label,
                "rows": table,
                "chart": chart,
                "id": f"chart-{scope}",
                "why": why,
            }
        )
    return found


def _why_it_changed(
    user: User, kpi: Kpi, filters: dashboard.Filters, scope: str, rows: list, names: dict[str, str]
) -> dict | None:
    """The change split over this breakdown's segments (KPIS.md §10.4), against what the card compares
    with (the same elapsed days of the period before while a week or month runs, else the whole period
    before): the three that pushed it up most and down most, with their n; None when the KPI is neither
    a sum nor a ratio (a median, a state) or there is nothing to compare with."""
    before_rows = selectors.kpi_breakdown(
        user=user,
        kpi=kpi.code,
        granularity=filters.granularity,
        period_start=filters.period.previous().start,
        scope=scope,
    )

    found = dashboard.explain(
        kpi,
        {s.scope_id: s for s in rows},
        {s.scope_id: s for s in before_rows},
        like_for_like=filters.running,
    )
    if not found:
        return None
    up, down = contribution.top(found, minimum=kpi.min_sample)

    def shown(c: contribution.Contribution) -> dict:
        return {
            "name": names.get(c.key, c.key),
            "total": dashboard.format_change(kpi, c.total),
            "rate": None if c.rate is None else dashboard.format_change(kpi, c.rate),
            "mix": None if c.mix is None else dashboard.format_change(kpi, c.mix),
            "n": c.n,
        }

    return {"up": [shown(c) for c in up], "down": [shown(c) for c in down], "ratio": kpi.unit == Unit.PERCENT}


@login_required
@require_http_methods(["GET", "POST"])
def target_set_view(request: HttpRequest, code: str) -> HttpResponse:
    """GET: the target form for the period and scope shown (loaded when asked for, not with every KPI
    page); POST: save the target and go back to the KPI page."""
    if not request.user.is_manager:
        raise Http404
    kpi = _kpi_or_404(code)
    if request.method == "GET":
        _form, filters = _filters(request)
        period, granularity = filters.period.first_day, filters.granularity
        initial = {"granularity": granularity, "period": period, "scope": filters.scope}
        context = {
            "kpi": kpi,
            "target_form": TargetForm(initial=initial, scopes=kpi.scopes),
            "query": request.GET.urlencode(),
        }
        return render(request, partial_template(request, "metrics/target_form.html", "target-form"), context)
    form = TargetForm(request.POST, scopes=kpi.scopes)
    if form.is_valid():
        period = period_of(form.cleaned_data["period"], form.cleaned_data["granularity"])
        try:
            kpi_target_set(
                kpi=kpi.code,
                granularity=period.granularity,
                period_start=period.start,
                value=form.cleaned_data["value"],
                scope=form.cleaned_data["scope"],
                scope_id=form.scope_id,
                actor=request.user,
            )
        except (ValidationError, RecomputeError) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
        else:
            messages.success(request, _("Target saved."))
    else:
        messages.error(
            request,
            " ".join(
                f"{form.fields[f].label}: {' '.join(e)}" if f in form.fields else " ".join(e)
                for f, e in form.errors.items()
            ),
        )
    return redirect(
        f"{reverse('metrics:kpi_detail', args=[kpi.code])}?{request.POST.get('return_query', '')}"
    )


# Freshness and recompute
# ---------------------------------------------------------------------------------------------------------


@login_required
@require_POST
def recompute_view(request: HttpRequest) -> HttpResponse:
    """Enqueue a recompute of the recent periods; the page then polls the progress fragment."""
    if not request.user.is_manager:
        raise Http404
    from metrics.tasks import recompute_recent_kpi_snapshots

    requested_at = timezone.now()
    try:
        recompute_recent_kpi_snapshots.delay()
    except (BrokerError, RedisError, OSError):
        queued = False
    else:
        queued = True
    context = {"queued": queued, "requested_at": requested_at.isoformat(), "run": None, "done": False}
    return render(request, "metrics/_recompute_progress.html", context)


def _requested_at(text: str) -> datetime:
    """When the recompute was requested (the ISO time the page echoes back); five minutes ago for anything
    else, including times outside the CRM's date range (year 1 overflows two seconds earlier)."""
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        since = None
    if since is None or not dates.in_range(since):
        return timezone.now() - timedelta(minutes=5)
    return timezone.make_aware(since) if timezone.is_naive(since) else since


@login_required
@require_GET
def recompute_status_view(request: HttpRequest) -> HttpResponse:
    """Progress of the recompute requested at ``since``: queued, running, done (then refresh) or failed."""
    if not request.user.is_manager:
        raise Http404
    since_text = request.GET.get("since", "")
    since = _requested_at(since_text)
    run = selectors.snapshot_run_since(since)
    if run is not None and run.status in (SnapshotRun.Status.OK, SnapshotRun.Status.SKIPPED):
        return HttpResponseClientRefresh()
    context = {
        "queued": True,
        "requested_at": since_text,
        "run": run,
        "progress": dashboard.recompute_progress(run),
    }
    return render(request, "metrics/_recompute_progress.html", context)


# Adoption, segments and channels, before/after go-live
# ---------------------------------------------------------------------------------------------------------


def _manager_only(request: HttpRequest) -> None:
    if not request.user.is_manager:
        raise Http404


@login_required
@require_GET
@vary_on_headers("HX-Request")
def adoption_view(request: HttpRequest) -> HttpResponse:
    _manager_only(request)
    form, filters = _filters(request)
    sort = request.GET.get("sort", "name")
    rows = selectors.staff_adoption_rows(period=filters.period, sort=sort)
    query = request.GET.copy()
    query.pop("sort", None)
    context = {
        "form": form,
        "filters": filters,
        "rows": rows,
        "inactive": [r for r in rows if r["inactive"]],
        "sort": sort,
        "query": query.urlencode(),
        "inactive_days": selectors.INACTIVE_AFTER_DAYS,
        "trends": dashboard.family_charts(filters, Family.ADOPTION, request.user),
        "per_user": charts.by_user_chart(
            title=_("Active days per person"),
            names=[r["name"] for r in rows],
            bars=[r["active_days"] for r in rows],
            bar_name=_("Active days"),
            y_title=_("days"),
        ),
        "feedback": StaffFeedback.objects.select_related("user").order_by("-created_at")[:50],
        "freshness": dashboard.freshness(),
    }
    return render(request, partial_template(request, "metrics/adoption.html", "adoption-table"), context)


def _complete_query(request: HttpRequest, filters: dashboard.Filters) -> str:
    """The page's query for the last complete period: one click away while a period runs (KPIS.md §10.1)."""
    complete = request.GET.copy()
    complete["period"] = filters.period.previous().first_day.isoformat()
    complete.pop("page", None)
    return complete.urlencode()


@login_required
@require_GET
def segments_view(request: HttpRequest) -> HttpResponse:
    _manager_only(request)
    form, filters = _filters(request)
    as_of_dates = selectors.rfm_as_of_dates()
    as_of = as_of_dates[0] if as_of_dates else None
    previous = selectors.rfm_comparison_date(as_of_dates)
    segment = request.GET.get("segment")
    segment = segment if segment in CustomerRfm.Segment.values else None
    members = None
    if as_of is not None and segment:
        members = CappedPaginator(
            selectors.customer_rfm_list(user=request.user, as_of=as_of, segment=segment), DRILL_PAGE_SIZE
        ).get_page(request.GET.get("page"))
    # The scorings change nightly: their summary and moves (a join of two scorings of every customer, a
    # manager sees them all) are counted once per KPI run and scoring.
    freshness = dashboard.freshness()
    summary = dashboard.cached_per_run(
        f"rfm-summary:{as_of}:{previous}",
        freshness,
        lambda: selectors.rfm_segment_summary(user=request.user, as_of=as_of, previous=previous),
    )
    movement = (
        dashboard.cached_per_run(
            f"rfm-movement:{as_of}:{previous}",
            freshness,
            lambda: selectors.rfm_movement(user=request.user, before=previous, after=as_of),
        )
        if previous
        else {}
    )
    labels = dict(CustomerRfm.Segment.choices)
    sources = dashboard.channel_rows(filters.period)
    context = {
        "form": form,
        "filters": filters,
        "as_of": as_of,
        "previous": previous,
        "segments": summary,
        "segment": segment,
        "segment_label": labels.get(segment),
        "members": members,
        "movement": sorted(
            (
                (labels.get(a, a), labels.get(b, b) if b else _("(no longer scored)"), n)
                for (a, b), n in movement.items()
                if a != b
            ),
            key=lambda row: -row[2],
        )[:15],
        "channel_kpis": in_section(Section.CHANNELS),
        "sources": sources,
        # What the changes compare with while a week or month runs, as the snapshots stored it.
        "compared_label": next(
            (card.compared_label for row in sources for card in row["cards"] if card.compared_label), None
        ),
        "complete_query": _complete_query(request, filters),
        "query": request.GET.urlencode(),
    }
    return render(request, "metrics/segments.html", context)


@login_required
@require_GET
def go_live_view(request: HttpRequest) -> HttpResponse:
    _manager_only(request)
    comparison = selectors.go_live_comparison()
    for row in comparison["rows"]:
        for name in ("before", "after", "year_earlier"):
            row[f"{name}_display"] = dashboard.format_value(row["kpi"], row[name])
        # Coloured only when significant, by the KPI's test over the months taken together (a count's
        # exposure is its number of months).
        pooled = row["pooled"]
        card = dashboard.Card(
            kpi=row["kpi"],
            snapshot=pooled["after"],
            previous=pooled["before"],
            target=None,
            exposure=(row["n_after"], row["n_before"]),
            counts=tuple(p.extra["total"] for p in (pooled["after"], pooled["before"]))
            if pooled["after"] and pooled["before"]
            else None,
        )
        row["change"] = card.change if pooled["after"] and pooled["before"] else None
    roi, roi_kpi = comparison["roi"], comparison["roi_kpi"]
    roi_facts = dashboard.detail_facts(roi_kpi, roi.extra) if roi is not None else []
    return render(request, "metrics/go_live.html", {"comparison": comparison, "roi_facts": roi_facts})


# Exports
# ---------------------------------------------------------------------------------------------------------


@login_required
@require_GET
def kpi_export_view(request: HttpRequest, code: str) -> HttpResponse:
    """One KPI's series (``what=series``) or breakdown (``what=breakdown``) as CSV or XLSX, access-scoped."""
    kpi = _kpi_or_404(code)
    _form, filters = _filters(request)
    if filters.scope not in kpi.scopes:
        raise Http404
    fmt = "xlsx" if request.GET.get("format") == "xlsx" else "csv"
    header = [
        _("Period"),
        _("Scope"),
        _("Who"),
        str(kpi.label),
        _("Numerator"),
        _("Denominator"),
        _("Sample size"),
        _("To date: compared with"),
        _("Value then"),
    ]
    if request.GET.get("what") == "breakdown":
        rows = []
        for breakdown in _breakdowns(request.user, kpi, filters):
            for row in breakdown["rows"]:
                rows.append(
                    _export_row(kpi, filters.period, breakdown["label"], row["name"], row["snapshot"])
                )
        name = f"{kpi.code}-breakdown-{filters.period.first_day}"
    else:
        series = dashboard.load_series(filters, [kpi]).get(kpi.code, {})
        who = str(filters.rep or filters.team or _("Company"))
        scope = str(Scope(filters.scope_of(kpi)).label)
        rows = [_export_row(kpi, p, scope, who, series.get(p.first_day)) for p in filters.periods]
        name = f"{kpi.code}-{filters.granularity}-{filters.period.first_day}"
    security_log(kind="export", request=request, what=f"kpi:{kpi.code}", format=fmt, rows=len(rows))
    if fmt == "xlsx":
        return xlsx_response([header, *rows], f"{name}.xlsx", title=kpi.code)
    return csv_response([header, *rows], f"{name}.csv")


def _export_row(kpi: Kpi, period, scope: str, who: str, snapshot: KpiSnapshot | None) -> list:
    """One row of a KPI download; a week or month still running also carries what it is compared with
    (the same elapsed days of the period before, KPIS.md §10.1) and the KPI's value then."""

    def num(value):
        return None if value is None else float(value)

    compared = None
    if snapshot is not None and period.start <= timezone.now() < period.end:
        compared = kpi.details_of(snapshot.extra).compared
    span, then = None, None
    if compared and compared.get("until"):
        last = date.fromisoformat(compared["until"]) - timedelta(days=1)
        span = f"{compared['from']} – {last.isoformat()}"
        then = dashboard.export_value(kpi, dashboard.compared_values(compared, snapshot.computed_at).value)
    return [
        charts.period_label(period),
        str(scope),
        who,
        dashboard.export_value(kpi, snapshot.value) if snapshot else None,
        num(snapshot.numerator) if snapshot else None,
        num(snapshot.denominator) if snapshot else None,
        snapshot.sample_size if snapshot else None,
        span,
        then,
    ]


@login_required
@require_GET
@vary_on_headers("HX-Request")
def data_quality_view(request: HttpRequest) -> HttpResponse:
    """Duplicate rate, completeness by field and the validation failures, each linked to its record.

    The rules' counts cover every record (a scan of each table), so they are counted once per KPI run and
    say so; the list of one rule's records is live, so a fixed record leaves it at once.
    """
    _manager_only(request)
    form, filters = _filters(request)
    families, _series = dashboard.build_cards(
        dashboard.Filters(granularity=filters.granularity, period=filters.period, count=filters.count)
    )
    cards = [card for _label, group in families for card in group if card.kpi.family == Family.DATA_QUALITY]
    freshness = dashboard.freshness()
    counts = dashboard.cached_per_run("quality-rule-counts", freshness, lambda: quality.rule_counts())
    rules = [{"rule": rule, **counts[rule.code]} for rule in quality.RULES]
    rule = request.GET.get("rule")
    if rule not in quality.RULES_BY_CODE:
        # The first rule with something to fix (as counted); none at all: the list says so.
        rule = next((row["rule"].code for row in rules if row["failing"]), None)
    page = None
    if rule is not None:
        page = CappedPaginator(
            quality.quality_failure_list(user=request.user, rule=rule), DRILL_PAGE_SIZE
        ).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "cards": cards,
        "rules": rules,
        "rule": rule,
        "rule_label": quality.RULES_BY_CODE[rule].label if rule else "",
        "page": page,
        "failures": quality.failure_links(page.object_list) if page else [],
        "query": query.urlencode(),
        "counted_at": freshness["as_of"],
    }
    return render(request, partial_template(request, "metrics/data_quality.html", "failure-list"), context)
