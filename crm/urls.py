from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.i18n import set_language

from crm import views

crm_patterns = [
    path("", views.workspace_view, name="workspace"),
]

urlpatterns = [
    path("", views.home_view, name="home"),
    path("healthz/", views.health_view, name="health"),
    path("accounts/", include("accounts.urls")),
    path("crm/", include((crm_patterns, "crm"))),
    path("i18n/setlang/", set_language, name="set_language"),
    path(f"{settings.ADMIN_URL}", admin.site.urls),
]
