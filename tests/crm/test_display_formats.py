"""What the everyday pages show (issue 16): phone numbers in one format, amounts grouped with their
currency (and "—" for none), the 404 page inside the layout in both languages, and the customer picker's
way to a search page without JavaScript."""

import re
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import translation

from accounts.models import User
from crm.forms import AmountField, AmountInput, DealForm
from crm.normalize import phone_display
from crm.templatetags.crm_format import phone, phone_uri
from tests.factories import make_customer, make_deal, make_user

pytestmark = pytest.mark.django_db
ZH = "zh-hans"


@pytest.fixture
def rep(client):
    user = make_user(username="rita", first_name="Rita")
    client.force_login(user)
    return user


# Phone numbers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed", ["0351/4695316", "0049 351 4695316", "+49 (351) 469-5316", "+49.351.4695316", " 0351 46 95 316 "]
)
def test_a_phone_number_shows_in_one_international_format_however_it_was_typed(typed):
    assert phone_display(typed) == "+49 351 4695316"
    assert phone(typed) == "+49 351 4695316"
    assert phone_uri(typed) == "tel:+493514695316"


def test_a_phone_number_from_abroad_keeps_its_country_and_unreadable_text_stays_as_typed():
    assert phone_display("+86 21 5555 0123") == "+86 21 5555 0123"
    assert phone_display("0911/4695316", "DE") == "+49 911 4695316"
    assert phone_display("call reception") == "call reception"
    assert phone_display("999999999999999999") == "999999999999999999"  # too long to be a number
    assert phone_display("") == phone(None) == phone_uri(None) == ""


def test_the_customer_list_and_page_show_the_number_in_one_format(client, rep):
    customer = make_customer(rep, name="Nordlicht GmbH", phone="0351/4695316")
    make_customer(rep, name="Südwind AG", phone="+49 (711) 288-2611")
    body = client.get(reverse("crm:customer_list")).content.decode()
    assert ">+49 351 4695316</td>" in body and ">+49 711 2882611</td>" in body
    assert "0351/4695316" not in body and "(711)" not in body
    page = client.get(reverse("crm:customer_detail", args=[customer.pk])).content.decode()
    assert '<a href="tel:+493514695316">+49 351 4695316</a>' in page


# Amounts
# ---------------------------------------------------------------------------------------------------------


def test_an_amount_input_groups_thousands_and_drops_empty_cents():
    widget = AmountInput()
    assert widget.format_value(Decimal("27000.00")) == "27,000"
    assert widget.format_value(Decimal("27000.5")) == "27,000.50"
    assert widget.format_value(Decimal("1234567.89")) == "1,234,567.89"
    assert widget.format_value(Decimal("950")) == "950"
    assert widget.format_value(None) is None and widget.format_value("") is None
    assert widget.format_value("NaN") == "NaN"  # shown back as typed, with the field's error
    assert widget.format_value("abc") == "abc"
    with translation.override(ZH):
        assert widget.format_value(Decimal("27000.00")) == "27,000"


def test_an_amount_field_reads_grouped_and_plain_amounts_but_not_stray_commas():
    field = AmountField(max_digits=14, decimal_places=2, required=False)
    assert field.clean("27,000") == Decimal("27000")
    assert field.clean("27,000.50") == Decimal("27000.50")
    assert field.clean(" 1 250.5 ") == Decimal("1250.5")
    assert field.clean("27000.00") == Decimal("27000.00")
    assert field.clean("") is None
    for wrong in ("1,2,3", "27,00", "12.345,6"):
        with pytest.raises(ValidationError, match="Enter a number"):
            field.clean(wrong)


def test_the_deal_form_shows_the_amount_grouped_and_takes_it_back(client, rep):
    deal = make_deal(make_customer(rep), amount=Decimal("27000.00"))
    page = client.get(reverse("crm:deal_update", args=[deal.pk])).content.decode()
    assert re.search(r'name="amount" value="27,000"', page)
    assert "27000.00" not in page
    assert isinstance(DealForm.base_fields["amount"].widget, AmountInput)


def test_a_deal_without_an_amount_shows_a_dash_not_a_dash_and_a_currency(client, rep, settings):
    customer = make_customer(rep)
    with_amount = make_deal(customer, title="Priced", amount=Decimal("27000"))
    without = make_deal(customer, title="Unpriced", amount=None)
    currency = settings.CRM_CURRENCY
    listed = client.get(reverse("crm:deal_list")).content.decode()
    assert f">27,000 {currency}</td>" in listed
    assert 'data-label="Amount">—</td>' in listed and f"— {currency}" not in listed
    board = client.get(reverse("crm:deal_board")).content.decode()
    assert f"<strong>27,000 {currency}" in board
    assert '<span class="muted" title="No amount yet">—</span>' in board and f"— {currency}" not in board
    page = client.get(reverse("crm:deal_detail", args=[without.pk])).content.decode()
    assert "<dd>—</dd>" in page and f"— {currency}" not in page
    page = client.get(reverse("crm:deal_detail", args=[with_amount.pk])).content.decode()
    assert f"<dd>27,000.00 {currency}</dd>" in page


# The 404 page
# ---------------------------------------------------------------------------------------------------------


def test_a_rep_on_a_manager_page_gets_a_404_in_the_layout_that_says_where_to_go(client, rep):
    response = client.get(reverse("crm:custom_field_list"))
    assert response.status_code == 404
    body = response.content.decode()
    assert "<nav" in body and "This page is not here" in body and "Where to go from here:" in body
    assert f'href="{reverse("crm:workspace")}"' in body and f'href="{reverse("crm:customer_list")}"' in body
    assert "some pages are for managers only" in body


def test_the_404_page_is_in_chinese_for_a_chinese_user(client, rep):
    User.objects.filter(pk=rep.pk).update(language=ZH)
    response = client.get(reverse("crm:customer_detail", args=[999_999_999]))
    assert response.status_code == 404
    body = response.content.decode()
    assert "找不到此页面" in body and "您可以前往：" in body
    assert "This page is not here" not in body and "Where to go from here" not in body


def test_the_404_page_asks_a_visitor_to_sign_in_in_their_language(client):
    response = client.get("/crm/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "This page is not here" in body and "you need to sign in" in body
    client.cookies["django_language"] = ZH
    body = client.get("/crm/no-such-page/").content.decode()
    assert "找不到此页面" in body and "This page is not here" not in body


# The picker without JavaScript
# ---------------------------------------------------------------------------------------------------------


def test_the_customer_picker_links_to_the_customer_search_without_javascript(client, rep):
    body = client.get(reverse("crm:deal_create")).content.decode()
    search = reverse("crm:customer_list")
    link = f'<noscript><p class="help"><a href="{search}">Find it in the list</a></p></noscript>'
    assert link in body
    assert 'role="combobox"' in body and f'hx-get="{reverse("crm:customer_options")}?field=customer"' in body
    # The search page it leads to finds the customer by what would have been typed.
    make_customer(rep, name="Nordlicht GmbH", phone="0351/4695316")
    found = client.get(reverse("crm:customer_list"), {"q": "nordlicht"}).content.decode()
    assert "Nordlicht GmbH" in found
    User.objects.filter(pk=rep.pk).update(language=ZH)
    body = client.get(reverse("crm:deal_create")).content.decode()
    assert link.replace("Find it in the list", "在列表中查找") in body
