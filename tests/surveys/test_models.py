"""Database rules of the survey models, and the default surveys of the data migration."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from surveys.models import TEXT_FIELDS, Survey, SurveyInvitation, SurveyResponse
from tests.factories import make_customer, make_invitation, make_survey

pytestmark = pytest.mark.django_db


def test_default_surveys_exist_in_both_languages(default_surveys):
    assert set(default_surveys) >= {
        ("nps", "periodic"),
        ("ces", "ticket_solved"),
        ("csat", "ticket_solved"),
        ("nps", "manual"),
        ("csat", "manual"),
    }
    for survey in default_surveys.values():
        for name in TEXT_FIELDS:
            assert getattr(survey, f"{name}_en") and getattr(survey, f"{name}_zh_hans"), (survey, name)
        assert survey.text("question", "zh-hans", "ACME") != survey.text("question", "en", "ACME")
    nps = default_surveys[("nps", "periodic")]
    assert (nps.scale_min, nps.scale_max, nps.response_window_days, nps.cadence_days) == (0, 10, 30, 90)
    assert "ACME" in nps.text("question", "en", "ACME") and "{company}" not in nps.text(
        "question", "en", "ACME"
    )
    ces = default_surveys[("ces", "ticket_solved")]
    assert (ces.scale_min, ces.scale_max, ces.delay_hours, ces.response_window_days) == (1, 7, 24, 14)
    assert not default_surveys[("csat", "ticket_solved")].is_active


@pytest.mark.parametrize(
    ("kind", "scores"),
    [
        ("nps", {0: "negative", 6: "negative", 7: "neutral", 8: "neutral", 9: "positive"}),
        ("ces", {1: "negative", 3: "negative", 4: "neutral", 5: "positive", 7: "positive"}),
        ("csat", {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}),
    ],
)
def test_buckets(kind, scores):
    survey = make_survey(kind)
    assert {score: survey.bucket(score) for score in scores} == scores


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "nps", "scale_max": 5},
        {"kind": "csat", "scale_min": 0},
        {"kind": "ces", "negative_max": 4},
        {"higher_is_better": False},
        {"kind": "nps", "nps_type": ""},
        {"kind": "csat", "nps_type": "relationship"},
        {"kind": "csat", "trigger": "periodic"},
        {"response_window_days": 0},
    ],
)
def test_survey_definitions_that_would_break_the_kpis_are_refused(fields):
    survey = make_survey("nps")
    for name, value in fields.items():
        setattr(survey, name, value)
    with pytest.raises(ValidationError):
        survey.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Survey.objects.filter(pk=survey.pk).update(**fields)


def test_one_active_automatic_survey_per_kind_and_trigger(default_surveys):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_survey("ces", trigger="ticket_solved")
    make_survey("ces", trigger="ticket_solved", is_active=False)
    make_survey("ces", trigger="manual")
    make_survey("ces", trigger="manual")


def test_one_response_per_invitation_and_score_within_the_scale_in_the_database():
    invitation = make_invitation(make_survey("csat"))
    now = timezone.now()
    fields = {
        "invitation": invitation,
        "survey": invitation.survey,
        "customer": invitation.customer,
        "scale_min": 1,
        "scale_max": 5,
        "score_submitted_at": now,
        "updated_at": now,
    }
    for bad in (0, 6):
        with pytest.raises(IntegrityError), transaction.atomic():
            SurveyResponse.objects.create(score=bad, **fields)
    SurveyResponse.objects.create(score=5, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        SurveyResponse.objects.create(score=4, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        SurveyResponse.objects.filter(invitation=invitation).update(comment="x" * 5001)


def test_one_invitation_per_survey_and_ticket():
    from tests.factories import make_ticket

    survey = make_survey("ces")
    ticket = make_ticket()
    now = timezone.now()
    fields = {"survey": survey, "customer": ticket.customer, "ticket": ticket, "trigger": "ticket_solved"}
    SurveyInvitation.objects.create(created_at=now, scheduled_for=now, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        SurveyInvitation.objects.create(created_at=now, scheduled_for=now, **fields)


def test_a_sent_invitation_must_have_its_link_and_a_suppressed_one_none():
    survey, customer, now = make_survey(), make_customer(), timezone.now()
    base = {
        "survey": survey,
        "customer": customer,
        "trigger": "manual",
        "created_at": now,
        "scheduled_for": now,
    }
    with pytest.raises(IntegrityError), transaction.atomic():
        SurveyInvitation.objects.create(
            status="sent", sent_at=now, expires_at=now + timedelta(days=1), **base
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        SurveyInvitation.objects.create(
            status="suppressed", suppression_reason="cooldown", sent_at=now, **base
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        SurveyInvitation.objects.create(status="suppressed", **base)
