"""The KPI dashboard, KPI detail with drill-down, targets and the recompute button.

Dashboard pages read snapshot rows only (see ``metrics.dashboard``); the drill-down lists live records,
always through the CRM's access selectors. A rep sees the same pages for their own numbers only.
"""

from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from accounts import dates
from accounts.security import security_log
from accounts.web import partial_template, require_staff_role
from crm import selectors as crm_selectors
from crm.data.exports import csv_response, xlsx_response
from metrics import dashboard, pages, selectors
from metrics.alerts import pages as alert_pages
from metrics.forms import DashboardFilterForm, TargetForm
from metrics.kpis import registry
from metrics.kpis.base import Kpi
from metrics.models import SnapshotRun
from metrics.services import RecomputeError, kpi_target_set
from metrics.velocity import pages as velocity_pages


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
        campaign=data.get("campaign"),
    )
    return form, filters


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
        # The user's active alerts (KPIS.md §10.8): live, so a dismissal shows at once (one query).
        "alerts": alert_pages.alert_panel(user=request.user),
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
    part, page = request.GET.get("part"), request.GET.get("page")
    freshness = dashboard.freshness()

    def breakdowns() -> str:
        found = pages.kpi_breakdowns(user=request.user, kpi=kpi, filters=filters)
        context = {"kpi": kpi, "breakdowns": found}
        return render_to_string("metrics/_kpi_breakdowns.html", context, request=request).strip()

    context = {
        **pages.kpi_detail_context(user=request.user, kpi=kpi, filters=filters),
        **pages.kpi_drilldown_context(user=request.user, kpi=kpi, filters=filters, part=part, page=page),
        "form": form,
        "breakdowns": dashboard.cached_fragment(request, f"breakdown:{kpi.code}", freshness, breakdowns),
        "query": _query_without(request, "page"),
        "freshness": freshness,
    }
    # Velocity's four factors; time in stage per stage, with one stage's stays as its records.
    context |= velocity_pages.kpi_panel(
        user=request.user, kpi=kpi, filters=filters, card=context["card"], query=context["query"],
        stage=request.GET.get("stage"), page=page,
    )  # fmt: skip
    return render(request, partial_template(request, "metrics/kpi_detail.html", "drilldown"), context)


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
        period = filters.period.first_day
        initial = {"granularity": filters.granularity, "period": period, "scope": filters.scope}
        form = TargetForm(initial=initial, scopes=kpi.scopes)
        context = {"kpi": kpi, "target_form": form, "query": request.GET.urlencode()}
        return render(request, partial_template(request, "metrics/target_form.html", "target-form"), context)
    form = TargetForm(request.POST, scopes=kpi.scopes)
    if not form.is_valid():
        messages.error(request, form.errors_text())
    else:
        try:
            kpi_target_set(kpi=kpi.code, **form.target(), actor=request.user)
        except (ValidationError, RecomputeError) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
        else:
            messages.success(request, _("Target saved."))
    detail = reverse("metrics:kpi_detail", args=[kpi.code])
    return redirect(f"{detail}?{request.POST.get('return_query', '')}")


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
    run = selectors.snapshot_run_since(since=since)
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


@login_required
@require_GET
@vary_on_headers("HX-Request")
def adoption_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form, filters = _filters(request)
    context = {
        **pages.adoption_context(user=request.user, filters=filters, sort=request.GET.get("sort", "name")),
        "form": form,
        "query": _query_without(request, "sort"),
    }
    return render(request, partial_template(request, "metrics/adoption.html", "adoption-table"), context)


def _complete_query(request: HttpRequest, filters: dashboard.Filters) -> str:
    """The page's query for the last complete period: one click away while a period runs (KPIS.md §10.1)."""
    complete = request.GET.copy()
    complete["period"] = filters.period.previous().first_day.isoformat()
    complete.pop("page", None)
    return complete.urlencode()


def _query_without(request: HttpRequest, name: str) -> str:
    """The page's query without ``name`` (the page number or the sort, which its links set anew)."""
    query = request.GET.copy()
    query.pop(name, None)
    return query.urlencode()


@login_required
@require_GET
def segments_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form, filters = _filters(request)
    segment, page = request.GET.get("segment"), request.GET.get("page")
    context = {
        **pages.segments_context(user=request.user, segment=segment, page=page),
        **pages.channels_context(period=filters.period),
        "form": form,
        "filters": filters,
        "complete_query": _complete_query(request, filters),
        "query": request.GET.urlencode(),
    }
    return render(request, "metrics/segments.html", context)


@login_required
@require_GET
def go_live_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
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
    breakdown = request.GET.get("what") == "breakdown"
    name, rows = pages.kpi_export_rows(user=request.user, kpi=kpi, filters=filters, breakdown=breakdown)
    security_log(kind="export", request=request, what=f"kpi:{kpi.code}", format=fmt, rows=len(rows))
    table = [pages.kpi_export_header(kpi), *rows]
    if fmt == "xlsx":
        return xlsx_response(table, f"{name}.xlsx", title=kpi.code)
    return csv_response(table, f"{name}.csv")


@login_required
@require_GET
@vary_on_headers("HX-Request")
def data_quality_view(request: HttpRequest) -> HttpResponse:
    """Duplicate rate, completeness by field and the validation failures, each linked to its record."""
    require_staff_role(request.user)
    form, filters = _filters(request)
    rule, page = request.GET.get("rule"), request.GET.get("page")
    context = {
        **pages.data_quality_context(user=request.user, filters=filters, rule=rule, page=page),
        "form": form,
        "query": _query_without(request, "page"),
    }
    return render(request, partial_template(request, "metrics/data_quality.html", "failure-list"), context)
