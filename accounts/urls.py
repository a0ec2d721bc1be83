from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("feedback/", views.feedback_view, name="feedback"),
    path("security/", views.security_event_list_view, name="security_events"),
]
