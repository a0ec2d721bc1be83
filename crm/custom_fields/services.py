"""Define custom fields, and clean the values the record services store.

Nothing is lost: renaming a field changes only its labels (its key is stable), archiving hides it and
keeps every value, and a change of type or of the choices first checks every stored value; when any
would not fit, it refuses with the records that don't.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.translation import gettext as _
from psycopg import sql as pg
from psycopg.types.json import Jsonb

from accounts.models import User
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField
from crm.transactions import atomic_retrying

Kind = CustomField.Kind
Entity = CustomField.Entity
MISFITS_SHOWN = 50
DEFINITION_FIELDS = (
    "label_en",
    "label_zh",
    "kind",
    "choices",
    "required",
    "required_from_stage",
    "help_en",
    "help_zh",
    "order",
    "is_active",
)


def entity_model(entity: str) -> type[Model]:
    from crm.models import Activity, Customer, Deal, Ticket

    return {Entity.CUSTOMER: Customer, Entity.DEAL: Deal, Entity.TICKET: Ticket, Entity.ACTIVITY: Activity}[
        Entity(entity)
    ]


def fields_of(entity: str, *, active_only: bool = True) -> list[CustomField]:
    """The entity's fields in their order (one query)."""
    qs = CustomField.objects.filter(entity=entity).select_related("required_from_stage")
    if active_only:
        qs = qs.filter(is_active=True)
    return list(qs.order_by("order", "id"))


def _ensure_manager(actor: User) -> None:
    if not actor.is_manager:
        raise PermissionDenied(_("Only managers and admins define custom fields."))


# Values
# ---------------------------------------------------------------------------------------------------------


def required_here(field: CustomField, stage: Any = None) -> bool:
    """Whether ``field`` must be filled in on a record (a deal in ``stage``)."""
    if not field.required:
        return False
    start = field.required_from_stage
    if start is None:
        return True
    if stage is None or stage.pipeline_id != start.pipeline_id or stage.kind == "lost":
        return False
    return stage.order >= start.order


def values_clean(
    *,
    entity: str,
    current: Mapping[str, Any] | None,
    changes: Mapping[str, Any] | None,
    stage: Any = None,
    fields: list[CustomField] | None = None,
    require: bool = True,
) -> dict[str, Any]:
    """The record's new ``custom`` values: ``current`` with ``changes`` (key → value as typed; an empty
    value clears the field) applied and validated, every required field filled in (unless ``require``
    is off: what the system itself writes, a rule's task, is not held to what a person must fill in).
    Values of archived fields are kept untouched. Raises ValidationError keyed ``custom.<key>``.

    The definitions are read under a shared lock held to the end of the caller's transaction: a change
    of type waits for the writes in flight, and writes that start meanwhile wait for it and then read
    the new definitions (no value of the old type is stored after the conversion)."""
    _definitions_locked(entity, shared=True)
    by_key = {f.key: f for f in (fields if fields is not None else fields_of(entity, active_only=False))}
    result = dict(current or {})
    errors: dict[str, list[str]] = {}
    changes = dict(changes or {})
    user_ids = _user_ids() if any(by_key.get(k) and by_key[k].kind == Kind.USER for k in changes) else None
    for key, raw in changes.items():
        field = by_key.get(str(key))
        if field is None or not field.is_active:
            message = _("This field is archived.") if field else _("There is no such field.")
            errors[f"custom.{str(key)[:40]}"] = [message]
            continue
        try:
            value = kinds.clean(field, raw, user_ids=user_ids)
        except ValidationError as exc:
            errors[f"custom.{key}"] = exc.messages
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    for field in by_key.values():
        if require and field.is_active and required_here(field, stage) and field.key not in result:
            errors.setdefault(f"custom.{field.key}", [_("Fill in %(field)s.") % {"field": field.label}])
    if errors:
        raise ValidationError(errors)
    return result


def _definitions_locked(entity: str, *, shared: bool) -> None:
    """The transaction-long advisory lock on an entity's field definitions (shared: a write of values;
    exclusive: a change of type or choices)."""
    function = pg.Identifier("pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock")
    statement = pg.SQL("SELECT {}(hashtext(%s))").format(function)
    with connection.cursor() as cursor:
        cursor.execute(statement, [f"minicrm.custom_fields.{entity}"])


def _user_ids() -> set[int]:
    return set(User.objects.filter(is_active=True, is_service_account=False).values_list("pk", flat=True))


def missing_for_stage(*, deal: Any, stage: Any) -> list[CustomField]:
    """The deal fields that must be filled in before ``deal`` may enter ``stage`` and are not."""
    return [
        field
        for field in fields_of(Entity.DEAL)
        if required_here(field, stage) and field.key not in (deal.custom or {})
    ]


# Definitions
# ---------------------------------------------------------------------------------------------------------


def _clean_choices(kind: str, choices: Iterable[Mapping[str, str]] | None) -> list[dict[str, str]]:
    if kind not in (Kind.CHOICE, Kind.MULTI_CHOICE):
        return []
    cleaned: list[dict[str, str]] = []
    seen: set[str] = set()
    for option in choices or []:
        key = str(option.get("key", "")).strip()
        english = str(option.get("en", "")).strip()
        if not key and not english:
            continue
        key = key or _slug(english, len(cleaned))
        if key in seen:
            raise ValidationError(
                {"choices": _("Each option needs its own key (“%(key)s” twice).") % {"key": key}}
            )
        seen.add(key)
        cleaned.append({"key": key, "en": english or key, "zh": str(option.get("zh", "")).strip()})
    if not cleaned:
        raise ValidationError({"choices": _("A choice field needs at least one option.")})
    return cleaned


def _slug(text: str, index: int) -> str:
    slug = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in text.lower()).strip("_")
    return slug[:40] or f"option_{index + 1}"


def _check_stage(entity: str, stage: Any) -> None:
    if stage is not None and entity != Entity.DEAL:
        raise ValidationError({"required_from_stage": _("Only deal fields can be required from a stage on.")})


@transaction.atomic
def field_create(*, actor: User, entity: str, key: str, **definition: Any) -> CustomField:
    _ensure_manager(actor)
    unknown = set(definition) - set(DEFINITION_FIELDS)
    if unknown:
        raise TypeError(f"unknown custom field settings: {sorted(unknown)}")
    kind = definition.get("kind", Kind.TEXT)
    definition["choices"] = _clean_choices(kind, definition.get("choices"))
    _check_stage(entity, definition.get("required_from_stage"))
    if CustomField.objects.filter(entity=entity, key=key).exists():
        raise ValidationError({"key": _("There is already a field with this key.")})
    now = timezone.now()
    field = CustomField(entity=entity, key=key, created_at=now, updated_at=now, **definition)
    if definition.get("order") is None:
        field.order = (CustomField.objects.filter(entity=entity).count() + 1) * 10
    field.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            field.save()
    except IntegrityError:  # another manager made the same key a moment ago
        raise ValidationError({"key": _("There is already a field with this key.")}) from None
    return field


@dataclass(frozen=True)
class Misfit:
    """A record whose stored value would not fit a field's new type or choices."""

    pk: int
    name: str
    url: str
    value: Any
    message: str


class ValuesWouldNotFit(ValidationError):
    """A change of type or choices refused: ``misfits`` (at most MISFITS_SHOWN) of ``total`` records."""

    def __init__(self, *, misfits: list[Misfit], total: int) -> None:
        self.misfits, self.total = misfits, total
        super().__init__(
            {
                "kind": _(
                    "%(count)d records hold values that would not fit; change or clear them first "
                    "(listed below)."
                )
                % {"count": total}
            }
        )


@atomic_retrying
def field_update(*, actor: User, field: CustomField, **changes: Any) -> CustomField:
    """Change a field's labels, help, order, required rule, archive state, choices or type (the key and
    the record type never change). A new type or a narrower set of choices is applied only when every
    stored value fits it, and the values are converted to the new type in the same transaction."""
    _ensure_manager(actor)
    unknown = set(changes) - set(DEFINITION_FIELDS)
    if unknown:
        raise TypeError(f"unknown custom field settings: {sorted(unknown)}")
    field = CustomField.objects.select_for_update().get(pk=field.pk)
    if "kind" in changes or "choices" in changes:
        _definitions_locked(field.entity, shared=False)  # no write of values while they are converted
    before = CustomField(**{f.attname: getattr(field, f.attname) for f in field._meta.concrete_fields})
    kind = changes.get("kind", field.kind)
    if "choices" in changes or "kind" in changes:
        changes["choices"] = _clean_choices(kind, changes.get("choices", field.choices))
    _check_stage(field.entity, changes.get("required_from_stage", field.required_from_stage))
    for name, value in changes.items():
        setattr(field, name, value)
    field.updated_at = timezone.now()
    field.full_clean(validate_constraints=False)
    retyped = field.kind != before.kind or field.choices != before.choices
    if retyped:
        _convert_values(before, field)
    field.save()
    if retyped:
        from crm.automation.services import rules_recheck_for_field

        rules_recheck_for_field(field=field)
    if before.is_active and not field.is_active:
        _field_gone(field)
    return field


def _field_gone(field: CustomField) -> None:
    """Rules that read or write an archived field are switched off, with the reason shown."""
    from crm.automation.services import rules_disable_for_field

    rules_disable_for_field(field=field)


def _convert_values(before: CustomField, after: CustomField) -> None:
    """Check every stored value against the new definition, then rewrite them all; or refuse, listing
    the records that would not fit."""
    model = entity_model(after.entity)
    rows = model._default_manager.filter(custom__has_key=after.key).values_list("pk", "custom").order_by("pk")
    user_ids = _user_ids() if after.kind == Kind.USER else None
    converted: dict[int, Any] = {}
    misfits: list[tuple[int, Any, str]] = []
    for pk, custom in rows.iterator(chunk_size=5000):
        old = custom.get(after.key)
        try:
            new = kinds.clean(after, _as_input(before, old), user_ids=user_ids)
        except ValidationError as exc:
            misfits.append((pk, old, " ".join(exc.messages)))
            continue
        if new != old:
            converted[pk] = new
    if misfits:
        raise ValuesWouldNotFit(misfits=_describe(model, misfits[:MISFITS_SHOWN]), total=len(misfits))
    _rewrite(model, after.key, converted)


def _as_input(field: CustomField, value: Any) -> Any:
    """A stored value as it would be typed, so that the new type reads it (a choice by its label)."""
    if field.kind == Kind.CHOICE:
        return field.choice_labels().get(value, value)
    if field.kind == Kind.MULTI_CHOICE:
        labels = field.choice_labels()
        return [labels.get(v, v) for v in value] if isinstance(value, list) else value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _describe(model: type[Model], misfits: list[tuple[int, Any, str]]) -> list[Misfit]:
    records = model._default_manager.in_bulk([pk for pk, _value, _message in misfits])
    return [
        Misfit(
            pk=pk,
            name=str(records[pk]) if pk in records else f"#{pk}",
            url=_url(records.get(pk)),
            value=value,
            message=message,
        )
        for pk, value, message in misfits
    ]


def _url(record: Any) -> str:
    get_url = getattr(record, "get_absolute_url", None)
    return get_url() if get_url else ""


def _rewrite(model: type[Model], key: str, converted: dict[int, Any]) -> None:
    """Store the converted values, a thousand rows per statement (no history rows: the values did not
    change, only how they are written)."""
    statement = pg.SQL(
        "UPDATE {table} AS t SET custom = jsonb_set(t.custom, ARRAY[%s], v.value) "
        "FROM (SELECT unnest(%s::bigint[]) AS id, unnest(%s::jsonb[]) AS value) AS v WHERE t.id = v.id"
    ).format(table=pg.Identifier(model._meta.db_table))
    pks = list(converted)
    with connection.cursor() as cursor:
        for start in range(0, len(pks), 1000):
            chunk = pks[start : start + 1000]
            cursor.execute(statement, [key, chunk, [Jsonb(converted[pk]) for pk in chunk]])


def field_values_count(field: CustomField) -> int:
    """How many records hold a value for ``field``."""
    return entity_model(field.entity)._default_manager.filter(custom__has_key=field.key).count()
