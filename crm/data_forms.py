"""Forms of the data-quality pages (imports, duplicate review). They parse and validate; services write."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from crm import selectors
from crm.custom_fields.models import CustomField
from crm.data import imports
from crm.data.merge import CUSTOM_PREFIX, MERGE_FIELDS
from crm.models import Customer, ImportJob
from crm.text import interpolate_lazy


class ImportUploadForm(forms.Form):
    kind = forms.ChoiceField(
        label=_("What to import"), choices=ImportJob.Kind.choices, widget=forms.RadioSelect
    )
    file = forms.FileField(
        label=_("File"),
        help_text=interpolate_lazy(
            gettext_noop(
                "CSV (.csv) or Excel (.xlsx), up to %(mb)s MB. The first row holds the column names."
            ),
            {"mb": settings.CRM_IMPORT_MAX_BYTES // 1024 // 1024},
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,.tsv,.xlsx,.xlsm"}),
        error_messages={
            "required": _("Choose a file to upload."),
            "empty": _("The file is empty."),
        },
    )
    encoding = forms.ChoiceField(
        label=_("Text encoding (CSV only)"),
        choices=list(imports.ENCODINGS.items()),
        initial="auto",
        required=False,
        help_text=_("Leave on automatic unless the file came from an older Excel and shows garbled text."),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.CRM_IMPORT_MAX_BYTES:
            raise ValidationError(imports.too_large_message(upload.size))
        return upload


class ImportMappingForm(forms.Form):
    """One select per column of the file: which field it fills, or "ignore"."""

    date_order = forms.ChoiceField(
        label=_("Dates such as 3/1/2026 mean"),
        choices=ImportJob.DateOrder.choices,
        help_text=_("2026-03-01 and 01.03.2026 are always read the same way."),
    )

    def __init__(self, *args, job: ImportJob, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.job = job
        self.import_fields = imports.import_fields(job.kind)
        choices = [("", _("— ignore this column —"))] + [
            (f.name, f"{f.label}{' *' if f.required else ''}") for f in self.import_fields
        ]
        self.column_names = []
        for index, header in enumerate(job.headers):
            name = f"col_{index}"
            self.fields[name] = forms.ChoiceField(
                label=header, choices=choices, required=False, initial=job.mapping.get(str(index), "")
            )
            self.column_names.append(name)
        self.fields["date_order"].initial = job.date_order
        if not self.has_dates:
            self.fields["date_order"].required = False

    def columns(self) -> list[tuple[forms.BoundField, list[str]]]:
        """Each column's select with a few sample values from the preview (or nothing yet)."""
        samples = self.job.preview.get("sample", [])
        return [
            (self[name], [cells[index] for cells in samples if index < len(cells) and cells[index]])
            for index, name in enumerate(self.column_names)
        ]

    @property
    def has_dates(self) -> bool:
        """Only kinds with date fields ask how to read 3/1/2026."""
        return imports.has_date_fields(self.job.kind)

    def clean(self) -> dict:
        data = super().clean()
        chosen: dict[str, str] = {}
        for index, name in enumerate(self.column_names):
            field = data.get(name)
            if not field:
                continue
            if field in chosen.values():
                self.add_error(name, _("Another column already fills this field."))
            chosen[str(index)] = field
        missing = [str(f.label) for f in self.import_fields if f.required and f.name not in chosen.values()]
        if missing:
            raise ValidationError(_("Choose the column for: %(fields)s.") % {"fields": ", ".join(missing)})
        data["mapping"] = chosen
        data["date_order"] = data.get("date_order") or self.job.date_order
        return data


class ImportStartForm(forms.Form):
    mode = forms.ChoiceField(label=_("Existing records"), widget=forms.RadioSelect)
    scope = forms.TypedChoiceField(
        label=_("Rows with problems"),
        choices=[
            ("all", _("Import nothing if any row has a problem (all or nothing)")),
            ("valid", _("Import the valid rows and skip the others")),
        ],
        coerce=lambda value: value == "all",
        initial="all",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, job: ImportJob, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        modes = imports.modes_for(job.kind)
        self.fields["mode"].choices = [(m, ImportJob.Mode(m).label) for m in modes]
        self.fields["mode"].initial = job.mode if job.mode in modes else modes[-1]


class MergeForm(forms.Form):
    """Which record survives, and for each field whose value differs, which value to keep."""

    survivor = forms.TypedChoiceField(label=_("Keep the record"), coerce=int, widget=forms.RadioSelect)

    def __init__(self, *args, a: Customer, b: Customer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        pair = [(a.pk, f"#{a.pk}"), (b.pk, f"#{b.pk}")]
        self.fields["survivor"].choices = pair
        self.fields["survivor"].initial = a.pk
        self.rows = []
        # Form field (``cf_<key>``) → the merge's name for a custom field (``custom.<key>``).
        self.custom_names: dict[str, str] = {}
        for name in MERGE_FIELDS:
            field = Customer._meta.get_field(name)
            values = [_display(a, name), _display(b, name)]
            if getattr(a, field.attname) == getattr(b, field.attname):
                self.rows.append({"label": field.verbose_name, "values": values, "field": None})
                continue
            # Keep the filled value by default; when both are filled, the older record's.
            initial = b.pk if not getattr(a, field.attname) and getattr(b, field.attname) else a.pk
            self.fields[name] = forms.TypedChoiceField(
                label=field.verbose_name,
                choices=pair,
                coerce=int,
                initial=initial,
                required=False,
                empty_value=None,
                widget=forms.RadioSelect,
            )
            self.rows.append({"label": field.verbose_name, "values": values, "field": self[name]})
        self._custom_rows(a, b, pair)

    def _custom_rows(self, a: Customer, b: Customer, pair: list[tuple[int, str]]) -> None:
        """A row per active custom field either customer has a value for, after the built-in fields;
        where they differ, a radio picks the value (by default the filled one, else the older record's)."""
        mine, theirs = a.custom or {}, b.custom or {}
        if not (mine or theirs):
            return
        shown = selectors.custom_fields_shown(entity=CustomField.Entity.CUSTOMER, values=[mine, theirs])
        for key in shown.keys(mine, theirs):
            field = shown.fields.get(key)
            if field is None or not field.is_active:
                continue  # archived values stay with the survivor, or come from the merged record
            values = [shown.value(key, mine.get(key)), shown.value(key, theirs.get(key))]
            if mine.get(key) == theirs.get(key):
                self.rows.append({"label": field.label, "values": values, "field": None})
                continue
            self.fields[field.form_name] = forms.TypedChoiceField(
                label=field.label,
                choices=pair,
                coerce=int,
                initial=b.pk if key not in mine else a.pk,
                required=False,
                empty_value=None,
                widget=forms.RadioSelect,
            )
            self.custom_names[field.form_name] = f"{CUSTOM_PREFIX}{key}"
            self.rows.append({"label": field.label, "values": values, "field": self[field.form_name]})

    def choices(self) -> dict[str, int]:
        """Field → id of the customer whose value to keep; a field left unanswered keeps the survivor's
        (a custom field: the survivor's, or the merged record's where the survivor has none)."""
        chosen = {name: self.cleaned_data[name] for name in MERGE_FIELDS if self.cleaned_data.get(name)}
        for form_name, name in self.custom_names.items():
            if self.cleaned_data.get(form_name):
                chosen[name] = self.cleaned_data[form_name]
        return chosen


def _display(customer: Customer, name: str) -> str:
    value = getattr(customer, name)
    field = Customer._meta.get_field(name)
    if field.choices:
        return str(dict(field.flatchoices).get(value, value))
    return "" if value is None else str(value)
