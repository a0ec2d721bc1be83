"""``seed_demo`` also writes survey history that follows the product's own rules."""

import io
from datetime import date, timedelta
from itertools import pairwise

import pytest
from django.core.management import call_command
from django.db.models import Avg, Count, F, Q

from crm.models import Activity, CompanySettings
from surveys.models import Survey, SurveyInvitation, SurveyResponse

pytestmark = pytest.mark.django_db

UNTIL = date(2025, 6, 30)


@pytest.fixture
def seeded() -> str:
    out = io.StringIO()
    call_command(
        "seed_demo",
        "--size",
        "small",
        "--years",
        "2",
        "--until",
        UNTIL.isoformat(),
        "--no-progress",
        "--reset",
        stdout=out,
    )
    return out.getvalue()


def test_seed_demo_writes_invitations_answers_and_follow_ups(seeded):
    assert "surveys_surveyinvitation" in seeded and "surveys_surveyresponse" in seeded
    kinds = dict(SurveyResponse.objects.values_list("survey__kind").annotate(n=Count("id")))
    assert kinds.get("nps", 0) > 50 and kinds.get("ces", 0) > 50 and kinds.get("csat", 0) > 0
    # The default surveys are back after --reset emptied the tables.
    assert Survey.objects.filter(name="Relationship NPS", is_active=True).exists()
    go_live = CompanySettings.load().go_live_date
    first = SurveyInvitation.objects.order_by("created_at").first().created_at.date()
    assert first >= go_live - timedelta(days=1)
    assert SurveyResponse.objects.filter(score_submitted_at__date__gte=UNTIL).count() == 0


def test_seeded_surveys_keep_the_rules(seeded):
    sent = SurveyInvitation.objects.filter(sent_at__isnull=False)
    assert not sent.filter(token_hash__isnull=True).exists()
    assert not SurveyInvitation.objects.filter(status="suppressed").filter(Q(suppression_reason="")).exists()
    # Cooldown: no two sends to one customer within 7 days.
    times: dict[int, list] = {}
    for customer_id, at in sent.order_by("customer_id", "sent_at").values_list("customer_id", "sent_at"):
        times.setdefault(customer_id, []).append(at)
    for stamps in times.values():
        assert all(b - a >= timedelta(days=7) for a, b in pairwise(stamps))
    # Every low score got its follow-up task for the owner; nothing else did.
    low = SurveyResponse.objects.filter(score__lte=F("survey__negative_max"), owner__isnull=False)
    assert low.exists() and not low.filter(followup_task__isnull=True).exists()
    assert not SurveyResponse.objects.filter(
        score__gt=F("survey__negative_max"), followup_task__isnull=False
    ).exists()
    assert not low.exclude(followup_task__user=F("owner")).exists()
    assert Activity.objects.filter(survey_response__isnull=False, done_at__isnull=True).exists()


def test_seeded_scores_differ_by_owner(seeded):
    means = [
        row["mean"]
        for row in SurveyResponse.objects.filter(survey__kind="nps")
        .values("owner")
        .annotate(mean=Avg("score"), n=Count("id"))
        .filter(n__gte=8)
    ]
    assert len(means) >= 3
    assert max(means) - min(means) > 1.0


def survey_fingerprint() -> dict:
    return {
        "invitations": dict(SurveyInvitation.objects.values_list("status").annotate(n=Count("id"))),
        "answers": SurveyResponse.objects.aggregate(n=Count("id"), total=Avg("score")),
        "comments": SurveyResponse.objects.exclude(comment="").count(),
    }


def test_seeded_surveys_are_deterministic(seeded):
    first = survey_fingerprint()
    out = io.StringIO()
    args = ("--size", "small", "--years", "2", "--until", UNTIL.isoformat(), "--no-progress", "--reset")
    call_command("seed_demo", *args, stdout=out)
    assert survey_fingerprint() == first


@pytest.mark.django_db
def test_survey_moments_keep_their_order_across_the_hour_the_clocks_skip(settings):
    """Answers falling into the spring-forward hour (02:00–03:00 in Berlin on 29 March 2026) once finished
    "before" they were answered: the moments were added in wall-clock time, and the 10 M-deal seed failed
    on the response's check constraint. In absolute time every finish follows its answer."""
    import random
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from crm.demo.surveys import _History, _Plan
    from surveys.services import default_surveys_seed

    settings.TIME_ZONE = "Europe/Berlin"
    default_surveys_seed()
    survey = Survey.objects.get(kind=Survey.Kind.CES)
    berlin = ZoneInfo("Europe/Berlin")
    end = datetime(2026, 4, 30, tzinfo=UTC)
    history = _History(
        writer=None, rng=random.Random(7), seed=7, start=datetime(2026, 1, 1, tzinfo=UTC), end=end
    )
    finished = in_the_gap_night = 0
    for minute in range(0, 24 * 60, 2):  # invitations every 2 minutes of the day before
        plan = _Plan(at=datetime(2026, 3, 28, tzinfo=berlin) + timedelta(minutes=minute), survey=survey)
        for _ in range(12):
            moments = history.moments(plan)
            if moments.answered_at is None:
                continue
            if (
                datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
                <= moments.answered_at
                < datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
            ):
                in_the_gap_night += 1
            if moments.finished_at is not None:
                finished += 1
                # timestamps: two datetimes of one zone compare by their wall-clock times
                assert moments.finished_at.timestamp() > moments.answered_at.timestamp(), plan
            if moments.opened_at is not None:
                assert moments.opened_at.timestamp() < moments.answered_at.timestamp(), plan
    assert finished > 1000 and in_the_gap_night > 50
