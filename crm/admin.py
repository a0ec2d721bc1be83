from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from crm.forecasting.services import stage_probability_record
from crm.models import (
    Activity,
    CompanySettings,
    CrmCostItem,
    Customer,
    CustomerMerge,
    CustomerStatusChange,
    Deal,
    DealStageChange,
    DuplicateCandidate,
    ImportJob,
    Pipeline,
    PipelineStage,
    SlaPolicy,
    SpendEntry,
    StageProbabilityVersion,
    Ticket,
    TicketMessage,
    TicketStatusChange,
)

# The admin is for administrators fixing data; large tables use raw-id widgets and no full counts.


@admin.register(CompanySettings)
class CompanySettingsAdmin(admin.ModelAdmin):
    """The one settings row (created by a migration): it can be changed, never added twice or deleted."""

    list_display = [
        "company_name",
        "go_live_date",
        "gross_margin_percent",
        "require_2fa_for_managers",
    ]

    def has_add_permission(self, request) -> bool:
        return not CompanySettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Customer)
class CustomerAdmin(SimpleHistoryAdmin):
    list_display = [
        "name",
        "kind",
        "status",
        "owner",
        "source",
        "segment",
        "became_customer_at",
        "churned_at",
    ]
    list_filter = ["status", "kind", "source", "segment", "is_internal"]
    list_select_related = ["owner"]
    search_fields = ["name", "email", "phone"]
    raw_id_fields = ["owner", "merged_into"]
    show_full_result_count = False


@admin.register(CustomerStatusChange)
class CustomerStatusChangeAdmin(admin.ModelAdmin):
    list_display = ["customer", "from_status", "to_status", "at", "by"]
    list_filter = ["to_status"]
    raw_id_fields = ["customer", "by"]
    show_full_result_count = False


class PipelineStageInline(admin.TabularInline):
    model = PipelineStage
    extra = 0
    # A pipeline has a handful of stages. The bound also caps the forms Django builds for a posted
    # TOTAL_FORMS (by default up to 2 000, five seconds of CPU).
    max_num = 30

    def get_formset(self, request, obj=None, **kwargs):
        return super().get_formset(request, obj, absolute_max=self.max_num, **kwargs)


def _record_probability(request, stage: PipelineStage) -> None:
    """A stage saved in the pipeline settings: its probability, if it changed (or the stage is new), is a
    new version, so forecasts frozen before keep the probability they used (crm.forecasting)."""
    reason = StageProbabilityVersion.Reason.ADMIN
    stage_probability_record(stage=stage, actor=request.user, reason=reason, note="admin")


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    list_display = ["name", "is_default"]
    inlines = [PipelineStageInline]

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        if formset.model is PipelineStage:
            for stage in formset.new_objects + [obj for obj, _fields in formset.changed_objects]:
                _record_probability(request, stage)


@admin.register(PipelineStage)
class PipelineStageAdmin(admin.ModelAdmin):
    list_display = ["name", "pipeline", "order", "probability", "forecast_category", "kind", "rotting_days"]
    list_filter = ["pipeline", "kind", "forecast_category"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _record_probability(request, obj)


@admin.register(StageProbabilityVersion)
class StageProbabilityVersionAdmin(admin.ModelAdmin):
    """The versions are history: read here, written only when a stage's probability changes."""

    list_display = ["stage", "probability", "valid_from", "set_by", "reason", "note"]
    list_filter = ["reason", "stage"]
    list_select_related = ["stage", "set_by"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Deal)
class DealAdmin(SimpleHistoryAdmin):
    list_display = ["title", "customer", "owner", "amount", "stage", "status", "created_at", "closed_at"]
    list_filter = ["status", "kind", "source", "stage"]
    list_select_related = ["customer", "owner", "stage"]
    search_fields = ["title", "customer__name"]
    raw_id_fields = ["customer", "owner", "renewal_of"]
    show_full_result_count = False


@admin.register(DealStageChange)
class DealStageChangeAdmin(admin.ModelAdmin):
    list_display = ["deal", "from_stage", "to_stage", "at", "by"]
    raw_id_fields = ["deal", "by"]
    show_full_result_count = False


@admin.register(SlaPolicy)
class SlaPolicyAdmin(admin.ModelAdmin):
    list_display = ["priority", "first_response_hours", "resolution_hours"]


@admin.register(Ticket)
class TicketAdmin(SimpleHistoryAdmin):
    list_display = [
        "subject",
        "customer",
        "assignee",
        "priority",
        "status",
        "category",
        "created_at",
        "solved_at",
    ]
    list_filter = ["status", "priority", "category", "channel", "is_spam"]
    list_select_related = ["customer", "assignee"]
    search_fields = ["subject", "customer__name"]
    raw_id_fields = ["customer", "assignee", "created_by"]
    show_full_result_count = False


@admin.register(TicketStatusChange)
class TicketStatusChangeAdmin(admin.ModelAdmin):
    list_display = ["ticket", "from_status", "to_status", "at", "by"]
    raw_id_fields = ["ticket", "by"]
    show_full_result_count = False


@admin.register(TicketMessage)
class TicketMessageAdmin(admin.ModelAdmin):
    list_display = ["ticket", "author", "is_public", "created_at"]
    raw_id_fields = ["ticket", "author"]
    show_full_result_count = False


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):
    list_display = ["subject", "kind", "user", "customer", "created_at", "due_at", "done_at"]
    list_filter = ["kind"]
    list_select_related = ["user", "customer"]
    raw_id_fields = ["user", "customer", "deal", "ticket"]
    show_full_result_count = False


@admin.register(SpendEntry)
class SpendEntryAdmin(admin.ModelAdmin):
    list_display = ["month", "category", "channel", "amount"]
    list_filter = ["category", "channel"]


@admin.register(CrmCostItem)
class CrmCostItemAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "amount", "start_month", "end_month"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """Read-only: imports are made and run through the import pages (their JSON is not for hand edits)."""

    list_display = ["file_name", "kind", "created_by", "status", "row_count", "created_count", "failed_count"]
    list_filter = ["kind", "status"]
    raw_id_fields = ["created_by"]
    exclude = ["content"]
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("content")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DuplicateCandidate)
class DuplicateCandidateAdmin(admin.ModelAdmin):
    list_display = ["customer_a", "customer_b", "score", "reason", "status", "found_at"]
    list_filter = ["status"]
    list_select_related = ["customer_a", "customer_b"]
    raw_id_fields = ["customer_a", "customer_b", "decided_by"]
    show_full_result_count = False


@admin.register(CustomerMerge)
class CustomerMergeAdmin(admin.ModelAdmin):
    """Read-only: the record of a merge made by the merge service (what moved, what was chosen)."""

    list_display = ["merged", "survivor", "by", "at"]
    list_select_related = ["merged", "survivor", "by"]
    raw_id_fields = ["survivor", "merged", "candidate", "by"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
