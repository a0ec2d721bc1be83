"""A customer answers an NPS survey from the e-mail link on a phone (390 × 844), in a real browser."""

import re

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import expect

from surveys import services
from surveys.models import SurveyInvitation, SurveyResponse
from tests.e2e.conftest import PHONE
from tests.factories import make_customer, make_survey, make_user

pytestmark = pytest.mark.django_db(transaction=True)

SCORE_LINK = re.compile(r"https?://[^/\s]+(/s/[A-Za-z0-9_-]{43}/\?score=(\d+))")


@pytest.fixture
def phone(browser, live_server, settings):
    settings.SURVEYS_PUBLIC_URL = live_server.url
    settings.SURVEYS_RATE_LIMIT = ""
    context = browser.new_context(
        viewport=PHONE, base_url=live_server.url, locale="en-GB", is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not errors, f"browser errors: {errors}"


def emailed_score_links(survey, customer) -> dict[int, str]:
    """Send the invitation through the real service and read the score links from the e-mail."""
    now = timezone.now()
    invitation = SurveyInvitation.objects.create(
        survey=survey, customer=customer, trigger=survey.trigger, created_at=now, scheduled_for=now
    )
    services.invitation_send(invitation_id=invitation.pk)
    body = mail.outbox[-1].body
    return {int(score): path for path, score in SCORE_LINK.findall(body)}


def fits_the_screen(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_customer_answers_nps_on_a_phone(phone, shot):
    survey = make_survey(
        "nps",
        question_en="How likely is it that you would recommend {company} to a friend or colleague?",
        label_low_en="Not at all likely",
        label_high_en="Extremely likely",
        followup_positive_en="What do you value most about {company}?",
    )
    customer = make_customer(make_user(), name="Private Customer Ltd", language="en")
    links = emailed_score_links(survey, customer)
    assert sorted(links) == list(range(11))

    phone.goto(links[9])
    expect(phone.get_by_role("group")).to_contain_text("recommend Mini CRM")
    nine = phone.get_by_role("radio", name="9")
    expect(nine).to_be_checked()
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    assert "Private Customer" not in phone.content()
    assert not SurveyResponse.objects.exists()  # opening the link records nothing
    for label in ("0 – Not at all likely", "10 – Extremely likely"):
        expect(phone.get_by_role("radio", name=label)).to_have_count(1)
    box = phone.locator(".scale-option").first.bounding_box()
    assert box["height"] >= 44 and box["width"] >= 44  # comfortable touch targets
    fits_the_screen(phone)
    shot(phone, "survey-nps-score")
    phone.set_viewport_size(PHONE)

    # Keyboard: arrow keys move the choice inside the radio group, and focus is visible.
    nine.focus()
    phone.keyboard.press("ArrowRight")
    expect(phone.get_by_role("radio", name="10 – Extremely likely")).to_be_checked()
    outline = phone.evaluate("getComputedStyle(document.activeElement.nextElementSibling).outlineStyle")
    assert outline != "none"
    phone.get_by_role("radio", name="9").check()
    phone.get_by_role("button", name="Send").tap()

    expect(phone.get_by_role("status")).to_contain_text("Your score is saved")
    expect(phone.get_by_label("What do you value most about Mini CRM?")).to_be_visible()
    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.finished) == (9, False)
    fits_the_screen(phone)
    shot(phone, "survey-nps-comment")
    phone.set_viewport_size(PHONE)

    phone.get_by_label("What do you value most about Mini CRM?").fill("Fast answers & <b>real</b> people.")
    phone.get_by_role("button", name="Send").tap()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Thank you!")
    shot(phone, "survey-nps-thanks")
    phone.set_viewport_size(PHONE)
    answer.refresh_from_db()
    assert (answer.comment, answer.finished) == ("Fast answers & <b>real</b> people.", True)

    # The link again (e.g. from the reminder, or the back button): already answered, nothing changes.
    phone.goto(links[2])
    expect(phone.get_by_role("heading", level=1)).to_have_text("You have already answered")
    shot(phone, "survey-nps-already-answered")
    assert SurveyResponse.objects.get().score == 9


def test_a_chinese_customer_sees_the_survey_in_chinese_and_gets_a_message_for_a_missing_score(phone, shot):
    survey = make_survey(
        "nps",
        question_zh_hans="您有多大可能向朋友或同事推荐{company}？",
        label_low_zh_hans="完全不可能",
        label_high_zh_hans="极有可能",
    )
    customer = make_customer(make_user(), language="zh-hans")
    links = emailed_score_links(survey, customer)
    phone.goto(links[0].split("?")[0])
    expect(phone.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(phone.get_by_role("group")).to_contain_text("推荐Mini CRM")
    expect(phone.get_by_role("radio", name="0 – 完全不可能")).not_to_be_checked()
    fits_the_screen(phone)
    shot(phone, "survey-nps-zh")
    phone.set_viewport_size(PHONE)
    phone.locator("button[type=submit]").tap()
    expect(phone.get_by_role("alert")).to_be_visible()
    shot(phone, "survey-nps-zh-missing-score")
    assert not SurveyResponse.objects.exists()
