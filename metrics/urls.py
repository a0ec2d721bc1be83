from django.urls import path

from metrics import views
from metrics.alerts import views as alert_views
from metrics.campaigns import views as campaign_views
from metrics.cohorts import views as cohort_views
from metrics.forecasts import views as forecast_views
from metrics.health import views as health_views
from metrics.velocity import views as velocity_views

app_name = "metrics"

urlpatterns = [
    path("", views.dashboard_view, name="dashboard"),
    path("kpi/<slug:code>/", views.kpi_detail_view, name="kpi_detail"),
    path("kpi/<slug:code>/target/", views.target_set_view, name="target_set"),
    path("kpi/<slug:code>/export/", views.kpi_export_view, name="kpi_export"),
    path("time-in-stage/stays/", velocity_views.stays_export_view, name="stays_export"),
    path("adoption/", views.adoption_view, name="adoption"),
    path("segments/", views.segments_view, name="segments"),
    path("go-live/", views.go_live_view, name="go_live"),
    path("data-quality/", views.data_quality_view, name="data_quality"),
    path("recompute/", views.recompute_view, name="recompute"),
    path("recompute/status/", views.recompute_status_view, name="recompute_status"),
    path("alerts/", alert_views.alert_list_view, name="alert_list"),
    path("alerts/<int:pk>/dismiss/", alert_views.alert_dismiss_view, name="alert_dismiss"),
    path("campaigns/", campaign_views.campaigns_view, name="campaigns"),
    path("cohorts/", cohort_views.cohorts_view, name="cohorts"),
    path("forecasts/", forecast_views.forecast_calibration_view, name="forecast_calibration"),
    path("forecasts/apply/", forecast_views.stage_probability_apply_view, name="stage_probability_apply"),
    path("health/", health_views.health_list_view, name="health"),
    path("health/settings/", health_views.health_settings_view, name="health_settings"),
    path("customers/<int:pk>/health/", health_views.customer_health_view, name="customer_health"),
]
