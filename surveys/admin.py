from django.contrib import admin

from surveys.models import Survey, SurveyCampaign, SurveyInvitation, SurveyResponse, SurveySuppression

# Invitations and answers are records of what happened: the admin shows them but never edits them
# (tokens are hashes, answers belong to the customer). Survey settings and opt-outs are editable.


@admin.register(Survey)
class SurveyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "nps_type",
        "trigger",
        "is_active",
        "response_window_days",
        "cadence_days",
    ]
    list_filter = ["kind", "trigger", "is_active"]


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SurveyInvitation)
class SurveyInvitationAdmin(ReadOnlyAdmin):
    list_display = [
        "survey",
        "customer",
        "status",
        "suppression_reason",
        "sent_at",
        "opened_at",
        "completed_at",
    ]
    list_filter = ["status", "suppression_reason", "survey", "trigger"]
    list_select_related = ["survey", "customer"]
    exclude = ["token_hash", "reminder_token_hash"]
    raw_id_fields = ["customer", "ticket", "campaign"]
    date_hierarchy = "created_at"


@admin.register(SurveyResponse)
class SurveyResponseAdmin(ReadOnlyAdmin):
    list_display = ["survey", "customer", "score", "owner", "score_submitted_at", "finished"]
    list_filter = ["survey", "finished"]
    list_select_related = ["survey", "customer", "owner"]
    raw_id_fields = ["invitation", "customer", "owner", "followup_task"]
    date_hierarchy = "score_submitted_at"


@admin.register(SurveyCampaign)
class SurveyCampaignAdmin(ReadOnlyAdmin):
    list_display = ["survey", "created_at", "created_by", "matched", "status"]
    list_select_related = ["survey", "created_by"]


@admin.register(SurveySuppression)
class SurveySuppressionAdmin(admin.ModelAdmin):
    list_display = ["customer", "reason", "created_at"]
    list_filter = ["reason"]
    list_select_related = ["customer"]
    raw_id_fields = ["customer", "invitation"]
    show_full_result_count = False
