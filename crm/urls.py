from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.i18n import set_language

from crm import automation_views, custom_field_views, data_urls, privacy_views, views, webhook_views
from crm.api.site import api
from crm.api.site import docs_view as api_docs_view
from crm.api.site import not_found_view as api_not_found_view
from crm.campaigns import views as campaign_views

crm_patterns = [
    path("", views.workspace_view, name="workspace"),
    path("customers/", views.customer_list_view, name="customer_list"),
    path("customers/new/", views.customer_create_view, name="customer_create"),
    path("customers/duplicates/", views.customer_duplicates_view, name="customer_duplicates"),
    path("customers/options/", views.customer_options_view, name="customer_options"),
    path("customers/<int:pk>/", views.customer_detail_view, name="customer_detail"),
    path("customers/<int:pk>/edit/", views.customer_update_view, name="customer_update"),
    path("customers/<int:pk>/status/", views.customer_status_view, name="customer_status"),
    path("deals/", views.deal_list_view, name="deal_list"),
    path("deals/board/", views.deal_board_view, name="deal_board"),
    path("deals/new/", views.deal_create_view, name="deal_create"),
    path("deals/<int:pk>/", views.deal_detail_view, name="deal_detail"),
    path("deals/<int:pk>/edit/", views.deal_update_view, name="deal_update"),
    path("deals/<int:pk>/move/", views.deal_move_view, name="deal_move"),
    path("tickets/", views.ticket_list_view, name="ticket_list"),
    path("tickets/new/", views.ticket_create_view, name="ticket_create"),
    path("tickets/<int:pk>/", views.ticket_detail_view, name="ticket_detail"),
    path("tickets/<int:pk>/reply/", views.ticket_reply_view, name="ticket_reply"),
    path("tickets/<int:pk>/status/", views.ticket_status_view, name="ticket_status"),
    path("tickets/<int:pk>/assign/", views.ticket_assign_view, name="ticket_assign"),
    path("tickets/<int:pk>/fields/", views.ticket_fields_view, name="ticket_fields"),
    path("activities/new/", views.activity_create_view, name="activity_create"),
    path("tasks/<int:pk>/complete/", views.task_complete_view, name="task_complete"),
]
crm_patterns += data_urls.urlpatterns  # imports, exports, duplicates, merges
crm_patterns += [  # personal data of one customer (managers only)
    path(
        "customers/<int:pk>/personal-data/",
        privacy_views.customer_personal_data_view,
        name="customer_personal_data",
    ),
    path("customers/<int:pk>/erase/", privacy_views.customer_erase_view, name="customer_erase"),
    path("webhooks/", webhook_views.webhook_list_view, name="webhook_list"),
    path("webhooks/<int:pk>/", webhook_views.webhook_detail_view, name="webhook_detail"),
    path("webhooks/<int:pk>/secret/", webhook_views.webhook_rotate_view, name="webhook_rotate"),
    path(
        "webhooks/<int:pk>/deliveries/<int:delivery_pk>/again/",
        webhook_views.webhook_redeliver_view,
        name="webhook_redeliver",
    ),
]
crm_patterns += [  # custom field definitions (managers only)
    path("fields/", custom_field_views.custom_field_list_view, name="custom_field_list"),
    path("fields/new/", custom_field_views.custom_field_create_view, name="custom_field_create"),
    path("fields/<int:pk>/", custom_field_views.custom_field_update_view, name="custom_field_update"),
    path(
        "fields/<int:pk>/archive/", custom_field_views.custom_field_archive_view, name="custom_field_archive"
    ),
    path(
        "fields/<int:pk>/restore/", custom_field_views.custom_field_restore_view, name="custom_field_restore"
    ),
]
crm_patterns += [  # campaigns (managers only) and a campaign touch recorded on a customer's page
    path("campaigns/", campaign_views.campaign_list_view, name="campaign_list"),
    path("campaigns/new/", campaign_views.campaign_create_view, name="campaign_create"),
    path("campaigns/<int:pk>/", campaign_views.campaign_detail_view, name="campaign_detail"),
    path("campaigns/<int:pk>/edit/", campaign_views.campaign_update_view, name="campaign_update"),
    path("campaigns/<int:pk>/archive/", campaign_views.campaign_archive_view, name="campaign_archive"),
    path("campaigns/<int:pk>/restore/", campaign_views.campaign_restore_view, name="campaign_restore"),
    path("customers/<int:pk>/campaign-touch/", campaign_views.customer_touch_view, name="customer_touch"),
]
crm_patterns += [  # automation rules (managers only)
    path("automation/", automation_views.automation_list_view, name="automation_list"),
    path("automation/new/", automation_views.automation_create_view, name="automation_create"),
    path("automation/<int:pk>/", automation_views.automation_detail_view, name="automation_detail"),
    path("automation/<int:pk>/edit/", automation_views.automation_update_view, name="automation_update"),
    path("automation/<int:pk>/switch/", automation_views.automation_switch_view, name="automation_switch"),
    path("automation/<int:pk>/dry-run/", automation_views.automation_dry_run_view, name="automation_dry_run"),
]

urlpatterns = [
    path("", views.home_view, name="home"),
    path("healthz/", views.health_view, name="health"),
    path("favicon.ico", views.favicon_view),
    path("accounts/", include("accounts.urls")),
    path("crm/", include((crm_patterns, "crm"))),
    path("metrics/", include("metrics.urls")),
    path("surveys/", include("surveys.urls")),
    path("s/", include("surveys.public_urls")),
    path("api/v1/docs", api_docs_view, name="api_docs"),
    path("api/v1/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found_view),
    path("i18n/setlang/", set_language, name="set_language"),
    path(f"{settings.ADMIN_URL}", admin.site.urls),
]
