from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.utils.translation import gettext_lazy as _


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = _("CRM")


class CrmAdminConfig(admin_apps.AdminConfig):
    """The admin app with the CRM's admin site (its login is the CRM's two-step sign-in)."""

    default = False  # CrmConfig stays the crm app's own config
    default_site = "crm.admin_site.CrmAdminSite"
