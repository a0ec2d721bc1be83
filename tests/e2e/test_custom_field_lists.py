"""Custom fields on the lists in a browser: "More filters", the column chooser, a filter in a ticket queue."""

from crm.custom_fields.services import field_create
from tests.e2e.conftest import sign_in
from tests.factories import make_customer, make_deal, make_manager, make_ticket, make_user


def test_filters_and_columns_of_the_deal_and_ticket_lists(page, shot):
    boss = make_manager()
    field_create(
        actor=boss,
        entity="deal",
        key="product_line",
        label_en="Product line",
        kind="choice",
        choices=[{"key": "hw", "en": "Hardware"}, {"key": "sw", "en": "Software"}],
    )
    field_create(actor=boss, entity="deal", key="budget", label_en="Budget", kind="money")
    field_create(actor=boss, entity="ticket", key="vip", label_en="VIP", kind="yes_no")
    rep = make_user(username="rita", first_name="Rita")
    customer = make_customer(rep, name="Acme GmbH")
    make_deal(customer, title="Server rack", custom={"product_line": "hw", "budget": "1250.5"})
    make_deal(customer, title="Licences", custom={"product_line": "sw"})
    make_ticket(customer, subject="Rack is loud", custom={"vip": True})
    make_ticket(customer, subject="Invoice copy")
    sign_in(page, "rita")

    page.goto("/crm/deals/")
    page.get_by_text("More filters").click()
    page.locator("#id_cf_product_line").select_option("hw")
    page.wait_for_url("**cf_product_line=hw**")
    table = page.locator("#deal-table")
    table.get_by_text("Server rack").wait_for()
    assert table.get_by_text("Licences").count() == 0
    page.locator("#deal-table summary", has_text="Columns").click()
    page.get_by_role("checkbox", name="Budget").check()
    page.get_by_role("checkbox", name="Product line").check()
    page.get_by_role("button", name="Show columns").click()
    page.locator("#deal-table th", has_text="Budget").wait_for()
    assert "1,250.50" in table.inner_text() and "Licences" not in table.inner_text()
    page.locator("#id_cf_budget_from").fill("abc")
    page.locator("#deal-table [role=alert]").wait_for()
    shot(page, "custom-field-deal-list")

    page.goto("/crm/tickets/?queue=all")
    page.get_by_text("More filters").click()
    page.locator("#id_cf_vip").select_option("yes")
    page.wait_for_url("**cf_vip=yes**")
    assert "queue=all" in page.url
    page.locator("#ticket-table").get_by_text("Rack is loud").wait_for()
    assert page.locator("#ticket-table").get_by_text("Invoice copy").count() == 0
    page.get_by_role("link", name="All open").click()
    page.wait_for_url("**queue=open**")
    assert "cf_vip=yes" in page.url
    shot(page, "custom-field-ticket-list")
