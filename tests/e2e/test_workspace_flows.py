"""A rep takes a deal from a new customer to won; an agent answers and solves a ticket — in a real browser."""

import re

import pytest
from playwright.sync_api import expect

from crm.models import Customer, Deal, Ticket
from tests.e2e.conftest import drag, sign_in
from tests.factories import make_agent, make_customer, make_deal, make_ticket, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_rep_creates_customer_and_deal_and_wins_it_on_the_board(page, shot):
    make_user(username="rita", first_name="Rita")
    sign_in(page, "rita")
    shot(page, "workspace-empty")

    page.get_by_role("link", name="Customers").first.click()
    page.get_by_role("link", name="New customer").click()
    page.get_by_label("Name").fill("Nordlicht Solar GmbH")
    page.get_by_label("E-mail").fill("info@nordlicht.example")
    page.get_by_label("Phone").fill("+49 40 1234567")
    page.get_by_label("City").fill("Hamburg")
    page.get_by_label("Source").select_option("referral")
    shot(page, "customer-form", phone=False)
    page.get_by_role("button", name="Create customer").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Nordlicht Solar GmbH")
    customer = Customer.objects.get(name="Nordlicht Solar GmbH")

    page.get_by_role("link", name="+ Deal").click()
    page.get_by_label("Title").fill("Rooftop installation")
    page.get_by_label("Amount").fill("48000")
    page.get_by_label("Expected close date").fill("2027-02-15")
    page.get_by_role("button", name="Create deal").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Rooftop installation")
    deal = Deal.objects.get(customer=customer)

    page.get_by_role("link", name="Deals").first.click()
    card = page.locator(f".deal-card[data-deal='{deal.pk}']")
    expect(card).to_be_visible()
    for stage_name in ("Qualified", "Proposal", "Negotiation"):
        card.locator("select[name=stage]").select_option(label=stage_name)
        card.get_by_role("button", name="Move").click()
        expect(page.locator(".board-message")).to_have_text(f"Rooftop installation moved to {stage_name}.")
    shot(page, "deal-board")

    # Grab the card by its customer line (not the form controls) and drop it on "Won".
    drag(page, card.locator("p.muted").first, page.locator(".board-drop-won"))
    expect(page.locator(f".deal-card[data-deal='{deal.pk}']")).to_have_count(0)
    deal.refresh_from_db()
    assert deal.status == Deal.Status.WON
    assert [c.to_stage.name for c in deal.stage_changes.order_by("at", "id")] == [
        "Lead in",
        "Qualified",
        "Proposal",
        "Negotiation",
        "Won",
    ]
    page.goto(deal.get_absolute_url())
    expect(page.locator(".badge").first).to_have_text("Won")
    shot(page, "deal-won")


def test_agent_replies_to_and_solves_a_ticket(page, shot):
    agent = make_agent(username="alex", first_name="Alex")
    ticket = make_ticket(
        make_customer(name="Kranich Logistik"), subject="Invoice shows wrong VAT", assignee=agent
    )
    sign_in(page, "alex")
    page.get_by_role("link", name="Tickets").first.click()
    page.get_by_role("link", name="Invoice shows wrong VAT").click()
    page.get_by_label("Reply", exact=True).fill(
        "Thanks for the report — we are correcting the invoice today."
    )
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".ticket-message")).to_contain_text("correcting the invoice")
    page.get_by_role("button", name=re.compile("Mark Solved")).click()
    expect(page.locator("h1 .badge")).to_have_text("Solved")
    shot(page, "ticket-solved")
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.SOLVED
    assert ticket.first_response_at is not None


def test_board_in_simplified_chinese(page, shot):
    rep = make_user(username="li", first_name="李", language="zh-hans")
    customer = make_customer(rep, name="北京星辰科技有限公司")
    make_deal(customer, title="年度服务合同")
    sign_in(page, "li")
    expect(page.get_by_role("heading", level=1)).to_contain_text("您好，李")
    page.get_by_role("link", name="商机").first.click()
    expect(page.locator(".deal-card")).to_contain_text("年度服务合同")
    expect(page.locator(".board-column-header h2").first).to_contain_text("线索")
    shot(page, "deal-board-zh")
