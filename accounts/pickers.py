"""Type-ahead pickers (``templates/crm/_combobox.html``): the widget that renders only the chosen record, and
the people pickers (owners, assignees, a person's numbers) with their form fields. The CRM's customer
picker builds on the same widget (``crm.forms.CustomerPicker``)."""

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.selectors import STAFF_KINDS, staff_of_kind, staff_search
from accounts.text import is_record_id, storable_text

# A picker shows this many matches; "keep typing" says there are more.
PICKER_OPTIONS = 12
# The name of the picker's field, which names its options' ids.
# A custom field's is ``cf_<key>`` (a key of up to 40 letters, digits and underscores).
PICKER_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


class RecordPicker(forms.Widget):
    """A type-ahead picker (``crm/_combobox.html``): it renders the chosen record only, never the list (a
    manager may see 100 000 customers or hundreds of people); the options come from ``options_url``."""

    template_name = "crm/widgets/record_picker.html"
    # The options view, and its URL arguments (a people picker's kind).
    options_url_name = ""
    options_url_args: tuple[str, ...] = ()
    queryset: Any = User.objects.none()
    label_fields: tuple[str, ...] = ("name",)
    fallback_url_name = ""
    placeholder: Any = ""
    # Filters: picking nothing means everyone (shown as the first option).
    empty_label: Any = ""

    def label_of(self, record: Any) -> str:
        return str(record)

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        text = "" if value is None else str(value)
        label = ""
        picked = is_record_id(text)
        if picked:
            record = (
                self.queryset.select_related(None).filter(pk=int(text)).only("pk", *self.label_fields).first()
            )
            label = self.label_of(record) if record is not None else ""
        elif not isinstance(value, models.Model):
            label = text  # typed, not picked: shown again with the field's error
        context["widget"].update(
            value=text if picked and label else "",
            label=label,
            url=reverse(self.options_url_name, args=self.options_url_args),
            fallback_url=reverse(self.fallback_url_name) if self.fallback_url_name else "",
            required=self.is_required,
            placeholder=self.placeholder,
            empty_label=self.empty_label,
        )
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> str | None:
        return data.get(name) or None


class StaffPicker(RecordPicker):
    """People of one kind (``STAFF_KINDS``: owners, agents …) by name, user name or e-mail
    (``accounts:staff_options``)."""

    queryset = User.objects.none()
    label_fields = ("first_name", "last_name", "username")
    options_url_name = "accounts:staff_options"
    placeholder = _("Type a name")

    def __init__(self, kind: str, empty_label: Any = "", attrs: dict | None = None) -> None:
        super().__init__(attrs)
        self.kind = kind
        self.empty_label = empty_label
        self.options_url_args = (kind,)

    def value_from_datadict(self, data: Any, files: Any, name: str) -> str | None:
        return data.get(name) or (data.get(f"{name}_search") or "").strip() or None


class StaffChoiceField(forms.ModelChoiceField):
    """One person of a picker kind (``crm.STAFF_KINDS``), picked by typing (``StaffPicker``).

    Text typed but not picked (no JavaScript, or the list was never used) still counts when exactly one
    person of the kind matches it; otherwise the field says why it cannot choose.
    """

    def __init__(self, kind: str, **kwargs) -> None:
        spec = STAFF_KINDS[kind]
        kwargs.setdefault("error_messages", {"invalid_choice": _("Choose someone from the list.")})
        super().__init__(
            queryset=staff_of_kind(kind=kind),
            widget=StaffPicker(kind, empty_label=spec.empty_label),
            **kwargs,
        )

    def _set_queryset(self, queryset) -> None:
        super()._set_queryset(queryset)
        self.widget.queryset = self.queryset

    queryset = property(forms.ModelChoiceField._get_queryset, _set_queryset)

    def to_python(self, value: Any) -> Any:
        text = "" if value is None else str(value)
        if not text or is_record_id(text):
            return super().to_python(value)
        return self.from_text(storable_text(text)[:200])

    def from_text(self, text: str) -> Any:
        return staff_from_text(qs=self.queryset, text=text)


def staff_from_text(*, qs: QuerySet[User], text: str) -> User:
    """The one person among ``qs`` whose name, user name or e-mail matches ``text`` (typed in a people
    picker, not picked); a ValidationError says why when no one or several do."""
    found = list(staff_search(qs=qs, q=text)[:2])
    if not found:
        raise ValidationError(_("No one matches “%(text)s”."), code="invalid_choice", params={"text": text})
    if len(found) > 1:
        raise ValidationError(
            _("More than one person matches “%(text)s”: pick one from the list."),
            code="invalid_choice",
            params={"text": text},
        )
    return found[0]


class StaffFilterField(StaffChoiceField):
    """A list filter by person: the one picked, or everyone whose name matches the typed text (a
    queryset of people, for ``owner__in``)."""

    def from_text(self, text: str) -> Any:
        return staff_search(qs=self.queryset, q=text)
