from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("2fa/", views.totp_setup_view, name="totp_setup"),
    path("2fa/verify/", views.totp_verify_view, name="totp_verify"),
    path("feedback/", views.feedback_view, name="feedback"),
    path("security/", views.security_event_list_view, name="security_events"),
    path("people/<slug:kind>/", views.staff_options_view, name="staff_options"),
]
