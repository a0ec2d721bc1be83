from django.urls import path

from surveys import views

app_name = "surveys"

urlpatterns = [
    path("", views.survey_home_view, name="home"),
    path("<int:pk>/edit/", views.survey_update_view, name="survey_update"),
    path("invitations/", views.invitation_list_view, name="invitations"),
    path("invitations/<int:pk>/revoke/", views.invitation_revoke_view, name="invitation_revoke"),
    path("responses/", views.response_list_view, name="responses"),
    path("campaigns/", views.campaign_view, name="campaigns"),
    path("campaigns/preview/", views.campaign_preview_view, name="campaign_preview"),
]
