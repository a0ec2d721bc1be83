"""The public survey page ``/s/<token>/``: the KPIS.md §9.2 link rules, both steps, bad input, headers."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from surveys import emails
from surveys.models import SurveyInvitation, SurveyResponse, SurveySuppression
from tests.factories import make_customer, make_invitation, make_survey, make_user

pytestmark = pytest.mark.django_db

Status = SurveyInvitation.Status


def url(invitation) -> str:
    return reverse("surveys_public:answer", args=[invitation.token])


def assert_private(response) -> None:
    assert "no-store" in response["Cache-Control"]
    assert response["X-Robots-Tag"].startswith("noindex")
    assert response["Referrer-Policy"] == "no-referrer"


def writes(fn):
    """Run ``fn`` and return the SQL statements that wrote to the database."""
    with CaptureQueriesContext(connection) as queries:
        result = fn()
    statements = [q["sql"].lstrip().split()[0].upper() for q in queries.captured_queries]
    return result, [s for s in statements if s in ("INSERT", "UPDATE", "DELETE")]


@pytest.fixture
def invitation():
    owner = make_user(first_name="Rita", last_name="Owner")
    customer = make_customer(
        owner, name="Secretive Customer GmbH", email="ceo@secretive.example", phone="+49 30 1234567"
    )
    return make_invitation(make_survey("nps"), customer)


# Showing the page
# ---------------------------------------------------------------------------------------------------------


def test_get_shows_the_scale_and_only_the_question_and_company(client, invitation, settings):
    response = client.get(url(invitation))
    assert response.status_code == 200
    assert_private(response)
    html = response.content.decode()
    assert "question in English about Mini CRM" in html
    assert html.count('type="radio" name="score"') == 11
    assert "label_low in English" in html and "label_high in English" in html
    assert '<html lang="en">' in html
    # Nothing about the customer or their owner, and no CRM navigation.
    for secret in ("Secretive", "ceo@secretive", "1234567", "Rita", "Workspace", "Sign out"):
        assert secret not in html


def test_get_with_score_preselects_but_records_nothing_except_the_first_open(client, invitation):
    response, written = writes(lambda: client.get(url(invitation) + "?score=9"))
    assert response.status_code == 200
    assert 'value="9" checked' in response.content.decode()
    assert not SurveyResponse.objects.exists()
    invitation.refresh_from_db()
    assert invitation.status == Status.OPENED and invitation.opened_at is not None
    assert written == ["UPDATE"]
    first_open = invitation.opened_at
    _response, written = writes(lambda: client.get(url(invitation) + "?score=3"))
    invitation.refresh_from_db()
    assert invitation.opened_at == first_open
    assert written == []
    assert not SurveyResponse.objects.exists()


@pytest.mark.parametrize("raw", ["11", "-1", "abc", "9.5", "999999999999", ""])
def test_an_invalid_score_in_the_link_preselects_nothing(client, invitation, raw):
    response = client.get(url(invitation) + f"?score={raw}")
    assert response.status_code == 200
    assert "checked" not in response.content.decode()


def test_page_is_in_the_customers_language_whatever_the_browser_says(client):
    customer = make_customer(language="zh-hans")
    invitation = make_invitation(make_survey("ces"), customer)
    response = client.get(url(invitation), headers={"accept-language": "en"})
    html = response.content.decode()
    assert '<html lang="zh-hans">' in html
    assert "question 中文" in html
    assert html.count('name="score"') == 7
    assert response["Content-Language"] == "zh-hans"


def test_the_reminder_link_works_too(client, invitation):
    from surveys.selectors import token_hash

    SurveyInvitation.objects.filter(pk=invitation.pk).update(reminder_token_hash=token_hash(token="r" * 43))
    assert client.get(reverse("surveys_public:answer", args=["r" * 43])).status_code == 200


# Answering
# ---------------------------------------------------------------------------------------------------------


def test_score_then_comment_completes_the_response(client, invitation):
    response = client.post(url(invitation), {"step": "score", "score": "9"})
    assert response.status_code == 200
    assert_private(response)
    assert "followup_positive in English" in response.content.decode()
    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.finished, answer.owner) == (9, False, invitation.customer.owner)
    invitation.refresh_from_db()
    assert invitation.status == Status.PARTIAL and invitation.started_at is not None
    # Reopening the link before the comment is given resumes at the comment step.
    assert 'name="comment"' in client.get(url(invitation)).content.decode()
    response = client.post(url(invitation), {"step": "comment", "comment": "  Great support  "})
    assert "Thank you!" in response.content.decode()
    answer.refresh_from_db()
    invitation.refresh_from_db()
    assert (answer.comment, answer.finished, invitation.status) == ("Great support", True, Status.COMPLETED)


@pytest.mark.parametrize(("score", "question"), [(3, "negative"), (7, "neutral"), (10, "positive")])
def test_follow_up_question_fits_the_score(client, invitation, score, question):
    response = client.post(url(invitation), {"step": "score", "score": str(score)})
    assert f"followup_{question} in English" in response.content.decode()


def test_skipping_the_comment_completes_without_one(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "8"})
    response = client.post(
        url(invitation), {"step": "comment", "comment": "typed, then skipped", "skip": "1"}
    )
    assert response.status_code == 200
    answer = SurveyResponse.objects.get()
    assert answer.finished and answer.comment == ""


def test_replaying_an_answered_link_shows_already_answered_and_adds_nothing(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "9"})
    client.post(url(invitation), {"step": "comment", "comment": "first"})
    before = SurveyResponse.objects.get()
    for method, data in (
        ("get", None),
        ("post", {"step": "score", "score": "0"}),
        ("post", {"step": "comment", "comment": "x"}),
    ):
        response, written = writes(lambda m=method, d=data: getattr(client, m)(url(invitation), d))
        assert response.status_code == 200
        assert "already answered" in response.content.decode()
        assert written == []
    after = SurveyResponse.objects.get()
    assert (after.score, after.comment, after.updated_at) == (before.score, before.comment, before.updated_at)


def test_a_second_score_submit_while_the_comment_is_open_keeps_the_first_score(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "9"})
    response = client.post(url(invitation), {"step": "score", "score": "2"})
    assert 'name="comment"' in response.content.decode()
    assert list(SurveyResponse.objects.values_list("score", flat=True)) == [9]


def test_expired_links_refuse_answers(client):
    invitation = make_invitation(make_survey("csat"), sent_at=timezone.now() - timedelta(days=15))
    for response in (
        client.get(url(invitation)),
        client.post(url(invitation), {"step": "score", "score": "5"}),
    ):
        assert response.status_code == 200
        assert "This survey has closed" in response.content.decode()
    assert not SurveyResponse.objects.exists()
    invitation.refresh_from_db()
    assert invitation.opened_at is None


def test_an_expired_partial_answer_keeps_its_score_but_takes_no_comment(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "6"})
    now = timezone.now()
    SurveyInvitation.objects.filter(pk=invitation.pk).update(
        sent_at=now - timedelta(days=30), expires_at=now - timedelta(seconds=1)
    )
    response = client.post(url(invitation), {"step": "comment", "comment": "late"})
    assert "This survey has closed" in response.content.decode()
    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.comment, answer.finished) == (6, "", False)


def test_revoked_links_show_closed_and_write_nothing(client):
    invitation = make_invitation(status=Status.REVOKED, suppression_reason="manager")
    response, written = writes(lambda: client.post(url(invitation), {"step": "score", "score": "5"}))
    assert response.status_code == 200
    assert "no longer open" in response.content.decode()
    assert written == [] and not SurveyResponse.objects.exists()


# Bad input: a clear message, never a 500, never a partial record
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["11", "-1", "", "abc", "7.5", "1e3", "99999999999999999999", "٣"])
def test_bad_scores_get_a_clear_message_and_write_nothing(client, invitation, score):
    response, written = writes(lambda: client.post(url(invitation), {"step": "score", "score": score}))
    assert response.status_code == 200
    assert "Choose a score from 0 to 10." in response.content.decode()
    assert written == []


def test_a_missing_score_gets_a_clear_message(client, invitation):
    response = client.post(url(invitation), {"step": "score"})
    assert "Choose a score from 0 to 10." in response.content.decode()
    assert not SurveyResponse.objects.exists()


def test_a_100_kb_comment_is_refused_with_a_message_and_the_score_stays(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "4"})
    response = client.post(url(invitation), {"step": "comment", "comment": "x" * 100_000})
    assert response.status_code == 200
    assert "Please keep your comment under 5,000 characters (it has 100,000)." in response.content.decode()
    answer = SurveyResponse.objects.get()
    assert (answer.comment, answer.finished) == ("", False)


def test_html_in_a_comment_is_stored_as_text_and_shown_escaped(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "2"})
    evil = '<script>alert("x")</script><b hx-get="/crm/">bold</b>'
    client.post(url(invitation), {"step": "comment", "comment": evil})
    assert SurveyResponse.objects.get().comment == evil
    manager = make_user(role="manager")
    client.force_login(manager)
    html = client.get(reverse("surveys:responses")).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "<script>alert" not in html and '<b hx-get="/crm/">' not in html


def test_a_comment_with_a_nul_character_gets_a_message(client, invitation):
    client.post(url(invitation), {"step": "score", "score": "5"})
    response = client.post(url(invitation), {"step": "comment", "comment": "a\x00b"})
    assert response.status_code == 200
    assert not SurveyResponse.objects.get().finished


@pytest.mark.parametrize("method", ["put", "patch", "delete", "options"])
def test_wrong_methods_get_405_with_a_message(client, invitation, method):
    response, written = writes(lambda: getattr(client, method)(url(invitation)))
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, POST"
    assert "not possible" in response.content.decode()
    assert_private(response)
    assert written == []


def test_head_does_not_count_as_an_open(client, invitation):
    assert client.head(url(invitation)).status_code == 200
    invitation.refresh_from_db()
    assert invitation.opened_at is None


def test_a_post_without_the_csrf_token_is_refused_with_a_friendly_page(invitation):
    csrf_client = Client(enforce_csrf_checks=True)
    response = csrf_client.post(url(invitation), {"step": "score", "score": "9"})
    assert response.status_code == 403
    assert "Please try again" in response.content.decode()
    assert_private(response)
    assert not SurveyResponse.objects.exists()


@pytest.mark.parametrize("secure", [False, True])
def test_the_anonymous_csrf_cookie_lets_the_post_through_without_referrer(invitation, secure):
    # The page's Referrer-Policy: no-referrer makes browsers send "Origin: null" and no Referer.
    csrf_client = Client(enforce_csrf_checks=True)
    page = csrf_client.get(url(invitation), secure=secure)
    token = page.context["csrf_token"]
    data = {"step": "score", "score": "9", "csrfmiddlewaretoken": token}
    response = csrf_client.post(url(invitation), data, secure=secure, headers={"origin": "null"})
    assert response.status_code == 200
    assert SurveyResponse.objects.count() == 1


def test_a_post_from_a_foreign_origin_or_with_a_wrong_token_is_refused(invitation):
    csrf_client = Client(enforce_csrf_checks=True)
    token = csrf_client.get(url(invitation)).context["csrf_token"]
    data = {"step": "score", "score": "9", "csrfmiddlewaretoken": token}
    foreign = csrf_client.post(url(invitation), data, headers={"origin": "https://evil.example"})
    wrong = csrf_client.post(
        url(invitation), {**data, "csrfmiddlewaretoken": "x" * 64}, headers={"origin": "null"}
    )
    assert foreign.status_code == wrong.status_code == 403
    assert not SurveyResponse.objects.exists()


# Rate limit
# ---------------------------------------------------------------------------------------------------------


def test_the_public_page_is_rate_limited_per_client(client, invitation, settings):
    from django.core.cache import cache

    settings.SURVEYS_RATE_LIMIT = "5/m"
    cache.clear()
    statuses = [client.get(url(invitation), REMOTE_ADDR="203.0.113.7").status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    limited = client.get(url(invitation), REMOTE_ADDR="203.0.113.7")
    assert "Too many requests" in limited.content.decode()
    assert_private(limited)
    # Another client is not affected.
    assert client.get(url(invitation), REMOTE_ADDR="198.51.100.1").status_code == 200
    cache.clear()


def test_the_rate_limit_fails_open_when_redis_is_down(client, invitation, settings, caplog):
    settings.SURVEYS_RATE_LIMIT = "1/m"
    # Nothing listens on port 1: every cache call fails (the settings fixture swaps the cache handler).
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    for _ in range(3):
        assert client.get(url(invitation)).status_code == 200
    assert client.post(url(invitation), {"step": "score", "score": "10"}).status_code == 200
    assert SurveyResponse.objects.count() == 1
    assert "cache unavailable, allowing the request" in caplog.text


# Unsubscribe
# ---------------------------------------------------------------------------------------------------------


def test_unsubscribe_get_only_asks_and_post_suppresses(client, invitation):
    link = reverse("surveys_public:unsubscribe", args=[emails.unsubscribe_token(invitation)])
    response, written = writes(lambda: client.get(link))
    assert response.status_code == 200 and written == []
    assert "No more surveys?" in response.content.decode()
    assert_private(response)
    response = client.post(link, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    suppression = SurveySuppression.objects.get()
    assert (suppression.customer, suppression.reason) == (invitation.customer, "unsubscribed")
    client.post(link)
    assert SurveySuppression.objects.count() == 1


@pytest.mark.parametrize("token", ["1:abc:def", "garbage", "MQ:1tUv0x:forged-signature"])
def test_unsubscribe_with_a_forged_token_is_404(client, invitation, token):
    response = client.post(reverse("surveys_public:unsubscribe", args=[token]))
    assert response.status_code == 404
    assert not SurveySuppression.objects.exists()


def test_the_token_never_reaches_the_request_log(client, invitation, caplog):
    invitation.status = Status.REVOKED
    client.put(url(invitation))
    client.get(reverse("surveys_public:answer", args=["x" * 43]))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/s/" in logged
    assert invitation.token not in logged and "x" * 43 not in logged


@pytest.mark.parametrize("rate", ["", "lots", "10/fortnight", "/m"])
def test_a_missing_or_malformed_rate_setting_never_breaks_the_page(client, invitation, settings, rate):
    settings.SURVEYS_RATE_LIMIT = rate
    assert client.get(url(invitation)).status_code == 200


def test_behind_a_proxy_the_limit_uses_the_proxys_client_header(client, invitation, settings):
    from django.core.cache import cache

    settings.SURVEYS_RATE_LIMIT = "2/m"
    settings.SURVEYS_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    cache.clear()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    first = {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7"}  # a spoofed entry, then what our proxy saw
    assert [client.get(url(invitation), **proxy, **first).status_code for _ in range(3)] == [200, 200, 429]
    spoofed = {"HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.7"}
    assert client.get(url(invitation), **proxy, **spoofed).status_code == 429
    other = {"HTTP_X_FORWARDED_FOR": "198.51.100.9"}
    assert client.get(url(invitation), **proxy, **other).status_code == 200
    cache.clear()
