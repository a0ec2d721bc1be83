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
    path("api-tokens/", views.api_token_list_view, name="api_tokens"),
    path("api-tokens/service-accounts/", views.service_account_create_view, name="service_account_create"),
    path("api-tokens/<int:pk>/revoke/", views.api_token_revoke_view, name="api_token_revoke"),
]
