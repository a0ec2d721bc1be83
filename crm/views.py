from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from crm import selectors
from crm.models import Deal, Ticket


@require_GET
def home_view(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return redirect("crm:workspace")


@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the process answers and PostgreSQL is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@login_required
@require_GET
def workspace_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    now = timezone.now()
    open_deals = (
        selectors.deal_list(user=user)
        .filter(status=Deal.Status.OPEN)
        .values("stage__name", "stage__order")
        .annotate(count=Count("id"), total=Sum("amount"))
        .order_by("stage__order")
    )
    tickets = selectors.ticket_list(user=user).filter(status__in=Ticket.UNSOLVED)
    ticket_counts = tickets.aggregate(
        mine=Count("id", filter=Q(assignee=user)),
        unassigned=Count("id", filter=Q(assignee__isnull=True)),
        breached=Count("id", filter=Q(resolution_due_at__lt=now)),
        total=Count("id"),
    )
    tasks = selectors.task_list(user=user)
    context = {
        "open_deals": list(open_deals),
        "ticket_counts": ticket_counts,
        "tasks": tasks[:10],
        "overdue_tasks": tasks.filter(due_at__lt=now).count(),
        "customer_count": selectors.customer_list(user=user).count(),
        "now": now,
    }
    return render(request, "crm/workspace.html", context)
