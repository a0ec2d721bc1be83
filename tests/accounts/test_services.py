from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from accounts.models import LoginEvent, Seat, User
from accounts.services import team_create, user_create, user_deactivate
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_user_create_opens_seat_from_join_time():
    at = timezone.now() - timedelta(days=7)
    user = user_create(username="mei", password="s3cret-pass", at=at)
    assert list(user.seats.values_list("started_at", "ended_at")) == [(at, None)]
    assert user.date_joined == at
    assert user.check_password("s3cret-pass")


def test_user_create_without_seat_opens_none():
    user = user_create(username="integration", with_seat=False)
    assert not user.seats.exists()
    assert not user.has_usable_password()


def test_user_create_admin_gets_staff_and_superuser():
    admin = user_create(username="root", role=User.Role.ADMIN)
    rep = user_create(username="rep", role=User.Role.REP)
    assert (admin.is_staff, admin.is_superuser) == (True, True)
    assert (rep.is_staff, rep.is_superuser) == (False, False)


def test_user_create_rejects_duplicate_username():
    user_create(username="mei")
    with pytest.raises(ValidationError) as excinfo:
        user_create(username="mei")
    assert "username" in excinfo.value.error_dict
    assert User.objects.filter(username="mei").count() == 1


def test_user_create_rejects_email_without_at_sign():
    with pytest.raises(ValidationError) as excinfo:
        user_create(username="mei", email="mei.example.com")
    assert "email" in excinfo.value.error_dict
    assert not Seat.objects.filter(user__username="mei").exists()


def test_user_deactivate_ends_open_seat():
    user = make_user(at=timezone.now() - timedelta(days=30))
    at = timezone.now() - timedelta(days=1)
    user_deactivate(user=user, at=at)
    user.refresh_from_db()
    assert (user.is_active, user.deactivated_at) == (False, at)
    assert list(user.seats.values_list("ended_at", flat=True)) == [at]


def test_user_deactivate_before_seat_start_is_a_validation_error():
    joined = timezone.now() - timedelta(days=1)
    user = make_user(at=joined)
    with pytest.raises(ValidationError):
        user_deactivate(user=user, at=joined - timedelta(days=1))
    user.refresh_from_db()
    assert (user.is_active, user.deactivated_at) == (True, None)
    assert user.seats.get().ended_at is None


def test_team_create_rejects_duplicate_name():
    team_create(name="Berlin")
    with pytest.raises(ValidationError):
        team_create(name="Berlin")


def test_login_with_test_client_records_login_event(client):
    user = make_user()
    # django-axes needs the request to authenticate (its documented way to use client.login in tests).
    assert client.login(request=HttpRequest(), username=user.username, password="correct horse battery")
    [event] = LoginEvent.objects.filter(user=user)
    assert timezone.now() - event.at < timedelta(minutes=1)


def test_login_through_login_page_records_one_event_per_sign_in(client):
    user = make_user()
    for _ in range(2):
        client.post(
            reverse("accounts:login"), {"username": user.username, "password": "correct horse battery"}
        )
        client.post(reverse("accounts:logout"))
    assert LoginEvent.objects.filter(user=user).count() == 2


def test_failed_login_records_no_login_event(client):
    user = make_user()
    client.post(reverse("accounts:login"), {"username": user.username, "password": "wrong"})
    assert not LoginEvent.objects.filter(user=user).exists()
