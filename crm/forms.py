"""Forms parse and validate input; the views hand ``cleaned_data`` to a service. No form saves a model."""

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.formats import get_format, number_format
from django.utils.translation import gettext_lazy as _

from accounts import dates
from accounts.models import User
from accounts.pickers import RecordPicker, StaffChoiceField, StaffFilterField
from accounts.text import is_record_id
from crm import normalize
from crm.campaigns.fields import CampaignChoiceField
from crm.custom_field_forms import CustomFieldsForm
from crm.custom_fields.lists import CustomFilterForm
from crm.models import (
    MONEY,
    Activity,
    Customer,
    Deal,
    ForecastCategory,
    PipelineStage,
    Source,
    Ticket,
    WebhookSubscription,
)

MAX_AMOUNT = Decimal("999999999999.99")


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, **kwargs) -> None:
        super().__init__(format="%Y-%m-%d", **kwargs)


class CustomerPicker(RecordPicker):
    """Customers among the user's, by name, e-mail or phone (``crm:customer_options``)."""

    fallback_url_name = "crm:customer_list"
    options_url_name = "crm:customer_options"
    placeholder = _("Type a name, e-mail or phone")


class CustomerChoiceField(forms.ModelChoiceField):
    """A customer among ``queryset`` (the user's), picked by typing (``CustomerPicker``)."""

    widget = CustomerPicker

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault(
            "error_messages",
            {
                "required": _("Choose a customer: type part of the name and pick it from the list."),
                "invalid_choice": _("Choose one of your customers from the list."),
            },
        )
        super().__init__(queryset=Customer.objects.none(), label=_("Customer"), **kwargs)

    def _set_queryset(self, queryset) -> None:
        super()._set_queryset(queryset.select_related(None).only("id", "name"))
        self.widget.queryset = self.queryset

    queryset = property(forms.ModelChoiceField._get_queryset, _set_queryset)

    def to_python(self, value: Any) -> Any:
        text = "" if value is None else str(value)
        if text and not is_record_id(text):
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


class AmountInput(forms.TextInput):
    """An amount as people read it, "27,000" or "27,000.50" in the locale's grouping (a number input
    would show "27000.00"); ``AmountField`` reads it back, grouped or not."""

    def __init__(self) -> None:
        super().__init__(attrs={"inputmode": "decimal", "autocomplete": "off", "class": "input-amount"})

    def format_value(self, value: Any) -> str | None:
        if value in (None, ""):
            return None
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            return str(value)
        if not amount.is_finite():  # "NaN", "Infinity": shown back as typed, with the field's error
            return str(value)
        places = 0 if amount == amount.to_integral_value() else 2
        return number_format(amount, places, use_l10n=True, force_grouping=True)


class AmountField(forms.DecimalField):
    """A money amount: digits with an optional decimal part; the locale's thousands separator is read only
    where it groups by three ("27,000.50"), so "1,2,3" stays a mistake rather than becoming 123."""

    def to_python(self, value: Any) -> Decimal | None:
        if isinstance(value, str):
            text = value.strip().replace("\u00a0", "").replace(" ", "")
            group, point = get_format("THOUSAND_SEPARATOR"), get_format("DECIMAL_SEPARATOR")
            grouped = rf"\d{{1,3}}(?:{re.escape(group)}\d{{3}})+(?:{re.escape(point)}\d*)?"
            if group and re.fullmatch(grouped, text):
                text = text.replace(group, "")
            if point != ".":
                text = text.replace(point, ".")
            value = text
        return super().to_python(value)


def amount_field(**kwargs) -> forms.DecimalField:
    return AmountField(
        label=_("Amount"),
        min_value=Decimal("0"),
        max_value=MAX_AMOUNT,
        **MONEY,
        localize=False,
        widget=AmountInput(),
        error_messages={"invalid": _("Enter an amount such as 1250 or 1250.50.")},
        **kwargs,
    )


# Customers
# ---------------------------------------------------------------------------------------------------------


class VersionedForm(CustomFieldsForm):
    """A form for a record with optimistic locking: its hidden ``version`` is the one the page was loaded
    at, and goes to the service apart from the record's fields."""

    def record_fields(self) -> dict[str, Any]:
        """The record's fields as the create and update services take them (the version goes apart)."""
        return {name: value for name, value in super().record_fields().items() if name != "version"}

    def rebase(self, *, version: int) -> None:
        """After a conflicting edit: the user's input stays in the form, now based on the stored
        ``version``, so that saving again deliberately applies it over the other user's changes."""
        self.data = self.data.copy()
        self.data["version"] = version


class CustomerForm(VersionedForm):
    custom_entity = "customer"
    name = forms.CharField(label=_("Name"), max_length=200)
    kind = forms.ChoiceField(label=_("Kind"), choices=Customer.Kind.choices, initial=Customer.Kind.COMPANY)
    email = forms.EmailField(label=_("E-mail"), required=False, max_length=254)
    phone = forms.CharField(label=_("Phone"), required=False, max_length=40)
    industry = forms.CharField(label=_("Industry"), required=False, max_length=100)
    city = forms.CharField(label=_("City"), required=False, max_length=100)
    segment = forms.ChoiceField(
        label=_("Segment"), choices=[("", "—"), *Customer.Segment.choices], required=False
    )
    source = forms.ChoiceField(label=_("Source"), choices=Source.choices, initial=Source.OTHER)
    language = forms.ChoiceField(label=_("Language"), choices=User.Language.choices, initial=User.Language.EN)
    owner = StaffChoiceField("owner", label=_("Owner"), required=False)
    campaign = CampaignChoiceField(
        label=_("Campaign (first touch)"), help_text=_("The campaign this customer came from.")
    )
    # The version the edit page was loaded at (optimistic locking); a new customer has none.
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)

    def __init__(self, *args, user: User, duplicate_check_url: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["campaign"].offer(self.initial.get("campaign"))
        if not user.is_manager:
            del self.fields["owner"]
        if duplicate_check_url:
            # While typing, htmx asks whether this customer already exists (see customer_duplicates_view).
            for name in ("name", "email", "phone"):
                self.fields[name].widget.attrs.update(
                    {
                        "hx-get": duplicate_check_url,
                        "hx-trigger": "input changed delay:400ms",
                        "hx-include": "#customer-form [name=name], #customer-form [name=email], "
                        "#customer-form [name=phone], #customer-form [name=exclude]",
                        "hx-target": "#duplicate-warning",
                        "hx-swap": "outerHTML",
                        "hx-sync": "closest form:abort",
                    }
                )

    def clean_phone(self) -> str:
        phone = self.cleaned_data["phone"].strip()
        if phone and not normalize.phone_is_valid(phone):
            raise ValidationError(
                _("This is not a valid phone number. Include the country code, e.g. +49 30 1234567.")
            )
        return phone


class DuplicateCheckForm(forms.Form):
    """What the customer form sends while it is typed in (name, e-mail, phone), to look for duplicates."""

    name = forms.CharField(required=False, max_length=200)
    email = forms.CharField(required=False, max_length=254)
    phone = forms.CharField(required=False, max_length=40)
    exclude = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


class CustomerFilterForm(CustomFilterForm):
    custom_entity = "customer"
    SORTS = {
        "name": ("name", "id"),
        "-name": ("-name", "-id"),
        "created": ("created_at", "id"),
        "-created": ("-created_at", "-id"),
        "status": ("status", "name", "id"),
    }
    q = forms.CharField(label=_("Search"), required=False, max_length=100)
    status = forms.ChoiceField(
        label=_("Status"), choices=[("", _("All statuses")), *Customer.Status.choices], required=False
    )
    owner = StaffFilterField("owner-filter", label=_("Owner"), required=False)
    source = forms.ChoiceField(
        label=_("Source"), choices=[("", _("All sources")), *Source.choices], required=False
    )
    segment = forms.ChoiceField(
        label=_("Segment"), choices=[("", _("All segments")), *Customer.Segment.choices], required=False
    )
    campaign = CampaignChoiceField(label=_("Campaign"), empty_label=_("All campaigns"))
    sort = forms.ChoiceField(choices=[(key, key) for key in SORTS], required=False)

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not user.is_manager:
            del self.fields["owner"]


class CustomerStatusForm(forms.Form):
    status = forms.ChoiceField(
        label=_("Status"),
        choices=[(Customer.Status.ACTIVE, _("Active customer")), (Customer.Status.CHURNED, _("Churned"))],
    )
    reason = forms.CharField(label=_("Churn reason"), max_length=200, required=False)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("status") == Customer.Status.CHURNED and not (data.get("reason") or "").strip():
            self.add_error("reason", _("Say why the customer left."))
        return data


# Deals
# ---------------------------------------------------------------------------------------------------------


class DealForm(VersionedForm):
    custom_entity = "deal"
    customer = CustomerChoiceField()
    title = forms.CharField(label=_("Title"), max_length=200)
    amount = amount_field(required=False)
    kind = forms.ChoiceField(label=_("Kind"), choices=Deal.Kind.choices, initial=Deal.Kind.NEW)
    stage = forms.ModelChoiceField(label=_("Stage"), queryset=PipelineStage.objects.none())
    probability = forms.IntegerField(
        label=_("Probability override %"),
        required=False,
        min_value=0,
        max_value=100,
        help_text=_("Leave empty to use the stage's probability."),
    )
    forecast_category = forms.ChoiceField(
        label=_("Forecast category"),
        choices=[("", _("From the stage")), *ForecastCategory.choices],
        required=False,
        help_text=_("Commit, best case, pipeline or omitted; empty uses the stage's category."),
    )
    source = forms.ChoiceField(label=_("Source"), choices=Source.choices, initial=Source.OTHER)
    campaign = CampaignChoiceField(
        label=_("Campaign (last touch)"),
        help_text=_("Left empty on a new deal: the campaign that last touched the customer."),
    )
    expected_close_date = dates.DateField(label=_("Expected close date"), required=False, widget=DateInput())
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)

    def __init__(self, *args, customers, stages, editing: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["campaign"].offer(self.initial.get("campaign"))
        self.fields["customer"].queryset = customers
        self.fields["stage"].queryset = stages
        if editing:
            # Stage changes go through the board or the won/lost actions, which keep the stage history.
            del self.fields["stage"]
            self.fields["version"].required = True


class DealMoveForm(forms.Form):
    stage = forms.ModelChoiceField(label=_("Stage"), queryset=PipelineStage.objects.none())
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
    lost_reason = forms.CharField(label=_("Lost reason"), max_length=200, required=False)

    def __init__(self, *args, stages, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["stage"].queryset = stages

    def clean(self) -> dict:
        data = super().clean()
        stage = data.get("stage")
        if (
            stage is not None
            and stage.kind == PipelineStage.Kind.LOST
            and not (data.get("lost_reason") or "").strip()
        ):
            self.add_error("lost_reason", _("Say why the deal was lost."))
        return data


class DealFilterForm(CustomFilterForm):
    custom_entity = "deal"
    q = forms.CharField(label=_("Search"), required=False, max_length=100)
    status = forms.ChoiceField(
        label=_("Status"), choices=[("", _("All")), *Deal.Status.choices], required=False
    )
    stage = forms.ModelChoiceField(
        label=_("Stage"), queryset=PipelineStage.objects.none(), required=False, empty_label=_("All stages")
    )
    owner = StaffFilterField("owner-filter", label=_("Owner"), required=False)
    campaign = CampaignChoiceField(label=_("Campaign"), empty_label=_("All campaigns"))
    forecast_category = forms.ChoiceField(
        label=_("Forecast category"),
        choices=[("", _("All categories")), *ForecastCategory.choices],
        required=False,
    )

    def __init__(self, *args, user: User, stages, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["stage"].queryset = stages
        if not user.is_manager:
            del self.fields["owner"]


# Tickets
# ---------------------------------------------------------------------------------------------------------


class TicketFilterForm(CustomFilterForm):
    """The ticket list's search and custom-field filters (the queue and status are its tabs)."""

    custom_entity = "ticket"
    q = forms.CharField(label=_("Search"), required=False, max_length=100)


class TicketForm(CustomFieldsForm):
    custom_entity = "ticket"
    customer = CustomerChoiceField()
    subject = forms.CharField(label=_("Subject"), max_length=200)
    description = forms.CharField(
        label=_("Description"), required=False, max_length=20000, widget=forms.Textarea
    )
    priority = forms.ChoiceField(
        label=_("Priority"), choices=Ticket.Priority.choices, initial=Ticket.Priority.NORMAL
    )
    category = forms.ChoiceField(label=_("Category"), choices=Ticket.Category.choices)
    channel = forms.ChoiceField(label=_("Channel"), choices=Ticket.Channel.choices)
    assignee = StaffChoiceField("agent", label=_("Assignee"), required=False)

    def __init__(self, *args, customers, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["customer"].queryset = customers


class TicketReplyForm(forms.Form):
    body = forms.CharField(
        label=_("Reply"),
        max_length=20000,
        widget=forms.Textarea(attrs={"rows": 4}),
        error_messages={"required": _("Write a message.")},
    )
    public = forms.TypedChoiceField(
        label=_("Visibility"),
        choices=[("1", _("Public reply to the customer")), ("0", _("Internal note"))],
        coerce=lambda v: v == "1",
        initial="1",
        widget=forms.RadioSelect,
    )


class TicketStatusForm(forms.Form):
    status = forms.ChoiceField(label=_("Status"), choices=Ticket.Status.choices)


class TicketAssignForm(forms.Form):
    assignee = StaffChoiceField("assignee", label=_("Assignee"), required=False)


# Activities and tasks
# ---------------------------------------------------------------------------------------------------------


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and timezone.is_naive(value):
        return timezone.make_aware(value)
    return value


class ActivityForm(CustomFieldsForm):
    custom_entity = "activity"
    kind = forms.ChoiceField(
        label=_("Kind"), choices=Activity.Kind.choices, initial=Activity.Kind.CALL, widget=forms.RadioSelect
    )
    subject = forms.CharField(label=_("Subject"), max_length=200)
    notes = forms.CharField(
        label=_("Notes"), required=False, max_length=20000, widget=forms.Textarea(attrs={"rows": 3})
    )
    due_at = dates.DateTimeField(label=_("Due"), required=False, widget=DateTimeInput())
    follow_up = forms.CharField(
        label=_("Follow-up task"),
        required=False,
        max_length=200,
        help_text=_("Optional: schedule the next step in the same go."),
    )
    follow_up_due = dates.DateField(label=_("Follow-up due"), required=False, widget=DateInput())

    def clean_due_at(self):
        return _aware(self.cleaned_data["due_at"])

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == Activity.Kind.TASK and not data.get("due_at"):
            self.add_error("due_at", _("A task needs a due date."))
        if data.get("kind") != Activity.Kind.TASK:
            data["due_at"] = None
        if data.get("follow_up_due") and not (data.get("follow_up") or "").strip():
            self.add_error("follow_up", _("Name the follow-up task."))
        if (data.get("follow_up") or "").strip():
            due = data.get("follow_up_due") or (timezone.localdate() + timedelta(days=2))
            data["follow_up_due_at"] = timezone.make_aware(datetime.combine(due, time(9, 0)))
        return data

    def activity_fields(self) -> dict[str, Any]:
        """What ``activity_log_with_follow_up`` takes from the form (the follow-up's due time, not day)."""
        data = self.cleaned_data
        fields = {name: data[name] for name in ("kind", "subject", "notes", "due_at", "follow_up")}
        custom = {"custom": self.custom_changes()} if self.custom_definitions else {}
        return {**fields, "follow_up_due_at": data.get("follow_up_due_at"), **custom}


class ErasePersonalDataForm(forms.Form):
    """Confirms an erasure: the manager types the customer's name exactly."""

    confirm_name = forms.CharField(label=_("Type the customer's name to confirm"), max_length=200)

    def __init__(self, *args, customer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.customer = customer

    def clean_confirm_name(self) -> str:
        value = self.cleaned_data["confirm_name"].strip()
        if value != self.customer.name.strip():
            raise ValidationError(_("This is not the customer's name."))
        return value


# Webhooks
# ---------------------------------------------------------------------------------------------------------


class WebhookForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    url = forms.URLField(
        label=_("URL"), max_length=500, assume_scheme="https", help_text=_("Where the events are POSTed.")
    )
    events = forms.MultipleChoiceField(
        label=_("Events"), choices=WebhookSubscription.Event.choices, widget=forms.CheckboxSelectMultiple
    )
    is_active = forms.BooleanField(label=_("Active"), required=False, initial=True)
