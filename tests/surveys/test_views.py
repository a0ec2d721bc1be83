"""Manager pages under /surveys/ (managers and admins only), and survey answers on the customer timeline."""

from datetime import timedelta
from unittest import mock

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import UsageEvent
from surveys.models import Survey, SurveyCampaign, SurveyInvitation, SurveyResponse
from surveys.selectors import survey_response_list
from tests.factories import (
    make_admin,
    make_agent,
    make_answer,
    make_customer,
    make_invitation,
    make_manager,
    make_survey,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def survey_urls() -> list[tuple[str, str]]:
    """(url name, route) of every pattern in the surveys namespace."""
    surveys = next(
        p for p in get_resolver().url_patterns if isinstance(p, URLResolver) and p.namespace == "surveys"
    )
    return [(f"surveys:{p.name}", str(p.pattern)) for p in surveys.url_patterns if isinstance(p, URLPattern)]


@pytest.fixture
def world(default_surveys):
    rep, other_rep = make_user(), make_user()
    mine, theirs = make_customer(rep, name="Mine GmbH"), make_customer(other_rep, name="Theirs AG")
    nps = make_survey("nps", name="Quarterly NPS")
    now = timezone.now()
    mine_answer = make_answer(nps, mine, 3, now - timedelta(hours=2), comment="Mine: slow invoices")
    theirs_answer = make_answer(nps, theirs, 10, now - timedelta(hours=1), comment="Theirs: lovely")
    return {
        "rep": rep,
        "other_rep": other_rep,
        "mine": mine,
        "theirs": theirs,
        "survey": nps,
        "mine_answer": mine_answer,
        "theirs_answer": theirs_answer,
        "manager": make_manager(),
    }


# Access
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_every_survey_page_is_404_for_reps_and_agents(client, world, role):
    user = world["rep"] if role == "rep" else make_agent()
    client.force_login(user)
    invitation = make_invitation(world["survey"], world["mine"])
    checked = 0
    for name, route in survey_urls():
        url = (
            reverse(name, args=[world["survey"].pk if "edit" in route else invitation.pk])
            if "<int:pk>" in route
            else reverse(name)
        )
        for method in ("get", "post"):
            for headers in ({}, HTMX):
                response = getattr(client, method)(url, headers=headers)
                assert response.status_code in (404, 405), f"{method} {url} as {role}: {response.status_code}"
                checked += response.status_code == 404
    assert checked >= 10
    assert SurveyInvitation.objects.get(pk=invitation.pk).status == SurveyInvitation.Status.SENT


def test_anonymous_users_are_sent_to_sign_in(client):
    response = client.get(reverse("surveys:home"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_nav_shows_surveys_to_managers_only(client, world):
    client.force_login(world["manager"])
    assert 'href="/surveys/"' in client.get(reverse("crm:workspace")).content.decode()
    client.force_login(world["rep"])
    assert 'href="/surveys/"' not in client.get(reverse("crm:workspace")).content.decode()


# Pages
# ---------------------------------------------------------------------------------------------------------


def test_overview_shows_open_follow_ups_funnel_and_surveys(client, world, django_assert_max_num_queries):
    client.force_login(make_admin())
    for i in range(5):
        make_answer(world["survey"], make_customer(world["rep"]), i, timezone.now())
    with django_assert_max_num_queries(12):
        response = client.get(reverse("surveys:home"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Open detractor follow-ups" in html
    assert "Mine GmbH" in html and "Theirs AG" not in html.split("Last 90 days")[0]
    assert "Quarterly NPS" in html and "Relationship NPS" in html


def test_invitation_list_filters_in_place_with_a_bounded_number_of_queries(
    client, world, django_assert_max_num_queries
):
    client.force_login(world["manager"])
    survey = world["survey"]
    for _ in range(30):
        make_invitation(survey, make_customer(world["rep"]))
    SurveyInvitation.objects.create(
        survey=survey,
        customer=world["mine"],
        trigger="manual",
        status="suppressed",
        suppression_reason="cooldown",
        created_at=timezone.now(),
        scheduled_for=timezone.now(),
    )
    with django_assert_max_num_queries(12):
        page = client.get(reverse("surveys:invitations"))
    assert page.status_code == 200 and "<html" in page.content.decode()
    with django_assert_max_num_queries(12):
        fragment = client.get(
            reverse("surveys:invitations") + "?status=suppressed&reason=cooldown", headers=HTMX
        )
    html = fragment.content.decode()
    assert "<html" not in html and 'id="invitation-table"' in html
    assert "surveyed recently (any survey)" in html
    assert html.count("<tr>") == 2  # header + the one suppressed invitation
    assert fragment["Vary"].lower().count("hx-request")


def test_response_list_shows_comments_escaped_and_filters_by_bucket(
    client, world, django_assert_max_num_queries
):
    client.force_login(world["manager"])
    make_answer(
        world["survey"],
        make_customer(world["rep"]),
        8,
        timezone.now(),
        comment="<img src=x onerror=alert(1)>",
    )
    with django_assert_max_num_queries(10):
        response = client.get(reverse("surveys:responses"))
    html = response.content.decode()
    assert "Mine: slow invoices" in html and "Theirs: lovely" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    fragment = client.get(reverse("surveys:responses") + "?bucket=negative", headers=HTMX).content.decode()
    assert "Mine: slow invoices" in fragment and "Theirs: lovely" not in fragment and "<html" not in fragment
    fragment = client.get(reverse("surveys:responses") + "?bucket=positive&with_comment=on", headers=HTMX)
    assert "Theirs: lovely" in fragment.content.decode()


def test_editing_a_survey(client, world):
    client.force_login(world["manager"])
    survey = world["survey"]
    url = reverse("surveys:survey_update", args=[survey.pk])
    form = client.get(url)
    assert form.status_code == 200
    data = {name: getattr(survey, name) for name in form.context["form"].fields}
    data |= {"is_active": "", "response_window_days": 21, "question_zh_hans": "新的问题 {company}？"}
    response = client.post(url, data)
    assert response.status_code == 302
    survey.refresh_from_db()
    assert (survey.is_active, survey.response_window_days, survey.question_zh_hans) == (
        False,
        21,
        "新的问题 {company}？",
    )
    assert UsageEvent.objects.filter(object_type="survey", object_id=survey.pk, verb="update").exists()


def test_bad_survey_settings_re_render_the_form_with_200_and_save_nothing(client, world, default_surveys):
    client.force_login(world["manager"])
    survey = world["survey"]
    url = reverse("surveys:survey_update", args=[survey.pk])
    data = {name: getattr(survey, name) for name in client.get(url).context["form"].fields}
    response = client.post(url, {**data, "response_window_days": 0, "question_en": ""}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "A link can be valid for 1 to 90 days." in html
    # Two automatic CES surveys on solved tickets cannot both be on.
    off = make_survey("ces", trigger="ticket_solved", is_active=False)
    url = reverse("surveys:survey_update", args=[off.pk])
    data = {name: getattr(off, name) for name in client.get(url).context["form"].fields}
    response = client.post(url, {**data, "is_active": "on"})
    assert response.status_code == 200
    assert "Switch that one off first." in response.content.decode()
    assert not Survey.objects.get(pk=off.pk).is_active


def test_campaign_preview_and_launch(client, world, django_capture_on_commit_callbacks):
    client.force_login(world["manager"])
    survey = world["survey"]
    make_customer(world["rep"], segment="enterprise", source="event")
    make_customer(world["rep"], segment="enterprise", source="event", email="")
    page = client.get(reverse("surveys:campaigns"))
    assert page.status_code == 200 and survey.name in page.content.decode()
    preview = client.get(
        reverse("surveys:campaign_preview") + "?segment=enterprise&source=event", headers=HTMX
    )
    assert "2 customers match; 1 of them can be e-mailed." in preview.content.decode()
    with (
        mock.patch("surveys.tasks.launch_survey_campaign.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client.post(
            reverse("surveys:campaigns"), {"survey": survey.pk, "segment": "enterprise", "source": "event"}
        )
    assert response.status_code == 302
    campaign = SurveyCampaign.objects.get()
    delay.assert_called_once_with(campaign.pk)
    assert (campaign.matched, campaign.filters, campaign.created_by) == (
        2,
        {"segment": "enterprise", "source": "event"},
        world["manager"],
    )


def test_a_campaign_with_no_match_is_refused_with_200(client, world):
    client.force_login(world["manager"])
    response = client.post(
        reverse("surveys:campaigns"),
        {"survey": world["survey"].pk, "segment": "mid", "source": "partner"},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "No customer matches these filters." in response.content.decode()
    assert not SurveyCampaign.objects.exists()


def test_revoking_a_link(client, world):
    client.force_login(world["manager"])
    invitation = make_invitation(world["survey"], world["mine"])
    response = client.post(reverse("surveys:invitation_revoke", args=[invitation.pk]))
    assert response.status_code == 302
    invitation.refresh_from_db()
    assert (invitation.status, invitation.suppression_reason) == ("revoked", "manager")
    assert "no longer open" in client.get(f"/s/{invitation.token}/").content.decode()
    answered = world["mine_answer"].invitation
    client.post(reverse("surveys:invitation_revoke", args=[answered.pk]))
    assert SurveyInvitation.objects.get(pk=answered.pk).status == "completed"


# The customer timeline
# ---------------------------------------------------------------------------------------------------------


def test_a_rep_sees_survey_answers_of_own_customers_only_and_no_comments(client, world):
    assert list(survey_response_list(user=world["rep"])) == [world["mine_answer"]]
    client.force_login(world["rep"])
    html = client.get(world["mine"].get_absolute_url()).content.decode()
    assert "Quarterly NPS" in html and 'class="score score-negative">3<' in html
    assert "Mine: slow invoices" not in html
    assert client.get(world["theirs"].get_absolute_url()).status_code == 404


def test_managers_see_the_comment_on_the_timeline(client, world):
    client.force_login(world["manager"])
    html = client.get(world["mine"].get_absolute_url()).content.decode()
    assert "Mine: slow invoices" in html


def test_an_agent_sees_answers_on_tickets_they_may_see(world, no_auto_assign):
    agent, other_agent = make_agent(), make_agent()
    ces = make_survey("ces")
    visible = make_ticket(world["mine"], assignee=agent)
    hidden = make_ticket(world["theirs"], assignee=other_agent)
    seen = make_invitation(ces, world["mine"], ticket=visible, trigger="ticket_solved")
    unseen = make_invitation(ces, world["theirs"], ticket=hidden, trigger="ticket_solved")
    from surveys.services import response_submit_score

    for invitation in (seen, unseen):
        response_submit_score(invitation_id=invitation.pk, score=6)
    assert [r.invitation_id for r in survey_response_list(user=agent)] == [seen.pk]


def test_overview_counts_each_surveys_invitations_and_answers_once(client, world):
    """Each count is its own subquery: joined in one GROUP BY, every invitation of a survey met every
    answer to it (correct with DISTINCT, but it spilled tens of gigabytes to disk at 475 000 invitations)."""
    client.force_login(world["manager"])
    survey = make_survey("csat", name="Counted CSAT")
    customer = make_customer(world["rep"])
    for score in (5, 4, 2):
        make_answer(survey, customer, score, timezone.now())
    make_invitation(survey, customer, status="sent")
    make_invitation(survey, customer, status="scheduled", sent_at=None)
    html = client.get(reverse("surveys:home")).content.decode()
    row = html[html.index('Counted CSAT <span class="badge">') :]
    row = row[: row.index("</tr>")]
    sent = SurveyInvitation.objects.filter(survey=survey, sent_at__isnull=False).count()
    assert sent >= 2 and SurveyResponse.objects.filter(survey=survey).count() == 3
    assert f'<td class="num">{sent}</td>' in row and ">3</a>" in row
