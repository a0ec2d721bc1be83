"""The Django admin behind the CRM's own sign-in, so that the admin never offers a login without 2FA."""

from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _


class CrmAdminSite(admin.AdminSite):
    """Django's admin site whose login page is the CRM's two-step sign-in (password, then the code)."""

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        next_url = request.GET.get(REDIRECT_FIELD_NAME, "")
        if not url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            next_url = reverse("admin:index", current_app=self.name)
        if self.has_permission(request):
            return redirect(next_url)
        if request.user.is_authenticated:
            messages.error(request, _("Your account cannot use the administration."))
            return redirect("home")
        return redirect_to_login(next_url, login_url=reverse("accounts:login"))
