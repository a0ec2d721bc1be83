"""Custom fields in forms: the definition form (managers and admins), and the fields a record's form gains,
one per active custom field of its record type (``cf_<key>``), after its own."""

import json
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.pickers import StaffPicker, staff_from_text
from accounts.text import is_record_id, storable_text
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import fields_of, required_here
from crm.models import PipelineStage

Kind = CustomField.Kind
Entity = CustomField.Entity
MAX_OPTIONS = 200
OPTION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


# Definitions
# ---------------------------------------------------------------------------------------------------------


def choices_text(choices: list[dict[str, str]]) -> str:
    """A field's options as the definition form shows them, one a line."""
    return "\n".join(" | ".join(filter(None, (c["key"], c.get("en", ""), c.get("zh", "")))) for c in choices)


class ChoicesField(forms.CharField):
    """The options of a choice field, one a line: ``key | English | 中文``; "English" alone or
    "key | English" will do too (a missing key is made from the English)."""

    widget = forms.Textarea(attrs={"rows": 5})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=20_000, **kwargs)

    def to_python(self, value: Any) -> list[dict[str, str]]:
        lines = [line for line in super().to_python(value).splitlines() if line.strip()]
        if len(lines) > MAX_OPTIONS:
            raise ValidationError(_("List at most %(limit)d options."), params={"limit": MAX_OPTIONS})
        return [_option(number, line) for number, line in enumerate(lines, start=1)]


def _option(number: int, line: str) -> dict[str, str]:
    parts = [part.strip() for part in line.split("|")]
    if len(parts) > 3:
        raise ValidationError(
            _("Line %(line)d: write key | English | Chinese, with at most two “|”."), params={"line": number}
        )
    if len(parts) == 1:  # the English label alone
        parts = ["", *parts]
    key, english, chinese = [*parts, "", ""][:3]
    if key and not OPTION_KEY.fullmatch(key):
        raise ValidationError(
            _("Line %(line)d: a key is letters, digits, “_” and “-” (at most 40), e.g. house."),
            params={"line": number},
        )
    if not english or len(english) > 100 or len(chinese) > 100:
        raise ValidationError(
            _("Line %(line)d: each option needs an English label of at most 100 characters."),
            params={"line": number},
        )
    return {"key": key, "en": english, "zh": chinese}


class StageChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: PipelineStage) -> str:
        return str(obj) if obj.pipeline.is_default else f"{obj.pipeline} › {obj}"


class CustomFieldForm(forms.Form):
    """A custom field's definition; once the field exists, its record type and key are shown, not edited."""

    entity = forms.ChoiceField(label=_("Record type"), choices=Entity.choices)
    key = forms.CharField(
        label=_("Key"),
        max_length=40,
        validators=CustomField._meta.get_field("key").validators,
        help_text=_(
            "The field's name in imports, exports and the API, e.g. lot_number; it cannot change later."
        ),
    )
    label_en = forms.CharField(label=_("Label (English)"), max_length=100)
    label_zh = forms.CharField(label=_("Label (Chinese)"), max_length=100, required=False)
    kind = forms.ChoiceField(label=_("Type"), choices=Kind.choices, initial=Kind.TEXT)
    choices = ChoicesField(
        label=_("Options"),
        required=False,
        help_text=_("Choice types only. One option a line: key | English label | Chinese label."),
    )
    required = forms.BooleanField(label=_("Required"), required=False)
    required_from_stage = StageChoiceField(
        label=_("Required from stage"),
        queryset=PipelineStage.objects.none(),
        required=False,
        empty_label=_("Always"),
        help_text=_(
            "Deal fields only: required once a deal reaches this stage (choosing one makes it required)."
        ),
    )
    help_en = forms.CharField(label=_("Help text (English)"), max_length=300, required=False)
    help_zh = forms.CharField(label=_("Help text (Chinese)"), max_length=300, required=False)
    order = forms.IntegerField(
        label=_("Order"),
        min_value=0,
        max_value=32767,
        required=False,
        help_text=_("Forms show the fields by this number, smallest first."),
    )

    def __init__(self, *args: Any, definition: CustomField | None = None, **kwargs: Any) -> None:
        if definition is not None:
            kwargs["initial"] = _initial(definition)
        super().__init__(*args, **kwargs)
        self.definition = definition
        self.fields["required_from_stage"].queryset = (
            PipelineStage.objects.exclude(kind=PipelineStage.Kind.LOST)
            .select_related("pipeline")
            .order_by("-pipeline__is_default", "pipeline__name", "order")
        )
        if definition is not None:
            self.fields["entity"].disabled = self.fields["key"].disabled = True
            self.fields["key"].help_text = CustomField._meta.get_field("key").help_text
            if definition.entity != Entity.DEAL:
                del self.fields["required_from_stage"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("entity") != Entity.DEAL:
            data["required_from_stage"] = None
        elif data.get("required_from_stage") is not None:
            data["required"] = True
        kind_has_options = data.get("kind") in (Kind.CHOICE, Kind.MULTI_CHOICE)
        if kind_has_options and "choices" in data and not data["choices"]:
            self.add_error("choices", _("List the options, one a line."))
        return data

    def definition_fields(self) -> dict[str, Any]:
        """What ``field_create`` takes (entity, key and the definition)."""
        data = dict(self.cleaned_data)
        if data.get("order") is None:
            data.pop("order", None)
        return data

    def changed_fields(self) -> dict[str, Any]:
        """What ``field_update`` takes: the definition without the record type and key."""
        return {k: v for k, v in self.definition_fields().items() if k not in ("entity", "key")}


def _initial(definition: CustomField) -> dict[str, Any]:
    names = ("entity", "key", "label_en", "label_zh", "kind", "required", "help_en", "help_zh", "order")
    initial = {name: getattr(definition, name) for name in names}
    initial["choices"] = choices_text(definition.choices or [])
    initial["required_from_stage"] = definition.required_from_stage_id
    return initial


# A record's values
# ---------------------------------------------------------------------------------------------------------


class CustomValueField(forms.Field):
    """One custom field's value in a record's form: read and checked by ``kinds.clean`` (the messages the
    API and imports give too), cleaned to the value as stored (None when empty)."""

    def __init__(self, definition: CustomField, *, user_ids: set[int] | None = None, **kwargs: Any) -> None:
        self.definition, self.user_ids = definition, user_ids
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        texts = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValidationError(_("Null characters are not allowed."), code="null_characters_not_allowed")
        return kinds.clean(self.definition, value, user_ids=self.user_ids)


class UserValueField(CustomValueField):
    """A user field's value, picked by typing (``StaffPicker``, never a list of the whole staff): anyone
    active on the staff, or the person the record names already (kept when they have left). Text typed but
    not picked (no JavaScript) counts when exactly one of them matches it."""

    def __init__(self, definition: CustomField, *, keep: int | None = None, **kwargs: Any) -> None:
        self.people = User.objects.filter(Q(is_active=True, is_service_account=False) | Q(pk=keep))
        super().__init__(definition, widget=StaffPicker("custom-user"), **kwargs)
        self.widget.queryset = self.people

    def to_python(self, value: Any) -> Any:
        text = "" if value is None else str(value).strip()
        if "\x00" in text:
            raise ValidationError(_("Null characters are not allowed."), code="null_characters_not_allowed")
        if text and not is_record_id(text):
            return staff_from_text(qs=self.people, text=storable_text(text)[:200]).pk
        allowed = set(self.people.filter(pk=int(text)).values_list("pk", flat=True)) if text else set()
        return kinds.clean(self.definition, text, user_ids=allowed)


def _widget(definition: CustomField) -> forms.Widget:
    kind = Kind(definition.kind)
    options = list(definition.choice_labels().items())
    empty = [("", "—")]
    widgets = {
        Kind.TEXT: lambda: forms.TextInput(attrs={"maxlength": kinds.TEXT_LIMITS[Kind.TEXT]}),
        Kind.LONG_TEXT: lambda: forms.Textarea(
            attrs={"rows": 3, "maxlength": kinds.TEXT_LIMITS[Kind.LONG_TEXT]}
        ),
        Kind.URL: lambda: forms.URLInput(attrs={"maxlength": kinds.TEXT_LIMITS[Kind.URL]}),
        Kind.EMAIL: lambda: forms.EmailInput(attrs={"maxlength": kinds.TEXT_LIMITS[Kind.EMAIL]}),
        Kind.INTEGER: lambda: forms.NumberInput(attrs={"step": "1"}),
        Kind.DECIMAL: lambda: forms.NumberInput(attrs={"step": "any"}),
        Kind.MONEY: lambda: forms.NumberInput(attrs={"step": "0.01", "min": "0"}),
        Kind.DATE: lambda: forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        Kind.YES_NO: lambda: forms.Select(choices=[*empty, ("yes", gettext("yes")), ("no", gettext("no"))]),
        Kind.CHOICE: lambda: forms.Select(choices=[*empty, *options]),
        Kind.MULTI_CHOICE: lambda: forms.CheckboxSelectMultiple(choices=options),
    }
    return widgets[kind]()


def _initial_value(definition: CustomField, stored: Any) -> Any:
    """A stored value as the field's widget shows it."""
    if definition.kind == Kind.YES_NO and isinstance(stored, bool):
        return "yes" if stored else "no"
    return kinds.typed(definition, stored)


def value_field(definition: CustomField, *, required: bool, stored: Any = None) -> CustomValueField:
    """The form field of ``definition``, showing ``stored`` (a user field keeps offering the person it
    names, even once they have left)."""
    kwargs: dict[str, Any] = {
        "required": required,
        "label": definition.label,
        "help_text": definition.help,
        "initial": _initial_value(definition, stored),
        "error_messages": {"required": gettext("Fill in %(field)s.") % {"field": definition.label}},
    }
    if definition.kind == Kind.USER:
        keep = stored if isinstance(stored, int) and not isinstance(stored, bool) else None
        return UserValueField(definition, keep=keep, **kwargs)
    return CustomValueField(definition, widget=_widget(definition), **kwargs)


class CustomFieldsForm(forms.Form):
    """A record's form that ends with one field per active custom field of ``custom_entity`` (in the
    fields' order), showing the values of ``record``. Required fields are required here; a deal field
    required from a stage on is when the deal's ``stage`` (its own, or the new deal's initial one) is at
    or after it. ``record_fields()`` gives the service the built-in fields plus ``custom``: the values
    that changed (an emptied field as None, which clears it)."""

    custom_entity = ""

    def __init__(
        self, *args: Any, record: Any = None, stage: PipelineStage | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.custom_record = record
        self.custom_definitions = fields_of(self.custom_entity) if self.custom_entity else []
        initial_stage = self.initial.get("stage")
        stage = (
            stage
            or getattr(record, "stage", None)
            or (initial_stage if hasattr(initial_stage, "pipeline_id") else None)
        )
        current = self._stored()
        for definition in self.custom_definitions:
            self.fields[definition.form_name] = value_field(
                definition, required=required_here(definition, stage), stored=current.get(definition.key)
            )

    def _stored(self) -> dict[str, Any]:
        return dict(getattr(self.custom_record, "custom", None) or {})

    @property
    def custom_bound_fields(self) -> list[forms.BoundField]:
        return [self[d.form_name] for d in self.custom_definitions]

    def custom_changes(self) -> dict[str, Any]:
        """key → new stored value (None: cleared) of the fields whose value the user changed."""
        current = self._stored()
        return {
            d.key: self.cleaned_data[d.form_name]
            for d in self.custom_definitions
            if d.form_name in self.cleaned_data and self.cleaned_data[d.form_name] != current.get(d.key)
        }

    def record_fields(self) -> dict[str, Any]:
        """The cleaned built-in fields, and ``custom`` (the changed values) when the record type has any."""
        names = {d.form_name for d in self.custom_definitions}
        data = {name: value for name, value in self.cleaned_data.items() if name not in names}
        if self.custom_definitions:
            data["custom"] = self.custom_changes()
        return data


class CustomValuesForm(CustomFieldsForm):
    """Only a record's custom fields (the ticket page's form, for tickets have no edit form).

    It carries the values as the page showed them (``seen``): a save sends only the fields the user
    changed from those, and refuses a field someone else changed meanwhile (showing its value now; a
    second save applies the user's knowingly), so concurrent edits never silently overwrite each other."""

    seen = forms.CharField(widget=forms.HiddenInput, required=False, max_length=200_000)

    def __init__(self, *args: Any, entity: str, **kwargs: Any) -> None:
        self.custom_entity = entity
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.fields["seen"].initial = json.dumps(dict(getattr(self.custom_record, "custom", None) or {}))

    def _stored(self) -> dict[str, Any]:
        """What the user saw (posted back), else the record as it is."""
        if self.is_bound:
            try:
                seen = json.loads(self.data.get("seen") or "")
            except (TypeError, ValueError):
                seen = None
            if isinstance(seen, dict):
                return seen
        return super()._stored()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        now = dict(getattr(self.custom_record, "custom", None) or {})
        seen = self._stored()
        changed = self.custom_changes()
        overwritten = [
            d for d in self.custom_definitions if d.key in changed and now.get(d.key) != seen.get(d.key)
        ]
        for definition in overwritten:
            shown = kinds.display(definition, now.get(definition.key)) or gettext("(empty)")
            message = gettext(
                "Someone else changed this field meanwhile; it is now “%(value)s”. Save again to replace it."
            )
            self.add_error(definition.form_name, message % {"value": shown})
        if overwritten:  # based on the values now, a second save applies the user's input knowingly
            rebased = dict(seen)
            for definition in overwritten:
                if definition.key in now:
                    rebased[definition.key] = now[definition.key]
                else:
                    rebased.pop(definition.key, None)
            self.data = self.data.copy()
            self.data["seen"] = json.dumps(rebased)
        return data
