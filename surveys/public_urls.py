"""Public survey links (no account): ``/s/<token>/`` and the unsubscribe link from the e-mail."""

from django.urls import path

from surveys import public_views

app_name = "surveys_public"

urlpatterns = [
    path("unsubscribe/<str:token>/", public_views.unsubscribe_view, name="unsubscribe"),
    path("<str:token>/", public_views.answer_view, name="answer"),
]
