from django.contrib import admin

from metrics.models import Alert, AlertNotice, CustomerRfm, KpiSnapshot, KpiTarget, SnapshotRun


@admin.register(KpiSnapshot)
class KpiSnapshotAdmin(admin.ModelAdmin):
    """Read-only: snapshots are written by the recompute service only."""

    list_display = (
        "kpi",
        "granularity",
        "period_start",
        "scope",
        "scope_id",
        "value",
        "numerator",
        "denominator",
    )
    list_filter = ("granularity", "scope", "kpi")
    search_fields = ("kpi", "scope_id")
    date_hierarchy = "period_start"
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(KpiTarget)
class KpiTargetAdmin(admin.ModelAdmin):
    list_display = ("kpi", "granularity", "period_start", "scope", "scope_id", "value", "updated_at")
    list_filter = ("granularity", "scope", "kpi")
    raw_id_fields = ("updated_by",)


@admin.register(SnapshotRun)
class SnapshotRunAdmin(admin.ModelAdmin):
    list_display = ("kind", "status", "started_at", "duration_seconds", "rows", "granularities")
    list_filter = ("kind", "status")
    readonly_fields = [f.name for f in SnapshotRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(CustomerRfm)
class CustomerRfmAdmin(admin.ModelAdmin):
    list_display = ("customer", "as_of", "r", "f", "m", "segment", "recency_days", "frequency", "monetary")
    list_filter = ("as_of", "segment")
    raw_id_fields = ("customer",)
    show_full_result_count = False


class AlertNoticeInline(admin.TabularInline):
    """Who was told of the alert, how and when (read-only)."""

    model = AlertNotice
    extra = 0
    fields = ("user", "channel", "kind", "value", "told_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Read-only: alerts are raised, updated and resolved by the evaluation after each snapshot run."""

    list_display = ("kpi", "kind", "granularity", "period_start", "scope", "scope_id", "value", "raised_at",
                    "resolved_at", "dismissed_at")  # fmt: skip
    list_filter = ("kind", "granularity", "scope", "kpi")
    search_fields = ("kpi", "scope_id")
    date_hierarchy = "period_start"
    readonly_fields = [f.name for f in Alert._meta.fields]
    inlines = [AlertNoticeInline]

    def has_add_permission(self, request) -> bool:
        return False
