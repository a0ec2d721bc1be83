from django.urls import path

from metrics import views

app_name = "metrics"

urlpatterns = [
    path("", views.dashboard_view, name="dashboard"),
    path("kpi/<slug:code>/", views.kpi_detail_view, name="kpi_detail"),
    path("kpi/<slug:code>/target/", views.target_set_view, name="target_set"),
    path("kpi/<slug:code>/export/", views.kpi_export_view, name="kpi_export"),
    path("adoption/", views.adoption_view, name="adoption"),
    path("segments/", views.segments_view, name="segments"),
    path("go-live/", views.go_live_view, name="go_live"),
    path("data-quality/", views.data_quality_view, name="data_quality"),
    path("recompute/", views.recompute_view, name="recompute"),
    path("recompute/status/", views.recompute_status_view, name="recompute_status"),
]
