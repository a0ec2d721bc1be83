"""Custom fields on the web: the definition pages (managers only), one field per type in the record forms,
required and required-from-stage, archive / rename / retype without losing values, the detail pages."""

import html
import re
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import translation

from accounts.models import User
from accounts.web import form_errors_from
from crm import forms, services
from crm.custom_fields import services as custom_fields
from crm.custom_fields.models import CustomField
from crm.models import Activity, Customer, Deal, Ticket
from tests.factories import (
    make_admin,
    make_agent,
    make_customer,
    make_deal,
    make_manager,
    make_ticket,
    make_user,
    stage,
)

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
HOUSING = [{"key": "house", "en": "House", "zh": "住宅"}, {"key": "flat", "en": "Flat", "zh": "公寓"}]


@pytest.fixture
def manager():
    return make_manager(username="mia", first_name="Mia")


@pytest.fixture
def rep(client):
    user = make_user(username="rita", first_name="Rita")
    client.force_login(user)
    return user


def make_field(entity: str = "customer", key: str = "lot", kind: str = "text", **definition) -> CustomField:
    actor = definition.pop("actor", None) or make_manager()
    definition.setdefault("label_en", key.replace("_", " ").capitalize())
    if kind in ("choice", "multi_choice"):
        definition.setdefault("choices", HOUSING)
    return custom_fields.field_create(actor=actor, entity=entity, key=key, kind=kind, **definition)


def _errors(response, form_name: str = "form") -> dict:
    return response.context[form_name].errors


def _customer_payload(**overrides):
    return {"name": "Acme GmbH", "kind": "company", "source": "website", "language": "en", **overrides}


def _deal_payload(customer, **overrides):
    return {
        "customer": customer.pk,
        "title": "Relaunch",
        "kind": "new",
        "stage": stage().pk,
        "source": "website",
        **overrides,
    }


# The definition pages
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_role", [make_user, make_agent])
def test_definition_pages_are_hidden_from_reps_and_agents(client, make_role):
    field = make_field()
    client.force_login(make_role())
    for name, args in (
        ("crm:custom_field_list", []),
        ("crm:custom_field_create", []),
        ("crm:custom_field_update", [field.pk]),
    ):
        assert client.get(reverse(name, args=args)).status_code == 404
        assert client.get(reverse(name, args=args), headers=HTMX).status_code == 404
    for name in ("crm:custom_field_update", "crm:custom_field_archive", "crm:custom_field_restore"):
        response = client.post(reverse(name, args=[field.pk]), {"label_en": "Hacked", "kind": "integer"})
        assert response.status_code == 404
    field.refresh_from_db()
    assert field.is_active and field.label_en == "Lot" and field.kind == "text"
    assert "Custom fields" not in client.get(reverse("crm:workspace")).content.decode()


@pytest.mark.parametrize("make_role", [make_manager, make_admin])
def test_managers_and_admins_reach_the_pages_from_the_menu(client, make_role):
    client.force_login(make_role())
    body = client.get(reverse("crm:workspace")).content.decode()
    assert f'href="{reverse("crm:custom_field_list")}"' in body
    assert client.get(reverse("crm:custom_field_list")).status_code == 200
    assert client.get(reverse("crm:custom_field_create")).status_code == 200


def test_manager_creates_a_choice_field_with_options_as_lines(client, manager):
    client.force_login(manager)
    response = client.post(
        reverse("crm:custom_field_create"),
        {
            "entity": "customer",
            "key": "housing",
            "label_en": "Housing",
            "label_zh": "住房",
            "kind": "choice",
            "choices": "house | House | 住宅\n\nflat | Flat\nTiny home",
            "required": "on",
            "help_en": "Where they live",
        },
        headers=HTMX,
    )
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("crm:custom_field_list")
    field = CustomField.objects.get(key="housing")
    assert field.choices == [
        {"key": "house", "en": "House", "zh": "住宅"},
        {"key": "flat", "en": "Flat", "zh": ""},
        {"key": "tiny_home", "en": "Tiny home", "zh": ""},
    ]
    assert field.required and field.label_zh == "住房" and field.order > 0


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"key": "Lot Number"}, "key", "Use lower-case letters"),
        ({"key": "lot"}, "key", "already a field with this key"),
        ({"key": ""}, "key", "required"),
        ({"label_en": ""}, "label_en", "required"),
        ({"label_en": "x" * 10_000}, "label_en", "at most 100 characters"),
        ({"label_en": "Lot\x00"}, "label_en", "Null characters"),
        ({"kind": "choice", "choices": ""}, "choices", "List the options"),
        ({"kind": "choice", "choices": "a | b | c | d"}, "choices", "at most two"),
        ({"kind": "choice", "choices": "a|A\na|Again"}, "choices", "“a” twice"),
        ({"kind": "choice", "choices": "bad key! | Label"}, "choices", "a key is letters"),
        ({"kind": "spreadsheet"}, "kind", "Select a valid choice"),
        ({"entity": "invoice"}, "entity", "Select a valid choice"),
        ({"order": "99999999"}, "order", "less than or equal to"),
    ],
)
def test_bad_definitions_are_refused_with_field_messages(client, manager, overrides, field, message):
    make_field(key="lot")
    client.force_login(manager)
    data = {"entity": "customer", "key": "size", "label_en": "Size", "kind": "text", **overrides}
    response = client.post(reverse("crm:custom_field_create"), data, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert message in " ".join(_errors(response)[field])
    assert f'id="id_{field}-error"' in body
    assert CustomField.objects.count() == 1


def test_required_from_stage_is_for_deal_fields_only(client, manager):
    client.force_login(manager)
    proposal = stage(order=30)
    base = {"key": "po", "label_en": "PO number", "kind": "text", "required_from_stage": proposal.pk}
    client.post(reverse("crm:custom_field_create"), {**base, "entity": "customer"})
    client.post(reverse("crm:custom_field_create"), {**base, "entity": "deal"})
    on_customers, on_deals = (
        CustomField.objects.get(entity="customer"),
        CustomField.objects.get(entity="deal"),
    )
    assert on_customers.required_from_stage is None and not on_customers.required
    assert on_deals.required_from_stage == proposal and on_deals.required
    edit_page = client.get(reverse("crm:custom_field_update", args=[on_customers.pk])).content.decode()
    assert 'name="required_from_stage"' not in edit_page


def test_list_groups_the_fields_by_record_type_with_value_counts(client, manager):
    lot = make_field(key="lot")
    make_field(entity="deal", key="po", label_en="PO number")
    rep = make_user()
    make_customer(rep, custom={"lot": "A1"})
    make_customer(rep, custom={"lot": "B2"})
    make_customer(rep)
    client.force_login(manager)
    body = client.get(reverse("crm:custom_field_list")).content.decode()
    for heading in ("Customers", "Deals", "Tickets", "Activities"):
        assert f">{heading} <a" in body
    assert "PO number" in body and "<code>po</code>" in body
    row = body[body.index(reverse("crm:custom_field_update", args=[lot.pk])) :]
    assert '<td class="num">2</td>' in row[: row.index("</tr>")]


def test_key_and_record_type_cannot_change(client, manager):
    field = make_field(key="lot")
    client.force_login(manager)
    client.post(
        reverse("crm:custom_field_update", args=[field.pk]),
        {"entity": "deal", "key": "other", "label_en": "Lot number", "kind": "text", "order": "5"},
    )
    field.refresh_from_db()
    assert (field.entity, field.key, field.label_en, field.order) == ("customer", "lot", "Lot number", 5)


def test_rename_keeps_the_values(client, manager):
    field = make_field(key="lot", label_en="Lot")
    customer = make_customer(make_user(), custom={"lot": "A-17"})
    client.force_login(manager)
    response = client.post(
        reverse("crm:custom_field_update", args=[field.pk]),
        {"label_en": "Parcel", "label_zh": "地块", "kind": "text", "order": field.order},
    )
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.custom == {"lot": "A-17"}
    body = client.get(customer.get_absolute_url()).content.decode()
    assert "<dt>Parcel</dt>" in body and "A-17" in body


def test_archive_keeps_values_hides_the_field_and_restore_brings_it_back(client, manager):
    field = make_field(key="lot")
    customer = make_customer(manager, custom={"lot": "A-17"})
    client.force_login(manager)
    response = client.post(reverse("crm:custom_field_archive", args=[field.pk]))
    assert response.status_code == 302
    field.refresh_from_db()
    assert not field.is_active
    assert "archived" in client.get(reverse("crm:custom_field_list")).content.decode()
    edit = client.get(reverse("crm:customer_update", args=[customer.pk]))
    assert "cf_lot" not in edit.context["form"].fields
    assert "A-17" not in client.get(customer.get_absolute_url()).content.decode()
    # Editing the customer meanwhile keeps the archived value.
    client.post(
        reverse("crm:customer_update", args=[customer.pk]), _customer_payload(name="Renamed", version=1)
    )
    customer.refresh_from_db()
    assert customer.name == "Renamed" and customer.custom == {"lot": "A-17"}
    client.post(reverse("crm:custom_field_restore", args=[field.pk]))
    assert "A-17" in client.get(customer.get_absolute_url()).content.decode()


def test_a_type_change_that_values_would_not_fit_is_refused_listing_the_records(client, manager):
    field = make_field(key="lot")
    rep = make_user()
    bad = make_customer(rep, name="Letters Ltd", custom={"lot": "abc"})
    make_customer(rep, name="Digits Ltd", custom={"lot": "12"})
    client.force_login(manager)
    response = client.post(
        reverse("crm:custom_field_update", args=[field.pk]),
        {"label_en": "Lot", "kind": "integer", "order": field.order},
        headers=HTMX,
    )
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert "1 records hold values that would not fit" in " ".join(_errors(response)["kind"])
    assert f'<a href="{bad.get_absolute_url()}">Letters Ltd</a>' in body
    assert "abc" in body and "Enter a whole number." in body and "Digits Ltd" not in body
    field.refresh_from_db()
    assert field.kind == "text"
    assert Customer.objects.get(pk=bad.pk).custom == {"lot": "abc"}


def test_a_refused_change_names_how_many_more_records_there_are(client, manager, monkeypatch):
    monkeypatch.setattr(custom_fields, "MISFITS_SHOWN", 1)
    field = make_field(key="housing", kind="choice")
    rep = make_user()
    for _ in range(3):
        make_customer(rep, custom={"housing": "flat"})
    client.force_login(manager)
    response = client.post(
        reverse("crm:custom_field_update", args=[field.pk]),
        {"label_en": "Housing", "kind": "choice", "choices": "house | House", "order": field.order},
        headers=HTMX,
    )
    body = response.content.decode()
    assert "… and 2 more records." in body
    assert body.count("<li><a href=") == 1


def test_a_type_change_converts_the_stored_values(client, manager):
    field = make_field(key="lot")
    customer = make_customer(make_user(), custom={"lot": "12"})
    client.force_login(manager)
    response = client.post(
        reverse("crm:custom_field_update", args=[field.pk]),
        {"label_en": "Lot", "kind": "integer", "order": field.order},
    )
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.custom == {"lot": 12}
    assert CustomField.objects.get(pk=field.pk).kind == "integer"


# Record forms: every type, good and bad
# ---------------------------------------------------------------------------------------------------------

TYPES = [
    # kind, good input, stored, bad input, message
    ("text", "Lot 7", "Lot 7", "x" * 10_000, "Keep it to 200 characters"),
    ("text", " trimmed ", "trimmed", "a\x00b", "Null characters are not allowed."),
    ("long_text", "line one\nline two", "line one\nline two", "x" * 5001, "Keep it to 5000 characters"),
    ("integer", "12", 12, "abc", "Enter a whole number."),
    ("integer", "-3", -3, "1.5", "Enter a whole number."),
    ("integer", "0", 0, "1e309", "This number is too large."),
    ("decimal", "12.5", "12.5", "NaN", "Enter a number such as 12.5."),
    ("money", "1250.5", "1250.50", "-1", "An amount cannot be negative."),
    ("money", "0", "0.00", "12.345", "Enter an amount such as 1250 or 1250.50."),
    ("date", "2026-03-01", "2026-03-01", "0000-01-01", "Enter a date as YYYY-MM-DD."),
    ("date", "2030-12-31", "2030-12-31", "9999-12-31", "Enter a date between"),
    ("date", "2026-02-28", "2026-02-28", "2026-02-30", "Enter a date as YYYY-MM-DD."),
    ("yes_no", "yes", True, "maybe", "Answer yes or no."),
    ("yes_no", "no", False, "\x00", "Null characters are not allowed."),
    ("choice", "flat", "flat", "castle", "is not one of the choices"),
    ("multi_choice", ["flat", "house"], ["house", "flat"], ["house", "castle"], "is not one of the choices"),
    ("url", "example.com/docs", "https://example.com/docs", "not a web address", "Enter a web address"),
    ("email", "a@example.com", "a@example.com", "not-an-address", "Enter an e-mail address"),
]


@pytest.mark.parametrize(("kind", "good", "stored", "bad", "message"), TYPES)
def test_every_type_through_the_customer_form(client, rep, kind, good, stored, bad, message):
    make_field(key="extra", kind=kind)
    response = client.post(reverse("crm:customer_create"), _customer_payload(cf_extra=bad), headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert message in " ".join(_errors(response)["cf_extra"])
    assert 'id="id_cf_extra-error"' in body
    assert not Customer.objects.exists()
    response = client.post(reverse("crm:customer_create"), _customer_payload(cf_extra=good))
    assert response.status_code == 302
    assert Customer.objects.get().custom == {"extra": stored}


def _people(client, text: str, field: str = "cf_buddy") -> str:
    """What a user field's type-ahead offers for ``text`` (the options the picker asks for)."""
    url = reverse("accounts:staff_options", args=["custom-user"])
    return client.get(url, {"field": field, f"{field}_search": text}, headers=HTMX).content.decode()


def test_a_user_field_offers_active_staff_and_refuses_others(client, rep):
    make_field(key="buddy", kind="user")
    colleague = make_user(first_name="Carl", last_name="Colleague")
    gone = make_user(first_name="Gina", last_name="Gone")
    User.objects.filter(pk=gone.pk).update(is_active=False)
    assert f'data-value="{colleague.pk}"' in _people(client, "carl")
    assert "Gina Gone" not in _people(client, "gina") and "No one matches." in _people(client, "gina")
    for bad, message in [
        (str(gone.pk), "Choose one of the CRM's users."),
        ("999999999", "Choose one of the CRM's users."),
        ("9" * 30, "No one matches"),
        ("abc", "No one matches “abc”."),
    ]:
        response = client.post(reverse("crm:customer_create"), _customer_payload(cf_buddy=bad), headers=HTMX)
        assert message in " ".join(_errors(response)["cf_buddy"])
    # Typed without picking (no JavaScript): the name counts when it names one active person.
    response = client.post(reverse("crm:customer_create"), _customer_payload(cf_buddy_search="Gina Gone"))
    assert "No one matches “Gina Gone”." in " ".join(_errors(response)["cf_buddy"])
    client.post(reverse("crm:customer_create"), _customer_payload(cf_buddy_search="carl colleague"))
    assert Customer.objects.get().custom == {"buddy": colleague.pk}
    Customer.objects.all().delete()
    client.post(reverse("crm:customer_create"), _customer_payload(cf_buddy=str(colleague.pk)))
    assert Customer.objects.get().custom == {"buddy": colleague.pk}


def test_a_user_field_is_a_type_ahead_picker_not_a_list_of_the_staff(client, rep):
    make_field(key="buddy", kind="user")
    people = [make_user(first_name="Person", last_name=f"Number {i:02d}") for i in range(30)]
    page = client.get(reverse("crm:customer_create")).content.decode()
    field = str(client.get(reverse("crm:customer_create")).context["form"]["cf_buddy"])
    assert 'role="combobox"' in field and 'name="cf_buddy_search"' in field and "<option" not in field
    assert not any(f'value="{person.pk}"' in page or str(person) in page for person in people)
    assert reverse("accounts:staff_options", args=["custom-user"]) in field
    # A typed search finds the person (and caps the list).
    found = _people(client, "number 07")
    assert f'data-value="{people[7].pk}"' in found and "Person Number 07" in found
    assert found.count('role="option" id=') == 1
    assert _people(client, "person").count('role="option" id=') == 12


def test_a_user_no_longer_active_stays_chosen_when_other_fields_are_edited(client, rep):
    make_field(key="buddy", kind="user")
    leaver = make_user(first_name="Lee")
    customer = make_customer(rep, custom={"buddy": leaver.pk})
    User.objects.filter(pk=leaver.pk).update(is_active=False)
    page = client.get(reverse("crm:customer_update", args=[customer.pk])).content.decode()
    assert f'name="cf_buddy" value="{leaver.pk}"' in page
    assert f'value="{leaver}" name="cf_buddy_search"' in page
    payload = _customer_payload(name="Renamed", version=1, cf_buddy=str(leaver.pk))
    assert client.post(reverse("crm:customer_update", args=[customer.pk]), payload).status_code == 302
    customer.refresh_from_db()
    assert customer.name == "Renamed" and customer.custom == {"buddy": leaver.pk}


def test_widgets_fit_the_types_in_field_order_after_the_built_in_fields(client, rep):
    for order, (key, kind) in enumerate(
        [("notes_long", "long_text"), ("size", "integer"), ("since", "date"), ("vip", "yes_no"),
         ("housing", "choice"), ("tags", "multi_choice"), ("site", "url"), ("mail", "email")]
    ):  # fmt: skip
        make_field(key=key, kind=kind, order=order, help_en=f"Help for {key}")
    form = client.get(reverse("crm:customer_create")).context["form"]
    names = list(form.fields)
    assert names[-8:] == [
        "cf_notes_long", "cf_size", "cf_since", "cf_vip", "cf_housing", "cf_tags", "cf_site", "cf_mail"
    ]  # fmt: skip
    assert names.index("cf_notes_long") > names.index("language")
    html = {name: str(form[name]) for name in names if name.startswith("cf_")}
    assert "<textarea" in html["cf_notes_long"]
    assert 'type="number"' in html["cf_size"] and 'type="date"' in html["cf_since"]
    assert '<option value="" selected>—</option>' in html["cf_vip"] and 'value="no"' in html["cf_vip"]
    assert "<select" in html["cf_housing"] and html["cf_tags"].count('type="checkbox"') == 2
    assert 'type="url"' in html["cf_site"] and 'type="email"' in html["cf_mail"]
    assert form["cf_size"].help_text == "Help for size"


def test_an_optional_yes_no_can_stay_empty_and_an_emptied_field_is_cleared(client, rep):
    make_field(key="vip", kind="yes_no")
    make_field(key="lot")
    client.post(reverse("crm:customer_create"), _customer_payload(cf_vip="", cf_lot="A1"))
    customer = Customer.objects.get()
    assert customer.custom == {"lot": "A1"}
    client.post(
        reverse("crm:customer_update", args=[customer.pk]),
        _customer_payload(version=1, cf_vip="no", cf_lot=""),
    )
    customer.refresh_from_db()
    assert customer.custom == {"vip": False}


def test_the_edit_form_shows_the_stored_values(client, rep):
    make_field(key="since", kind="date")
    make_field(key="share", kind="decimal")
    make_field(key="vip", kind="yes_no")
    make_field(key="tags", kind="multi_choice")
    customer = make_customer(
        rep, custom={"since": "2024-05-06", "share": "0.25", "vip": True, "tags": ["flat"]}
    )
    form = client.get(reverse("crm:customer_update", args=[customer.pk])).context["form"]
    assert 'value="2024-05-06"' in str(form["cf_since"]) and 'value="0.25"' in str(form["cf_share"])
    assert '<option value="yes" selected>' in str(form["cf_vip"])
    assert 'value="flat" id="id_cf_tags_1" checked' in str(form["cf_tags"])


def test_a_required_field_must_be_filled_in(client, rep):
    make_field(key="lot", required=True, label_en="Lot number")
    form = client.get(reverse("crm:customer_create")).context["form"]
    assert form.fields["cf_lot"].required
    response = client.post(reverse("crm:customer_create"), _customer_payload(cf_lot="  "), headers=HTMX)
    assert _errors(response)["cf_lot"] == ["Fill in Lot number."]
    assert 'class="field field-invalid field-required"' in response.content.decode()
    assert not Customer.objects.exists()


def test_service_errors_on_custom_values_land_on_their_form_fields():
    form = forms.ActivityForm({"kind": "note", "subject": "x"})
    form.fields["cf_lot"] = forms.forms.CharField(required=False)
    assert form.is_valid()
    form_errors_from(ValidationError({"custom.lot": ["Too long."], "custom.gone": ["No such field."]}), form)
    assert form.errors["cf_lot"] == ["Too long."]
    assert form.non_field_errors() == ["No such field."]


# Deals: required, required from a stage, the board
# ---------------------------------------------------------------------------------------------------------


def test_a_required_deal_field_on_create_and_edit(client, rep):
    make_field(entity="deal", key="po", label_en="PO number", required=True)
    customer = make_customer(rep)
    response = client.post(reverse("crm:deal_create"), _deal_payload(customer), headers=HTMX)
    assert _errors(response)["cf_po"] == ["Fill in PO number."]
    assert not Deal.objects.exists()
    client.post(reverse("crm:deal_create"), _deal_payload(customer, cf_po="PO-1"))
    deal = Deal.objects.get()
    assert deal.custom == {"po": "PO-1"}
    response = client.post(
        reverse("crm:deal_update", args=[deal.pk]),
        {**_deal_payload(customer, cf_po=""), "version": 1},
        headers=HTMX,
    )
    assert _errors(response)["cf_po"] == ["Fill in PO number."]
    assert Deal.objects.get().custom == {"po": "PO-1"}


def test_required_from_a_stage_on_create_edit_and_board_move(client, rep):
    proposal = stage(order=30)
    make_field(entity="deal", key="po", label_en="PO number", required=True, required_from_stage=proposal)
    customer = make_customer(rep)
    # Created in the first stage, the field may stay empty; created in the stage, it must be filled in.
    assert not client.get(reverse("crm:deal_create")).context["form"].fields["cf_po"].required
    response = client.post(
        reverse("crm:deal_create"), _deal_payload(customer, stage=proposal.pk), headers=HTMX
    )
    assert _errors(response)["cf_po"] == ["Fill in PO number."]
    assert client.post(reverse("crm:deal_create"), _deal_payload(customer)).status_code == 302
    deal = Deal.objects.get()
    # The board refuses the move into the stage while the field is empty, with the reason as a message.
    response = client.post(
        reverse("crm:deal_move", args=[deal.pk]),
        {"stage": proposal.pk, "version": deal.version, "from": "board"},
        headers=HTMX,
    )
    body = response.content.decode()
    assert response.status_code == 200 and 'id="deal-board"' in body
    assert "Fill in PO number before moving the deal to Proposal." in body
    assert "HX-Trigger" not in response
    deal.refresh_from_db()
    assert deal.stage == stage(order=10)
    # Won from the detail page: refused the same way (the won stage is after the proposal).
    response = client.post(
        reverse("crm:deal_move", args=[deal.pk]), {"stage": stage("won").pk, "version": 1}, follow=True
    )
    assert "Fill in PO number before moving the deal to Won." in response.content.decode()
    assert Deal.objects.get().status == Deal.Status.OPEN
    # Filled in, the move goes through; then the edit form requires the field.
    services.custom_values_set(obj=deal, actor=rep, changes={"po": "PO-9"}, via="web")
    client.post(reverse("crm:deal_move", args=[deal.pk]), {"stage": proposal.pk, "version": 2})
    deal.refresh_from_db()
    assert deal.stage == proposal
    edit = client.get(reverse("crm:deal_update", args=[deal.pk]))
    assert edit.context["form"].fields["cf_po"].required
    response = client.post(
        reverse("crm:deal_update", args=[deal.pk]),
        {**_deal_payload(customer, cf_po=""), "version": deal.version},
        headers=HTMX,
    )
    assert _errors(response)["cf_po"] == ["Fill in PO number."]


# Tickets and activities
# ---------------------------------------------------------------------------------------------------------


def test_ticket_create_and_the_ticket_pages_fields_form(client, rep, no_auto_assign):
    make_field(entity="ticket", key="serial", label_en="Serial number")
    make_field(entity="ticket", key="units", kind="integer", label_en="Units")
    customer = make_customer(rep)
    payload = {"customer": customer.pk, "subject": "Broken", "priority": "normal", "category": "question",
               "channel": "phone", "cf_serial": "SN-1", "cf_units": "x"}  # fmt: skip
    response = client.post(reverse("crm:ticket_create"), payload, headers=HTMX)
    assert "Enter a whole number." in " ".join(_errors(response)["cf_units"])
    assert not Ticket.objects.exists()
    client.post(reverse("crm:ticket_create"), {**payload, "cf_units": "3"})
    ticket = Ticket.objects.get()
    assert ticket.custom == {"serial": "SN-1", "units": 3}
    page = client.get(ticket.get_absolute_url()).content.decode()
    assert "<dt>Serial number</dt>" in page and reverse("crm:ticket_fields", args=[ticket.pk]) in page
    url = reverse("crm:ticket_fields", args=[ticket.pk])
    response = client.post(url, {"cf_serial": "SN-1", "cf_units": "many"}, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and 'id="ticket-fields"' in body
    assert "Enter a whole number." in body
    response = client.post(url, {"cf_serial": "", "cf_units": "4"}, headers=HTMX)
    assert response["HX-Redirect"] == ticket.get_absolute_url()
    ticket.refresh_from_db()
    assert ticket.custom == {"units": 4}


def test_no_ticket_fields_no_fields_form(client, rep):
    ticket = make_ticket(make_customer(rep))
    assert 'id="ticket-fields"' not in client.get(ticket.get_absolute_url()).content.decode()


def test_activities_take_their_fields_and_the_timeline_shows_them(client, rep):
    make_field(entity="activity", key="minutes", kind="integer", label_en="Minutes")
    customer = make_customer(rep)
    data = {"customer": customer.pk, "kind": "call", "subject": "Intro call", "cf_minutes": "lots"}
    response = client.post(reverse("crm:activity_create"), data, headers=HTMX)
    assert response.status_code == 200
    assert "Enter a whole number." in response.content.decode()
    assert not Activity.objects.exists()
    response = client.post(reverse("crm:activity_create"), {**data, "cf_minutes": "25"}, headers=HTMX)
    assert "activityLogged" in response["HX-Trigger"]
    assert Activity.objects.get().custom == {"minutes": 25}
    page = client.get(customer.get_absolute_url()).content.decode()
    assert "· Minutes: 25" in page and 'name="cf_minutes"' in page


def test_activity_fields_on_the_deal_page(client, rep):
    make_field(entity="activity", key="minutes", kind="integer", label_en="Minutes")
    deal = make_deal(make_customer(rep))
    services.activity_log(
        actor=rep, customer=deal.customer, deal=deal, kind="call", subject="Call", custom={"minutes": 5}
    )
    page = client.get(deal.get_absolute_url()).content.decode()
    assert "· Minutes: 5" in page


# Detail pages and access
# ---------------------------------------------------------------------------------------------------------


def _labelled_fields():
    make_field(key="housing", kind="choice", label_en="Housing", label_zh="住房")
    make_field(key="vip", kind="yes_no", label_en="VIP", label_zh="贵宾")
    make_field(key="budget", kind="money", label_en="Budget", label_zh="预算")
    make_field(key="empty_one", label_en="Never filled", label_zh="从未填写")
    make_field(entity="deal", key="po", label_en="PO number", label_zh="订单号")
    make_field(entity="ticket", key="serial", label_en="Serial number", label_zh="序列号")


def test_detail_pages_show_the_labelled_values(client, rep, no_auto_assign):
    _labelled_fields()
    customer = make_customer(rep, custom={"housing": "flat", "vip": True, "budget": "1250000.5"})
    deal = make_deal(customer, custom={"po": "PO-77"})
    ticket = make_ticket(customer, custom={"serial": "SN-5"})
    body = client.get(customer.get_absolute_url()).content.decode()
    assert "Custom fields" in body
    assert '<dt>Housing</dt><dd class="prewrap">Flat</dd>' in body
    assert '<dt>VIP</dt><dd class="prewrap">yes</dd>' in body
    assert "1,250,000.50" in body and "Never filled" not in body
    assert (
        '<dt>PO number</dt><dd class="prewrap">PO-77</dd>'
        in client.get(deal.get_absolute_url()).content.decode()
    )
    assert "<dt>Serial number</dt>" in client.get(ticket.get_absolute_url()).content.decode()


def test_detail_pages_show_the_labelled_values_in_chinese(client, rep, no_auto_assign):
    _labelled_fields()
    User.objects.filter(pk=rep.pk).update(language="zh-hans")
    customer = make_customer(rep, custom={"housing": "flat", "vip": False})
    deal = make_deal(customer, custom={"po": "PO-77"})
    ticket = make_ticket(customer, custom={"serial": "SN-5"})
    body = client.get(customer.get_absolute_url()).content.decode()
    assert '<dt>住房</dt><dd class="prewrap">公寓</dd>' in body and "<dt>贵宾</dt>" in body
    assert "Housing" not in body and "从未填写" not in body
    with translation.override("zh-hans"):
        assert f'<dd class="prewrap">{translation.gettext("no")}</dd>' in body
    assert "<dt>订单号</dt>" in client.get(deal.get_absolute_url()).content.decode()
    assert "<dt>序列号</dt>" in client.get(ticket.get_absolute_url()).content.decode()
    form = client.get(reverse("crm:customer_update", args=[customer.pk])).context["form"]
    assert form.fields["cf_housing"].label == "住房"
    assert ("flat", "公寓") in form.fields["cf_housing"].widget.choices


def test_a_rep_cannot_see_another_reps_values(client, rep):
    make_field(key="lot")
    make_field(entity="deal", key="po")
    other = make_customer(make_user(), name="Other Co", custom={"lot": "Secret lot"})
    other_deal = make_deal(other, custom={"po": "Secret PO"})
    assert client.get(other.get_absolute_url()).status_code == 404
    assert client.get(other_deal.get_absolute_url()).status_code == 404
    assert client.get(reverse("crm:customer_update", args=[other.pk])).status_code == 404
    assert "Secret" not in client.get(reverse("crm:customer_list")).content.decode()
    response = client.post(reverse("crm:ticket_fields", args=[make_ticket(other).pk]), {"cf_x": "1"})
    assert response.status_code == 404


def test_amounts_in_money_fields_keep_their_cents(client, rep):
    make_field(key="budget", kind="money")
    client.post(reverse("crm:customer_create"), _customer_payload(cf_budget="99.9"))
    assert Customer.objects.get().custom == {"budget": "99.90"}
    assert Decimal(Customer.objects.get().custom["budget"]) == Decimal("99.90")


def test_a_conflicting_edit_keeps_the_input_and_saving_again_applies_it(client, rep):
    make_field(key="lot")
    make_field(key="size", kind="integer")
    customer = make_customer(rep, custom={"lot": "A1", "size": 1})
    services.customer_update(
        customer=customer, actor=make_manager(), data={"custom": {"lot": "B2"}}, version=1
    )
    payload = _customer_payload(name="Mine", version=1, cf_lot="A1", cf_size="5")
    response = client.post(reverse("crm:customer_update", args=[customer.pk]), payload, headers=HTMX)
    body = response.content.decode()
    assert "Someone else saved this customer" in body and "B2" in body
    assert 'name="cf_size" value="5"' in body
    assert Customer.objects.get(pk=customer.pk).custom == {"lot": "B2", "size": 1}
    payload["version"] = 2
    assert client.post(reverse("crm:customer_update", args=[customer.pk]), payload).status_code == 302
    customer.refresh_from_db()
    assert customer.name == "Mine" and customer.custom == {"lot": "A1", "size": 5}


def test_two_people_editing_a_tickets_fields_never_silently_overwrite_each_other(client, rep):
    import json

    from crm.models import Ticket
    from crm.services import custom_values_set

    make_field(entity="ticket", key="serial", label_en="Serial number")
    make_field(entity="ticket", key="site", label_en="Site")
    ticket = make_ticket(make_customer(rep), custom={"serial": "SN-1", "site": "Berlin"})
    seen = json.dumps(ticket.custom)  # what the page showed Rita
    assert 'name="seen"' in client.get(ticket.get_absolute_url()).content.decode()
    custom_values_set(obj=ticket, actor=rep, changes={"serial": "SN-2"}, via="web")  # someone else, meanwhile
    url = reverse("crm:ticket_fields", args=[ticket.pk])
    # Rita changes only the site: the other person's serial number stays.
    client.post(url, {"seen": seen, "cf_serial": "SN-1", "cf_site": "Hamburg"})
    assert Ticket.objects.get().custom == {"serial": "SN-2", "site": "Hamburg"}
    # Rita changes the serial number the other person changed: refused, with its value now.
    response = client.post(url, {"seen": seen, "cf_serial": "SN-9", "cf_site": "Hamburg"}, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "it is now “SN-2”" in body
    assert Ticket.objects.get().custom["serial"] == "SN-2"
    rebased = re.search(r'name="seen" value="([^"]*)"', body).group(1)
    client.post(url, {"seen": html.unescape(rebased), "cf_serial": "SN-9", "cf_site": "Hamburg"})
    assert Ticket.objects.get().custom == {"serial": "SN-9", "site": "Hamburg"}  # applied knowingly
