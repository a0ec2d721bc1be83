"""The automation rule form: a name, a trigger with its settings, up to five conditions and five actions,
parsed into the JSON that ``crm.automation.services`` takes (ids, days and hours as ints).

Which inputs fit depends on the chosen trigger (its record type and settings), on each condition's field
and on each action's type, so the form is laid out from the values it is given: a re-render with the
current values (htmx on a change, the "Update the form" button without JavaScript) shows the inputs that
fit, and keeps the others in a collapsed group with hints. Every input arrives as text and is parsed in
``clean`` only when its row uses it, so an input the rule does not need never blocks a save.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Field as ModelField
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.text import is_record_id, storable_text
from crm.automation import rules
from crm.automation.events import ENTITY_OF
from crm.automation.models import AutomationRule
from crm.automation.selectors import Lookups, condition_field_label
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import entity_model
from crm.models import Activity, Customer

Trigger = AutomationRule.Trigger
Kind = CustomField.Kind
ROWS = 5  # condition and action rows a new rule offers (a rule made through the API may have more)
INVALID = object()
BLANK = ("", "—")

# The trigger settings each trigger reads (crm.automation.rules._params_problem, events.params_match).
TRIGGER_SETTINGS: dict[str, tuple[str, ...]] = {
    Trigger.DEAL_STAGE_CHANGED: ("stage",),
    Trigger.DEAL_IDLE: ("days", "stage"),
    Trigger.TICKET_SLA_NEAR: ("hours",),
    Trigger.SURVEY_ANSWERED: ("score_max",),
    Trigger.ACTIVITY_LOGGED: ("activity_kind",),
    Trigger.CUSTOMER_STATUS_CHANGED: ("status",),
}
SETTINGS = ("stage", "days", "hours", "score_max", "activity_kind", "status")
SETTING_HINTS = {
    "stage": gettext_lazy("Empty: any stage."),
    "days": gettext_lazy("From 1 to 365."),
    "hours": gettext_lazy("From 1 to 168 hours before the ticket's resolution is due."),
    "score_max": gettext_lazy("From 0 to 10: an answer at or below it fires the rule."),
    "activity_kind": gettext_lazy("Empty: any kind."),
    "status": gettext_lazy("The status the customer changes to; empty: any."),
}

# The comparisons that fit each kind of value.
ORDERED = ("eq", "ne", "gt", "gte", "lt", "lte", "empty", "set")
TEXTUAL = ("eq", "ne", "contains", "empty", "set")
CHOSEN = ("eq", "ne", "empty", "set")
CUSTOM_OPS = {
    **dict.fromkeys((Kind.INTEGER, Kind.DECIMAL, Kind.MONEY, Kind.DATE), ORDERED),
    **dict.fromkeys((Kind.TEXT, Kind.LONG_TEXT, Kind.URL, Kind.EMAIL), TEXTUAL),
    **dict.fromkeys((Kind.CHOICE, Kind.YES_NO, Kind.USER), CHOSEN),
    Kind.MULTI_CHOICE: ("eq", "ne", "contains", "empty", "set"),
}

# The inputs each action reads (crm.automation.actions).
ACTION_INPUTS: dict[str, tuple[str, ...]] = {
    "create_task": ("assignee", "days", "subject_en", "subject_zh"),
    "send_email": ("to", "subject_en", "subject_zh", "body_en", "body_zh"),
    "set_field": ("field", "value"),
    "set_stage": ("stage",),
    "set_owner": ("user",),
    "assign_ticket": ("user",),
    "add_note": ("text_en", "text_zh"),
    "fire_webhook": (),
}
ACTION_PARAMS = (
    "assignee", "days", "to", "subject_en", "subject_zh", "body_en", "body_zh", "text_en", "text_zh",
    "field", "value", "stage", "user",
)  # fmt: skip
TYPED_IN = set(ACTION_PARAMS) - {"assignee", "to"}  # a row with one of these filled in is not blank
ACTION_HINTS = {
    "days": gettext_lazy("Due this many days after the rule runs: 0 to 365."),
    "subject_en": gettext_lazy("Empty: the rule's name."),
    "field": gettext_lazy("The field the rule sets."),
    "user": gettext_lazy("Assigning a ticket: empty gives it to the least busy agent."),
}
MAX_LENGTHS = {"subject_en": 200, "subject_zh": 200, "body_en": 5000, "body_zh": 5000}
MAX_LENGTHS |= {"text_en": 5000, "text_zh": 5000, "value": 5000}
TEXTAREAS = {"body_en", "body_zh", "text_en", "text_zh"}


@dataclass(frozen=True)
class FieldSpec:
    """A field a condition tests or an action sets: its label, the comparisons that fit it, its options
    (None: typed in) and the parser from the input to the stored value (ValidationError if it won't do)."""

    label: str
    ops: tuple[str, ...]
    options: list[tuple[Any, str]] | None
    parse: Callable[[str], Any]


def _choose_one(options: Mapping[Any, Any], missing: str = "") -> Callable[[str], Any]:
    """A parser that accepts one of ``options``' keys (ids as ints); empty gives None unless ``missing``."""
    by_text = {str(key): key for key in options}

    def parse(text: str) -> Any:
        if not text:
            if missing:
                raise ValidationError(missing, code="required")
            return None
        if text not in by_text or (isinstance(by_text[text], int) and not is_record_id(text)):
            raise ValidationError(_("Choose one of the listed values."), code="invalid_choice")
        return by_text[text]

    return parse


def _number(text: str) -> int | str:
    try:
        number = Decimal(text.replace(",", "").replace(" ", "").replace("\u00a0", ""))
    except InvalidOperation:
        raise ValidationError(_("Enter a number such as 5000 or 12.5."), code="invalid") from None
    if not number.is_finite() or abs(number) >= 10**15:
        raise ValidationError(_("Enter a number such as 5000 or 12.5."), code="invalid")
    return int(number) if number == number.to_integral_value() else str(number.normalize())


def _plain_text(text: str) -> str:
    if len(text) > 200:
        raise ValidationError(_("Keep it to 200 characters."), code="max_length")
    return storable_text(text)


def _whole_number(low: int, high: int, missing: str = "") -> Callable[[str], int | None]:
    field = forms.IntegerField(min_value=low, max_value=high, required=bool(missing))
    field.error_messages["required"] = missing
    return field.clean


def _model_value(field: ModelField) -> Callable[[str], Any]:
    """A parser through the model field a set-field action writes (its type, choices and range)."""

    def parse(text: str) -> Any:
        value = field.clean(None if text == "" and field.null else text, None)
        if isinstance(value, Decimal):
            return str(value)
        return value.isoformat() if isinstance(value, date) else value

    return parse


def _custom_spec(field: CustomField, lookups: Lookups) -> FieldSpec:
    options: list[tuple[Any, str]] | None = None
    if field.is_choice:
        options = list(field.choice_labels().items())
    elif field.kind == Kind.YES_NO:
        options = [("true", _("yes")), ("false", _("no"))]
    elif field.kind == Kind.USER:
        options = list(lookups.users.items())
    users = set(lookups.users)
    return FieldSpec(
        field.label,
        CUSTOM_OPS[Kind(field.kind)],
        options,
        lambda text: kinds.clean(field, text, user_ids=users),
    )


def condition_specs(entity: str, lookups: Lookups) -> dict[str, FieldSpec]:
    """The fields a condition on ``entity`` may test: the built-in ones, then its active custom fields."""
    specs = {}
    for name, (path, how) in rules.CONDITION_FIELDS[entity].items():
        label = condition_field_label(entity=entity, name=name, lookups=lookups)
        if how == "number":
            specs[name] = FieldSpec(label, ORDERED, None, _number)
        elif how in ("stage", "user", "team"):
            names = {"stage": lookups.stages, "user": lookups.users, "team": lookups.teams}[how]
            specs[name] = FieldSpec(label, CHOSEN, list(names.items()), _choose_one(names))
        elif choices := entity_model(entity)._meta.get_field(path).choices:
            specs[name] = FieldSpec(label, CHOSEN, list(choices), _choose_one(dict(choices)))
        else:
            specs[name] = FieldSpec(label, TEXTUAL, None, _plain_text)
    for key, field in lookups.fields.get(entity, {}).items():
        specs[f"custom.{key}"] = _custom_spec(field, lookups)
    return specs


def settable_specs(entity: str, lookups: Lookups) -> dict[str, FieldSpec]:
    """The fields a set-field action on ``entity`` may write."""
    specs = {}
    model = entity_model(entity)
    for name in sorted(rules.SETTABLE[entity]):
        field = model._meta.get_field(name)
        options = list(field.choices) if field.choices else None
        specs[name] = FieldSpec(str(capfirst(field.verbose_name)), (), options, _model_value(field))
    for key, field in lookups.fields.get(entity, {}).items():
        specs[f"custom.{key}"] = _custom_spec(field, lookups)
    return specs


def action_choices(entity: str, settable: Mapping[str, FieldSpec]) -> dict[str, str]:
    """The actions that fit a rule on ``entity`` (crm.automation.rules._actions_problem)."""
    found = {}
    for kind, label in rules.ACTIONS.items():
        if (
            (kind == "set_stage" and entity not in ("deal", "activity"))
            or (kind == "assign_ticket" and entity != "ticket")
            or (kind == "set_owner" and entity == "activity")
            or (kind == "set_field" and not settable)
        ):
            continue
        found[kind] = str(capfirst(label))
    return found


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def rule_initial(rule: AutomationRule) -> dict[str, str]:
    """A rule's definition as the form's inputs."""
    values = {"name": rule.name, "trigger": rule.trigger}
    values |= {name: _as_text(value) for name, value in (rule.params or {}).items() if name in SETTINGS}
    for i, condition in enumerate(rule.conditions or []):
        for part in ("field", "op", "value"):
            values[f"conditions-{i}-{part}"] = _as_text(condition.get(part))
    for i, action in enumerate(rule.actions or []):
        values |= {f"actions-{i}-{key}": _as_text(value) for key, value in action.items()}
    return values


def _rows(values: Mapping[str, Any], prefix: str, most: int) -> int:
    used = [i for i in range(most) if f"{prefix}-{i}-{'type' if prefix == 'actions' else 'field'}" in values]
    return max(ROWS, used[-1] + 1 if used else 0)


class AutomationRuleForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=120)
    trigger = forms.ChoiceField(
        label=gettext_lazy("When"), choices=Trigger.choices, initial=Trigger.DEAL_CREATED
    )
    stage = forms.CharField(label=gettext_lazy("Stage"), required=False, max_length=20)
    days = forms.CharField(label=gettext_lazy("Days without activity"), required=False, max_length=20)
    hours = forms.CharField(label=gettext_lazy("Hours before it is due"), required=False, max_length=20)
    score_max = forms.CharField(label=gettext_lazy("Highest score"), required=False, max_length=20)
    activity_kind = forms.CharField(label=gettext_lazy("Activity kind"), required=False, max_length=20)
    status = forms.CharField(label=gettext_lazy("New status"), required=False, max_length=20)
    is_active = forms.BooleanField(
        label=gettext_lazy("Switch on now"),
        required=False,
        help_text=gettext_lazy("Otherwise the rule is saved switched off: try its dry run first."),
    )

    def __init__(
        self,
        data: Any = None,
        *,
        initial: Mapping[str, Any] | None = None,
        lookups: Lookups,
        creating: bool,
        refresh_url: str = "",
    ) -> None:
        super().__init__(data, initial=initial)
        if not creating:
            del self.fields["is_active"]
        self.lookups = lookups
        self.refresh_url = refresh_url
        values = self.data if self.is_bound else self.initial
        chosen = values.get("trigger")
        self.trigger = chosen if chosen in Trigger.values else Trigger.DEAL_CREATED
        self.entity = ENTITY_OF[self.trigger]
        self.condition_specs = condition_specs(self.entity, lookups)
        self.settable_specs = settable_specs(self.entity, lookups)
        self.action_choices = action_choices(self.entity, self.settable_specs)
        self.condition_count = _rows(values, "conditions", rules.MAX_CONDITIONS)
        self.action_count = _rows(values, "actions", rules.MAX_ACTIONS)
        self._setting_widgets()
        for i in range(self.condition_count):
            self._add_condition_row(i, values)
        for i in range(self.action_count):
            self._add_action_row(i, values)
        if refresh_url:
            self._refresh_on_change(refresh_url)

    # Layout
    # -----------------------------------------------------------------------------------------------------

    def _setting_widgets(self) -> None:
        selects = {
            "stage": [("", _("any stage")), *self.lookups.stages.items()],
            "activity_kind": [("", _("any kind")), *Activity.Kind.choices],
            "status": [("", _("any status")), *Customer.Status.choices],
        }
        numbers = {"days": (1, 365), "hours": (1, 168), "score_max": (0, 10)}
        for name in SETTINGS:
            field = self.fields[name]
            if name in selects:
                field.widget = forms.Select(choices=selects[name])
            else:
                low, high = numbers[name]
                field.widget = forms.NumberInput(attrs={"min": low, "max": high})
            field.help_text = str(SETTING_HINTS[name])
            if name not in TRIGGER_SETTINGS.get(self.trigger, ()):  # shown without JavaScript only
                triggers = [str(Trigger(t).label) for t, used in TRIGGER_SETTINGS.items() if name in used]
                field.help_text = _("For “%(triggers)s”.") % {"triggers": "”, “".join(triggers)}
                field.help_text += f" {SETTING_HINTS[name]}"

    def _add_condition_row(self, i: int, values: Mapping[str, Any]) -> None:
        spec = self.condition_specs.get(values.get(f"conditions-{i}-field") or "")
        names = [(name, field.label) for name, field in self.condition_specs.items()]
        ops = [(op, capfirst(rules.OPS[op])) for op in (spec.ops if spec else rules.OPS)]
        self.fields[f"conditions-{i}-field"] = _input(_("Field"), 100, forms.Select(choices=[BLANK, *names]))
        self.fields[f"conditions-{i}-op"] = _input(_("Comparison"), 20, forms.Select(choices=ops))
        self.fields[f"conditions-{i}-op"].initial = "eq"
        self.fields[f"conditions-{i}-value"] = _input(_("Value"), 500, _value_widget(spec))

    def _add_action_row(self, i: int, values: Mapping[str, Any]) -> None:
        prefix = f"actions-{i}-"
        spec = self.settable_specs.get(values.get(f"{prefix}field") or "")
        kind = values.get(f"{prefix}type") or ""
        used = ACTION_INPUTS.get(kind, ()) if kind in self.action_choices else ()
        roles = [
            (str(role), _("the least busy %(role)s") % {"role": str(role.label).lower()})
            for role in rules.TASK_ROLES
        ]
        selects = {
            "type": [BLANK, *self.action_choices.items()],
            "assignee": [("owner", _("the record's owner")), *roles],
            "to": [("customer", _("the customer")), ("owner", _("the record's owner"))],
            "field": [BLANK, *((name, field.label) for name, field in self.settable_specs.items())],
            "stage": [BLANK, *self.lookups.stages.items()],
            "user": [BLANK, *self.lookups.users.items()],
        }
        for name in ("type", *ACTION_PARAMS):
            if name in selects:
                widget: forms.Widget = forms.Select(choices=selects[name])
            elif name in TEXTAREAS:
                widget = forms.Textarea(attrs={"rows": 3})
            elif name == "value":
                widget = _value_widget(spec)
            else:
                widget = (
                    forms.NumberInput(attrs={"min": 0, "max": 365}) if name == "days" else forms.TextInput()
                )
            hint = str(ACTION_HINTS.get(name, "")) if name in used else _action_hint(name)
            self.fields[prefix + name] = _input(ACTION_LABELS[name], MAX_LENGTHS.get(name, 100), widget, hint)

    def _refresh_on_change(self, url: str) -> None:
        """The choices that change which inputs fit re-render the form with the current values (htmx)."""
        attrs = {
            "hx-get": url,
            "hx-include": "closest form",
            "hx-params": "not csrfmiddlewaretoken",
            "hx-target": "#rule-form",
            "hx-swap": "outerHTML",
        }
        names = ["trigger"]
        names += [f"conditions-{i}-field" for i in range(self.condition_count)]
        names += [f"actions-{i}-{name}" for i in range(self.action_count) for name in ("type", "field")]
        for name in names:
            self.fields[name].widget.attrs.update(attrs)

    def _shown(self, name: str) -> str:
        return str(self[name].value() or "")

    def setting_groups(self) -> dict[str, list[forms.BoundField]]:
        """The trigger settings the chosen trigger reads, and the others."""
        used = TRIGGER_SETTINGS.get(self.trigger, ())
        return {
            "used": [self[name] for name in used],
            "other": [self[name] for name in SETTINGS if name not in used],
        }

    def condition_rows(self) -> list[list[forms.BoundField]]:
        return [
            [self[f"conditions-{i}-{part}"] for part in ("field", "op", "value")]
            for i in range(self.condition_count)
        ]

    def action_rows(self) -> list[dict[str, Any]]:
        """Each action row: its type, the inputs its type reads, and the others (collapsed)."""
        rows = []
        for i in range(self.action_count):
            kind = self._shown(f"actions-{i}-type")
            used = ACTION_INPUTS.get(kind, ()) if kind in self.action_choices else ()
            other = [self[f"actions-{i}-{name}"] for name in ACTION_PARAMS if name not in used]
            rows.append({
                "type": self[f"actions-{i}-type"],
                "chosen": kind in self.action_choices,
                "inputs": [self[f"actions-{i}-{name}"] for name in used],
                "other": other,
                "other_errors": any(field.errors for field in other),
            })  # fmt: skip
        return rows

    # Parsing
    # -----------------------------------------------------------------------------------------------------

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        params = self._clean_settings()
        conditions = [self._clean_condition(i) for i in range(self.condition_count)]
        actions = [self._clean_action(i) for i in range(self.action_count)]
        actions = [action for action in actions if action is not None]
        if not actions and not any(self.has_error(f"actions-{i}-type") for i in range(self.action_count)):
            self.add_error("actions-0-type", _("Choose at least one action."))
        self.rule = {
            "name": storable_text(cleaned.get("name") or ""),
            "trigger": self.trigger,
            "params": params,
            "conditions": [condition for condition in conditions if condition is not None],
            "actions": actions,
        }
        return cleaned

    def rule_data(self) -> dict[str, Any]:
        """What ``rule_create`` / ``rule_update`` take (``is_active`` only when creating)."""
        if "is_active" in self.fields:
            return {**self.rule, "is_active": self.cleaned_data.get("is_active", False)}
        return dict(self.rule)

    def _text(self, name: str) -> str:
        return str(self.cleaned_data.get(name) or "")

    def _parse(self, name: str, parse: Callable[[str], Any], text: str | None = None) -> Any:
        """The input ``name`` (or ``text``) parsed, or INVALID with the message on the input."""
        try:
            return parse(self._text(name) if text is None else text)
        except ValidationError as exc:
            self.add_error(name, exc)
            return INVALID

    def _clean_settings(self) -> dict[str, Any]:
        parsers = {
            "stage": _choose_one(self.lookups.stages),
            "days": _whole_number(1, 365, _("Say after how many days without activity the rule fires.")),
            "hours": _whole_number(1, 168, _("Say how many hours before it is due the rule fires.")),
            "score_max": _whole_number(0, 10, _("Say the highest score that fires the rule.")),
            "activity_kind": _choose_one(dict(Activity.Kind.choices)),
            "status": _choose_one(dict(Customer.Status.choices)),
        }
        params = {}
        for name in TRIGGER_SETTINGS.get(self.trigger, ()):
            if self.has_error(name):
                continue
            value = self._parse(name, parsers[name])
            if value is not INVALID and value not in (None, ""):
                params[name] = value
        return params

    def _clean_condition(self, i: int) -> dict[str, Any] | None:
        names = [f"conditions-{i}-{part}" for part in ("field", "op", "value")]
        if any(self.has_error(name) for name in names):
            return None
        field, op, text = (self._text(name) for name in names)
        spec = self.condition_specs.get(field)
        if not field:
            if text:
                self.add_error(names[0], _("Choose a field, or clear this row."))
            return None
        if spec is None:
            self.add_error(names[0], _("Choose one of the listed fields."))
        elif op not in spec.ops:
            self.add_error(names[1], _("Choose one of the listed comparisons."))
        elif op in ("empty", "set"):
            return {"field": field, "op": op}
        elif not text:
            self.add_error(names[2], _("Enter the value to compare with."))
        elif (value := self._parse(names[2], spec.parse)) is not INVALID:
            return {"field": field, "op": op, "value": value}
        return None

    def _clean_action(self, i: int) -> dict[str, Any] | None:
        prefix = f"actions-{i}-"
        kind = self._text(prefix + "type")
        if self.has_error(prefix + "type"):
            return None
        if not kind:
            if any(self._text(prefix + name) for name in TYPED_IN):
                self.add_error(prefix + "type", _("Choose what the rule does, or clear this row."))
            return None
        if kind not in self.action_choices:
            self.add_error(prefix + "type", _("Choose one of the listed actions."))
            return None
        if any(self.has_error(prefix + name) for name in ACTION_INPUTS[kind]):
            return None
        params = getattr(self, f"_action_{kind}")(prefix)
        return None if params is None else {"type": kind, **params}

    def _texts(self, prefix: str, name: str) -> dict[str, str]:
        return {
            f"{name}_{lang}": storable_text(self._text(f"{prefix}{name}_{lang}")) for lang in ("en", "zh")
        }

    def _action_create_task(self, prefix: str) -> dict[str, Any] | None:
        roles = dict.fromkeys(["owner", *(str(role) for role in rules.TASK_ROLES)], "")
        text = self._text(prefix + "assignee") or "owner"
        assignee = self._parse(prefix + "assignee", _choose_one(roles), text)
        days = self._parse(prefix + "days", _whole_number(0, 365))
        if assignee is INVALID or days is INVALID:
            return None
        return {"assignee": assignee, "days": days or 0, **self._texts(prefix, "subject")}

    def _action_send_email(self, prefix: str) -> dict[str, Any] | None:
        to = self._parse(
            prefix + "to", _choose_one({"customer": "", "owner": ""}, _("Choose who gets the e-mail."))
        )
        bodies = self._texts(prefix, "body")
        if not any(bodies.values()):
            self.add_error(prefix + "body_en", _("Write the e-mail in English, in Chinese or in both."))
            return None
        return None if to is INVALID else {"to": to, **self._texts(prefix, "subject"), **bodies}

    def _action_set_field(self, prefix: str) -> dict[str, Any] | None:
        name = self._text(prefix + "field")
        spec = self.settable_specs.get(name)
        if spec is None:
            self.add_error(prefix + "field", _("Choose one of the listed fields."))
            return None
        value = self._parse(prefix + "value", spec.parse)
        return None if value is INVALID else {"field": name, "value": value}

    def _action_set_stage(self, prefix: str) -> dict[str, Any] | None:
        stage = self._parse(prefix + "stage", _choose_one(self.lookups.stages, _("Choose the stage.")))
        return None if stage is INVALID else {"stage": stage}

    def _action_set_owner(self, prefix: str) -> dict[str, Any] | None:
        user = self._parse(prefix + "user", _choose_one(self.lookups.users, _("Choose the new owner.")))
        return None if user is INVALID else {"user": user}

    def _action_assign_ticket(self, prefix: str) -> dict[str, Any] | None:
        user = self._parse(prefix + "user", _choose_one(self.lookups.users))
        return None if user is INVALID else {"user": user}

    def _action_add_note(self, prefix: str) -> dict[str, Any] | None:
        texts = self._texts(prefix, "text")
        if not any(texts.values()):
            self.add_error(prefix + "text_en", _("Write the note in English, in Chinese or in both."))
            return None
        return texts

    def _action_fire_webhook(self, prefix: str) -> dict[str, Any]:
        return {}


ACTION_LABELS = {
    "type": gettext_lazy("Action"),
    "assignee": gettext_lazy("Who gets the task"),
    "days": gettext_lazy("Due in (days)"),
    "to": gettext_lazy("To"),
    "subject_en": gettext_lazy("Subject (English)"),
    "subject_zh": gettext_lazy("Subject (Chinese)"),
    "body_en": gettext_lazy("Text (English)"),
    "body_zh": gettext_lazy("Text (Chinese)"),
    "text_en": gettext_lazy("Note (English)"),
    "text_zh": gettext_lazy("Note (Chinese)"),
    "field": gettext_lazy("Field"),
    "value": gettext_lazy("Value"),
    "stage": gettext_lazy("Stage"),
    "user": gettext_lazy("User"),
}


def _action_hint(name: str) -> str:
    """Which actions read the input (for the inputs shown before an action is chosen), and how."""
    if name == "type":
        return ""
    used_by = [str(rules.ACTIONS[kind]) for kind, inputs in ACTION_INPUTS.items() if name in inputs]
    hint = _("For: %(actions)s.") % {"actions": ", ".join(used_by)}
    return f"{hint} {ACTION_HINTS[name]}" if name in ACTION_HINTS else hint


def _input(label: str, max_length: int, widget: forms.Widget, help_text: str = "") -> forms.CharField:
    """An input as posted (text, parsed in ``clean`` when its row uses it)."""
    field = forms.CharField(
        label=label, required=False, max_length=max_length, widget=widget, help_text=help_text
    )
    if not isinstance(widget, forms.TextInput | forms.Textarea):
        field.widget.attrs.pop("maxlength", None)  # a select or a number input has no maxlength
    return field


def _value_widget(spec: FieldSpec | None) -> forms.Widget:
    """A select of the field's options when it has some, else a text input."""
    if spec is not None and spec.options is not None:
        return forms.Select(choices=[BLANK, *spec.options])
    return forms.TextInput()
