"""Sending: the e-mail, throttling and the suppression list at send time, the reminder, expiry."""

import re
import smtplib
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from crm.models import Customer
from surveys import services, tasks
from surveys.models import SurveyInvitation, SurveySuppression
from surveys.selectors import invitation_by_token
from tests.factories import make_customer, make_invitation, make_survey

pytestmark = pytest.mark.django_db

Status, Reason = SurveyInvitation.Status, SurveyInvitation.Reason
LINK = re.compile(r"https://crm\.example\.com/s/([A-Za-z0-9_-]{43})/")


def schedule(survey, customer, at=None, **fields) -> SurveyInvitation:
    at = at or timezone.now()
    return SurveyInvitation.objects.create(
        survey=survey, customer=customer, trigger=survey.trigger, created_at=at, scheduled_for=at, **fields
    )


def send(invitation, now=None) -> SurveyInvitation:
    services.invitation_send(invitation_id=invitation.pk, now=now)
    invitation.refresh_from_db()
    return invitation


# The e-mail
# ---------------------------------------------------------------------------------------------------------


def test_the_email_has_the_link_score_links_and_unsubscribe_as_html_and_text():
    customer = make_customer(email="anna@example.org")
    invitation = send(schedule(make_survey("nps"), customer))
    assert invitation.status == Status.SENT and invitation.sent_at is not None
    assert invitation.expires_at == invitation.sent_at + timedelta(days=14)
    (message,) = mail.outbox
    assert message.to == ["anna@example.org"]
    html = message.alternatives[0].content
    tokens = set(LINK.findall(message.body)) | set(LINK.findall(html))
    assert len(tokens) == 1
    token = tokens.pop()
    assert invitation_by_token(token=token) == invitation
    for score in range(11):
        assert f"/s/{token}/?score={score}" in message.body
        assert f"/s/{token}/?score={score}" in html
    assert "question in English about Mini CRM" in message.body and "question in English" in html
    assert "https://crm.example.com/s/unsubscribe/" in message.body and "/s/unsubscribe/" in html
    assert message.extra_headers["List-Unsubscribe"].startswith("<https://crm.example.com/s/unsubscribe/")
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Only the hash is stored.
    assert token not in str(SurveyInvitation.objects.values().get())


def test_the_email_is_in_the_customers_language():
    customer = make_customer(language="zh-hans")
    send(schedule(make_survey("ces"), customer))
    (message,) = mail.outbox
    html = message.alternatives[0].content
    assert '<html lang="zh-hans">' in html
    assert "question 中文 Mini CRM" in message.body and "label_low 中文" in html
    assert html.count("?score=") == 7


def test_the_unsubscribe_link_from_the_email_suppresses_future_surveys(client):
    customer = make_customer()
    survey = make_survey("nps")
    send(schedule(survey, customer))
    link = re.search(r"https://crm\.example\.com(/s/unsubscribe/[^/\s]+/)", mail.outbox[0].body).group(1)
    client.post(link)
    assert SurveySuppression.objects.get(customer=customer).reason == "unsubscribed"
    later = send(schedule(make_survey("csat"), customer), now=timezone.now() + timedelta(days=200))
    assert (later.status, later.suppression_reason) == (Status.SUPPRESSED, Reason.UNSUBSCRIBED)
    assert len(mail.outbox) == 1


def test_sending_twice_sends_one_email():
    invitation = schedule(make_survey(), make_customer())
    send(invitation)
    first_hash = SurveyInvitation.objects.get().token_hash
    assert services.invitation_send(invitation_id=invitation.pk) is None
    assert len(mail.outbox) == 1
    assert SurveyInvitation.objects.get().token_hash == first_hash


def test_a_mail_server_failure_leaves_the_invitation_scheduled_for_a_retry(monkeypatch):
    invitation = schedule(make_survey(), make_customer())

    def fail(self, *args, **kwargs):
        raise smtplib.SMTPServerDisconnected("gone")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", fail)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        services.invitation_send(invitation_id=invitation.pk)
    invitation.refresh_from_db()
    assert (invitation.status, invitation.token_hash, invitation.sent_at) == (Status.SCHEDULED, None, None)


def test_a_refused_recipient_is_recorded_as_bounced_and_never_mailed_again(monkeypatch):
    customer = make_customer()
    invitation = schedule(make_survey(), customer)

    def refuse(self, *args, **kwargs):
        raise smtplib.SMTPRecipientsRefused({customer.email: (550, b"no such user")})

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", refuse)
    invitation = send(invitation)
    assert (invitation.status, invitation.suppression_reason) == (Status.SUPPRESSED, Reason.BOUNCED)
    assert SurveySuppression.objects.get(customer=customer).reason == "bounced"
    monkeypatch.undo()
    later = send(schedule(make_survey("csat"), customer), now=timezone.now() + timedelta(days=100))
    assert later.suppression_reason == Reason.BOUNCED
    assert mail.outbox == []


# Throttling and the suppression list
# ---------------------------------------------------------------------------------------------------------


def test_cooldown_across_all_surveys_is_seven_days():
    customer = make_customer()
    now = timezone.now()
    send(schedule(make_survey("csat"), customer), now=now)
    within = send(schedule(make_survey("nps"), customer), now=now + timedelta(days=6, hours=23))
    after = send(schedule(make_survey("nps"), customer), now=now + timedelta(days=7, minutes=1))
    assert (within.status, within.suppression_reason) == (Status.SUPPRESSED, Reason.COOLDOWN)
    assert after.status == Status.SENT
    assert within.sent_at is None and within.token_hash is None


def test_nps_cadence_is_ninety_days_per_kind():
    customer = make_customer()
    now = timezone.now()
    nps, other_nps = make_survey("nps"), make_survey("nps")
    send(schedule(nps, customer), now=now)
    again = send(schedule(other_nps, customer), now=now + timedelta(days=60))
    csat = send(schedule(make_survey("csat"), customer), now=now + timedelta(days=61))
    later = send(schedule(nps, customer), now=now + timedelta(days=91))
    assert (again.status, again.suppression_reason) == (Status.SUPPRESSED, Reason.CADENCE)
    assert csat.status == Status.SENT
    assert later.status == Status.SENT


@pytest.mark.parametrize(
    ("customer_fields", "reason"),
    [
        ({"is_internal": True}, Reason.INTERNAL),
        ({"email": "boss@ourcompany.example"}, Reason.INTERNAL),
        ({"email": ""}, Reason.NO_EMAIL),
    ],
)
def test_the_suppression_list_is_applied_at_send_time(customer_fields, reason):
    invitation = send(schedule(make_survey(), make_customer(**customer_fields)))
    assert (invitation.status, invitation.suppression_reason) == (Status.SUPPRESSED, reason)
    assert mail.outbox == []


def test_merged_customers_and_switched_off_surveys_are_not_mailed():
    duplicate, original = make_customer(), make_customer()
    Customer.objects.filter(pk=duplicate.pk).update(merged_into=original)
    merged = send(schedule(make_survey(), Customer.objects.get(pk=duplicate.pk)))
    off = send(schedule(make_survey(is_active=False), make_customer()))
    assert merged.suppression_reason == Reason.MERGED
    assert off.suppression_reason == Reason.SURVEY_INACTIVE
    assert mail.outbox == []


def test_send_due_sends_only_what_is_due_and_reports_it():
    now = timezone.now()
    survey = make_survey()
    due = schedule(survey, make_customer(), at=now - timedelta(minutes=1))
    skipped = schedule(survey, make_customer(email=""), at=now - timedelta(minutes=1))
    later = schedule(survey, make_customer(), at=now + timedelta(hours=1))
    result = services.invitations_send_due(now=now)
    assert (result.sent, result.suppressed) == (1, 1)
    assert [SurveyInvitation.objects.get(pk=i.pk).status for i in (due, skipped, later)] == [
        Status.SENT,
        Status.SUPPRESSED,
        Status.SCHEDULED,
    ]
    assert services.invitations_send_due(now=now).sent == 0


# Reminder and expiry
# ---------------------------------------------------------------------------------------------------------


def test_one_reminder_after_three_days_to_those_who_have_not_completed(client):
    now = timezone.now()
    survey = make_survey("nps", response_window_days=30)
    waiting = make_invitation(survey, sent_at=now - timedelta(days=3, hours=1))
    partial = make_invitation(survey, sent_at=now - timedelta(days=3, hours=1))
    services.response_submit_score(invitation_id=partial.pk, score=9)
    done = make_invitation(survey, sent_at=now - timedelta(days=3, hours=1))
    services.response_submit_score(invitation_id=done.pk, score=9)
    services.response_finish(invitation_id=done.pk, comment="")
    too_early = make_invitation(survey, sent_at=now - timedelta(days=2))
    too_late = make_invitation(survey, sent_at=now - timedelta(days=6))
    assert tasks.send_survey_reminders() == 2
    assert tasks.send_survey_reminders() == 0
    assert len(mail.outbox) == 2
    reminded = {i.pk for i in SurveyInvitation.objects.filter(reminder_count=1)}
    assert reminded == {waiting.pk, partial.pk}
    assert not {done.pk, too_early.pk, too_late.pk} & reminded
    assert "Reminder" in mail.outbox[0].subject
    # The reminder's own link works; so does the first one.
    token = LINK.search(mail.outbox[0].body).group(1)
    assert invitation_by_token(token=token).reminder_count == 1
    assert client.get(f"/s/{waiting.token}/").status_code == 200


def test_reminders_obey_the_suppression_list_but_not_the_cooldown():
    now = timezone.now()
    survey = make_survey("nps", response_window_days=30)
    opted_out = make_invitation(survey, sent_at=now - timedelta(days=3, hours=1))
    services.suppression_add(customer=opted_out.customer, reason="unsubscribed")
    recent = make_invitation(survey, sent_at=now - timedelta(days=3, hours=1))
    make_invitation(make_survey("csat"), recent.customer, sent_at=now - timedelta(days=1))
    assert services.reminders_send(now=now) == 1
    assert SurveyInvitation.objects.get(pk=recent.pk).reminder_count == 1
    assert SurveyInvitation.objects.get(pk=opted_out.pk).reminder_count == 0


def test_expiry_marks_unanswered_links_and_is_idempotent():
    now = timezone.now()
    old = make_invitation(make_survey("csat"), sent_at=now - timedelta(days=15))
    fresh = make_invitation(make_survey("csat"), sent_at=now - timedelta(days=1))
    assert tasks.expire_survey_invitations() == 1
    assert tasks.expire_survey_invitations() == 0
    assert SurveyInvitation.objects.get(pk=old.pk).status == Status.EXPIRED
    assert SurveyInvitation.objects.get(pk=fresh.pk).status == Status.SENT
