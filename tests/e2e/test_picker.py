"""The type-ahead pickers in a real browser: a customer and a user custom field's colleague typed, chosen
with the keyboard, saved; and the pipeline board on a phone shows one stage at a time."""

import re

import pytest
from playwright.sync_api import expect

from crm.custom_fields.services import field_create
from crm.models import Customer, Deal
from tests.e2e.conftest import PHONE, sign_in
from tests.factories import make_customer, make_deal, make_manager, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_rep_picks_a_customer_by_typing_and_the_keyboard(page):
    rep = make_user(username="rita")
    for name in ("Nordlicht Solar GmbH", "Nordwind Logistik AG", "Südhang Weinbau", "Nordsee Fisch KG"):
        make_customer(rep, name=name)
    make_customer(make_user(), name="Nordstern Fremd GmbH")  # another rep's: never offered
    sign_in(page, "rita")
    page.goto("/crm/deals/new/")
    picker = page.get_by_role("combobox", name="Customer")
    picker.fill("nord")
    listbox = page.get_by_role("listbox")
    expect(listbox).to_be_visible()
    expect(listbox.get_by_role("option")).to_have_count(3)
    expect(listbox).not_to_contain_text("Nordstern")
    expect(picker).to_have_attribute("aria-expanded", "true")
    picker.press("ArrowDown")
    picker.press("ArrowDown")
    second = Customer.objects.get(name="Nordsee Fisch KG")  # by name: Nordlicht, Nordsee, Nordwind
    expect(picker).to_have_attribute("aria-activedescendant", f"customer-option-{second.pk}")
    picker.press("Enter")
    expect(listbox).to_be_hidden()
    expect(picker).to_have_value("Nordsee Fisch KG")
    page.get_by_label("Title").fill("Kühlhaus")
    page.get_by_role("button", name="Create deal").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Kühlhaus")
    assert Deal.objects.get(title="Kühlhaus").customer.name == "Nordsee Fisch KG"


def test_typing_without_picking_is_not_a_choice(page):
    rep = make_user(username="rita")
    make_customer(rep, name="Nordlicht Solar GmbH")
    sign_in(page, "rita")
    page.goto("/crm/deals/new/")
    picker = page.get_by_role("combobox", name="Customer")
    picker.fill("Nordlicht")
    expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(1)
    picker.press("Escape")
    expect(page.get_by_role("listbox")).to_be_hidden()
    page.get_by_label("Title").fill("Ohne Kunde")
    page.get_by_role("button", name="Create deal").click()
    expect(page.locator("#id_customer-error")).to_contain_text("Choose a customer")
    assert not Deal.objects.exists()


def test_the_board_on_a_phone_shows_one_stage_at_a_time(page):
    rep = make_user(username="rita")
    customer = make_customer(rep, name="Nordlicht Solar GmbH")
    first = make_deal(customer, title="Dach Nord")
    sign_in(page, "rita")
    page.set_viewport_size(PHONE)
    page.goto("/crm/deals/board/")
    switcher = page.get_by_label("Stage", exact=True)
    expect(switcher).to_be_visible()
    expect(page.locator(".board-column:visible")).to_have_count(1)
    expect(page.locator(f".deal-card[data-deal='{first.pk}']")).to_be_visible()
    switcher.select_option(label=switcher.locator("option").nth(1).inner_text())
    expect(page.locator(f".deal-card[data-deal='{first.pk}']")).to_be_hidden()
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 2500


def test_manager_filters_the_deal_list_by_picking_an_owner(page):
    make_manager(username="bea")
    anna, bert = (
        make_user(first_name="Anna", last_name="Schmidt"),
        make_user(first_name="Bert", last_name="Ernst"),
    )
    make_deal(make_customer(anna, name="Kunde A"), title="Deal Anna")
    make_deal(make_customer(bert, name="Kunde B"), title="Deal Bert")
    sign_in(page, "bea")
    page.goto("/crm/deals/")
    table = page.locator("#deal-table")
    expect(table).to_contain_text("Deal Anna")
    picker = page.get_by_role("combobox", name="Owner")
    expect(picker).to_have_attribute("placeholder", "All owners")
    picker.fill("ern")
    expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(1)
    picker.press("ArrowDown")
    picker.press("Enter")
    expect(picker).to_have_value("Bert Ernst")
    expect(page).to_have_url(re.compile(f"owner={bert.pk}&"))
    expect(table).to_contain_text("Deal Bert")
    expect(table).not_to_contain_text("Deal Anna")


def test_rep_picks_a_colleague_in_a_user_custom_field_by_typing(page):
    field_create(actor=make_manager(), entity="customer", key="buddy", label_en="Buddy", kind="user")
    make_user(username="rita")
    carl = make_user(first_name="Carl", last_name="Colleague")
    make_user(first_name="Carla", last_name="Other")
    sign_in(page, "rita")
    page.goto("/crm/customers/new/")
    expect(page.locator("select[name=cf_buddy]")).to_have_count(0)
    page.get_by_label("Name", exact=True).fill("Nordlicht Solar GmbH")
    picker = page.get_by_role("combobox", name="Buddy")
    picker.fill("carl")
    expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(2)
    picker.fill("carl coll")
    expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(1)
    picker.press("ArrowDown")
    picker.press("Enter")
    expect(picker).to_have_value("Carl Colleague")
    page.get_by_role("button", name="Create customer").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Nordlicht Solar GmbH")
    assert Customer.objects.get(name="Nordlicht Solar GmbH").custom == {"buddy": carl.pk}
