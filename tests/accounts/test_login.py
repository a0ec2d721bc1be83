import re

import pytest
from django.urls import reverse

from accounts.models import User
from tests.factories import make_admin, make_manager, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def html_lang(content: bytes) -> str:
    match = re.search(rb'<html lang="([^"]+)"', content)
    assert match, "no <html lang=...>"
    return match.group(1).decode()


def test_login_page_renders_in_english(client):
    response = client.get(reverse("accounts:login"))
    assert response.status_code == 200
    assert html_lang(response.content) == "en"
    assert "<h1>Sign in</h1>" in response.text


def test_login_page_renders_in_simplified_chinese_from_language_cookie(client):
    client.cookies["django_language"] = "zh-hans"
    response = client.get(reverse("accounts:login"))
    assert response.status_code == 200
    assert html_lang(response.content) == "zh-hans"
    assert "<h1>登录</h1>" in response.text
    assert "Sign in" not in response.text


def test_login_page_renders_in_simplified_chinese_from_accept_language(client):
    response = client.get(reverse("accounts:login"), headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert html_lang(response.content) == "zh-hans"
    assert "<h1>登录</h1>" in response.text


def test_login_wrong_password_rerenders_form_with_error(client):
    user = make_user()
    response = client.post(reverse("accounts:login"), {"username": user.username, "password": "nope"})
    assert response.status_code == 200
    assert 'role="alert"' in response.text
    assert "Please enter a correct username and password" in response.text
    assert "_auth_user_id" not in client.session


def test_login_correct_password_redirects_to_workspace(client):
    user = make_user()
    response = client.post(
        reverse("accounts:login"), {"username": user.username, "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1] == (reverse("crm:workspace"), 302)
    assert response.status_code == 200
    assert response.context["user"] == user


def test_login_honours_next(client):
    user = make_user()
    response = client.post(
        reverse("accounts:login"),
        {"username": user.username, "password": PASSWORD, "next": reverse("crm:workspace")},
    )
    assert response.status_code == 302
    assert response.url == reverse("crm:workspace")


def test_logout_rejects_get(client):
    client.force_login(make_user())
    response = client.get(reverse("accounts:logout"))
    assert response.status_code == 405
    assert client.get(reverse("crm:workspace")).status_code == 200


def test_logout_post_signs_out(client):
    client.force_login(make_user())
    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert response.url == reverse("accounts:login")
    assert client.get(reverse("crm:workspace")).status_code == 302


def test_workspace_requires_login(client):
    response = client.get(reverse("crm:workspace"))
    assert response.status_code == 302
    assert response.url == f"{reverse('accounts:login')}?next={reverse('crm:workspace')}"


def test_workspace_uses_signed_in_users_language(client):
    client.force_login(make_user(language=User.Language.ZH_HANS))
    response = client.get(reverse("crm:workspace"))
    assert html_lang(response.content) == "zh-hans"


@pytest.mark.parametrize(
    ("make", "shows_admin"),
    [(make_admin, True), (make_manager, False), (make_user, False)],
    ids=["admin", "manager", "rep"],
)
def test_navigation_shows_administration_only_for_admins(client, make, shows_admin):
    client.force_login(make())
    response = client.get(reverse("crm:workspace"))
    assert response.status_code == 200
    assert ("Administration" in response.text) is shows_admin
    assert (f'href="{reverse("admin:index")}"' in response.text) is shows_admin
