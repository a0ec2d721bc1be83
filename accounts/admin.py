from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _

from accounts.models import LoginEvent, Seat, SecurityEvent, Team, UsageEvent, User


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]


class SeatInline(admin.TabularInline):
    model = Seat
    extra = 0
    # Also caps the forms Django builds for a posted TOTAL_FORMS (by default up to 2 000).
    max_num = 100

    def get_formset(self, request, obj=None, **kwargs):
        return super().get_formset(request, obj, absolute_max=self.max_num, **kwargs)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "first_name", "last_name", "role", "team", "is_active", "last_login"]
    list_filter = ["role", "team", "is_active", "is_service_account"]
    list_select_related = ["team"]
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        (_("CRM"), {"fields": ("role", "team", "language", "is_service_account", "deactivated_at")}),
    )
    inlines = [SeatInline]


@admin.register(LoginEvent)
class LoginEventAdmin(admin.ModelAdmin):
    list_display = ["user", "at"]
    list_select_related = ["user"]
    date_hierarchy = "at"
    raw_id_fields = ["user"]


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = ["user", "verb", "object_type", "object_id", "via", "at"]
    list_filter = ["verb", "via", "object_type"]
    list_select_related = ["user"]
    date_hierarchy = "at"
    raw_id_fields = ["user"]


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):
    """Read-only: the security log is written by the application only."""

    list_display = ["at", "kind", "user", "username", "ip", "path"]
    list_filter = ["kind"]
    list_select_related = ["user"]
    search_fields = ["username", "user__username", "path"]
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
