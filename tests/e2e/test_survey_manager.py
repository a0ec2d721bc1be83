"""A manager reviews survey results, filters invitations in place and previews a campaign — in a browser."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from surveys.models import SurveyInvitation
from tests.e2e.conftest import sign_in
from tests.factories import make_answer, make_customer, make_invitation, make_manager, make_survey, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_manager_reviews_answers_filters_invitations_and_previews_a_campaign(page, shot):
    make_manager(username="maria", first_name="Maria")
    rep = make_user(first_name="Rita")
    nps = make_survey("nps", name="Relationship NPS (demo)")
    now = timezone.now()
    for i, (score, comment) in enumerate(
        [(2, "Invoices are always late."), (6, ""), (8, "Good, could be faster."), (10, "Great team!")]
    ):
        make_answer(
            nps,
            make_customer(rep, name=f"Customer {i} GmbH", segment="mid"),
            score,
            now - timedelta(days=i),
            comment=comment,
        )
    make_invitation(nps, make_customer(rep, segment="mid"))
    SurveyInvitation.objects.create(
        survey=nps,
        customer=make_customer(rep, email=""),
        trigger="manual",
        status="suppressed",
        suppression_reason="no_email",
        created_at=now,
        scheduled_for=now,
    )

    sign_in(page, "maria")
    page.get_by_role("link", name="Surveys").first.click()
    expect(page.get_by_role("heading", name="Open detractor follow-ups")).to_contain_text("2")
    shot(page, "survey-manager-overview")

    page.get_by_role("link", name="Invitations").click()
    page.wait_for_url("**/surveys/invitations/")
    page.wait_for_load_state()  # htmx is wired up before the filter is used
    page.get_by_label("Status").select_option("suppressed")
    expect(page.locator("#invitation-table tbody tr")).to_have_count(1)
    expect(page.locator("#invitation-table")).to_contain_text("no e-mail address")
    assert "status=suppressed" in page.url
    shot(page, "survey-manager-invitations")

    page.get_by_role("link", name="Answers").click()
    page.wait_for_url("**/surveys/responses/")
    page.wait_for_load_state()
    expect(page.locator(".answer")).to_have_count(4)
    page.get_by_label("Score").select_option("negative")
    expect(page.locator(".answer")).to_have_count(2)
    expect(page.locator("#response-table")).to_contain_text("Invoices are always late.")
    shot(page, "survey-manager-answers")

    page.get_by_role("link", name="Customer 0 GmbH").click()
    expect(page.locator(".timeline-survey")).to_contain_text("Relationship NPS (demo)")
    expect(page.locator(".timeline-survey")).to_contain_text("Invoices are always late.")
    shot(page, "survey-timeline")
    page.go_back()

    page.get_by_role("link", name="Campaigns").click()
    page.wait_for_url("**/surveys/campaigns/")
    page.wait_for_load_state()
    # Active customers of every segment: one has no e-mail address.
    expect(page.locator("#campaign-preview")).to_contain_text("6 customers match; 5 of them can be e-mailed.")
    page.get_by_label("Segment").select_option("mid")
    expect(page.locator("#campaign-preview")).to_contain_text("5 customers match; 5 of them can be e-mailed.")
    shot(page, "survey-manager-campaign")
