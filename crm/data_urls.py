"""URLs of the data-quality pages (crm/data_views.py), part of the ``crm`` namespace (see crm/urls.py)."""

from django.urls import path

from crm import data_views as views

urlpatterns = [
    path("imports/", views.import_list_view, name="import_list"),
    path("imports/new/", views.import_upload_view, name="import_upload"),
    path("imports/template/", views.import_template_view, name="import_template"),
    path("imports/<int:pk>/", views.import_detail_view, name="import_detail"),
    path("imports/<int:pk>/map/", views.import_map_view, name="import_map"),
    path("imports/<int:pk>/preview/", views.import_preview_view, name="import_preview"),
    path("imports/<int:pk>/report/", views.import_report_view, name="import_report"),
    path("customers/export/", views.customer_export_view, name="customer_export"),
    path("customers/<int:pk>/merges/", views.customer_merges_view, name="customer_merges"),
    path("deals/export/", views.deal_export_view, name="deal_export"),
    path("tickets/export/", views.ticket_export_view, name="ticket_export"),
    path("activities/export/", views.activity_export_view, name="activity_export"),
    path("duplicates/", views.duplicate_list_view, name="duplicate_list"),
    path("duplicates/scan/", views.duplicate_scan_view, name="duplicate_scan"),
    path("duplicates/<int:pk>/", views.duplicate_detail_view, name="duplicate_detail"),
    path("duplicates/<int:pk>/dismiss/", views.duplicate_dismiss_view, name="duplicate_dismiss"),
]
