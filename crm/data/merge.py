"""Merging duplicate customers, and remembering that two customers are not duplicates (services)."""

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from simple_history.exceptions import NotHistoricalModelError
from simple_history.utils import bulk_update_with_history, get_history_manager_for_model

from accounts.models import UsageEvent, User
from accounts.services import usage_record
from crm.campaigns.touches import campaign_touches_collapse
from crm.custom_fields import services as custom_fields
from crm.custom_fields.models import CustomField
from crm.models import Customer, CustomerMerge, CustomerStatusChange, DuplicateCandidate, WebhookSubscription
from crm.selectors import custom_fields_shown
from crm.services import _refresh_match_keys, _save, _set_history_user
from crm.transactions import atomic_retrying
from crm.webhooks import payloads
from crm.webhooks.services import webhook_emit

# The fields a manager picks, one by one, from either record.
MERGE_FIELDS = (
    "name",
    "kind",
    "email",
    "phone",
    "industry",
    "city",
    "segment",
    "language",
    "source",
    "owner",
)
# Relations that stay with the merged customer: the merge's own bookkeeping, and its status history (KPIS.md
# §10.13: the merged-away record leaves every KPI, past periods included, and its history never moves; the
# survivor keeps its own, so merging a churned duplicate does not make the survivor look churned).
_STAYS = (CustomerMerge, DuplicateCandidate, CustomerStatusChange)
# A custom field's name in ``choices``, ``chosen`` and the snapshot: ``custom.<key>``.
CUSTOM_PREFIX = "custom."
_STATUS_RANK = {Customer.Status.LEAD: 0, Customer.Status.CHURNED: 1, Customer.Status.ACTIVE: 2}


class MergeConflict(ValidationError):
    """The pair changed since the page was loaded (merged or decided by someone else): nothing was done."""


def _ensure_manager(actor: User) -> None:
    if not actor.is_manager:
        raise PermissionDenied(_("Only managers merge customers."))


def _display(customer: Customer, name: str) -> str:
    """A field's value as the merge record keeps it: a choice by its key, so that the history shows it in
    the reader's language (``_shown``); anything else as text."""
    value = getattr(customer, name)
    return "" if value is None else str(value)


def _shown(name: str, value: str) -> str:
    """A kept value as a reader sees it: a choice's label in the active language (records written before
    choices were kept by key hold the English label, shown as it is)."""
    field = Customer._meta.get_field(name)
    if field.choices:
        return str(dict(field.flatchoices).get(value, value))
    return value


@atomic_retrying
def customer_merge(
    *,
    survivor: Customer,
    merged: Customer,
    actor: User,
    choices: Mapping[str, int] | None = None,
    candidate: DuplicateCandidate | None = None,
) -> CustomerMerge:
    """Merge ``merged`` into ``survivor``: the survivor takes the chosen value of each field
    (``choices``: field → id of the customer whose value to keep; the survivor's by default) and every
    record of the merged customer; the merged customer is kept with ``merged_into`` set, never deleted.
    Custom fields: the survivor keeps its values and takes the merged customer's where it has none, unless
    ``choices`` names ``custom.<key>`` (an active field) with the other customer.

    Related records move generically: every reverse foreign key to Customer is repointed except
    ``merged_into``, the merge bookkeeping and the status history (``_STAYS``), so relations added later
    (survey invitations and answers, RFM scores, …) move too without changing this code. Rows that would
    break a unique rule of their table at the survivor (e.g. both answered the same campaign) stay with
    the merged customer, counted in the merge record. Both customers are locked (in id order) first: a
    pair merged or decided meanwhile raises MergeConflict, and nothing changes.
    """
    _ensure_manager(actor)
    if survivor.pk == merged.pk:
        raise ValidationError(_("A customer cannot be merged into itself."))
    locked = {
        c.pk: c
        for c in Customer.objects.select_for_update().filter(pk__in=[survivor.pk, merged.pk]).order_by("pk")
    }
    if len(locked) != 2:
        raise MergeConflict(_("One of the two customers no longer exists."))
    survivor, merged = locked[survivor.pk], locked[merged.pk]
    for customer in (survivor, merged):
        if customer.merged_into_id is not None:
            raise MergeConflict(
                _("%(name)s has already been merged into another customer meanwhile.")
                % {"name": customer.name}
            )
    if candidate is not None:
        candidate = DuplicateCandidate.objects.select_for_update().get(pk=candidate.pk)
        if candidate.status != DuplicateCandidate.Status.OPEN:
            raise MergeConflict(_("Someone has already decided about this pair."))
        if {candidate.customer_a_id, candidate.customer_b_id} != {survivor.pk, merged.pk}:
            raise ValidationError(_("The customers are not the pair under review."))
    now = timezone.now()
    snapshot = {name: _display(merged, name) for name in (*MERGE_FIELDS, "status", "created_at")}
    snapshot |= {f"{CUSTOM_PREFIX}{key}": value for key, value in (merged.custom or {}).items()}
    chosen = _apply_choices(survivor, merged, choices or {})
    _combine_status(survivor, merged, actor=actor, at=now)
    moved = _move_related(survivor, merged, actor=actor)
    # Attribution (KPIS.md §10.11): the survivor keeps its first-touch campaign (takes the other's when it
    # has none); the moved touches read as one customer's history.
    survivor.campaign_id = survivor.campaign_id or merged.campaign_id
    campaign_touches_collapse(customer=survivor)
    survivor.created_at = min(survivor.created_at, merged.created_at)
    survivor.updated_at = now
    survivor.version += 1
    _refresh_match_keys(survivor)
    survivor._change_reason = _("Merged with %(name)s (#%(id)s)") % {"name": merged.name, "id": merged.pk}
    _set_history_user(survivor, actor)
    _save(survivor)
    merged.merged_into = survivor
    merged.updated_at = now
    merged.version += 1
    merged._change_reason = _("Merged into %(name)s (#%(id)s)") % {"name": survivor.name, "id": survivor.pk}
    _set_history_user(merged, actor)
    _save(merged)
    record = CustomerMerge.objects.create(
        survivor=survivor,
        merged=merged,
        candidate=candidate,
        by=actor,
        at=now,
        chosen=chosen,
        moved=moved,
        merged_snapshot=snapshot,
    )
    _settle_candidates(survivor, merged, candidate, actor=actor, at=now)
    usage_record(user=actor, verb=UsageEvent.Verb.MERGE, obj=survivor, via=UsageEvent.Via.WEB, at=now)
    webhook_emit(
        event=WebhookSubscription.Event.CUSTOMER_MERGED,
        data=lambda: payloads.customer_data(survivor) | {"merged_id": merged.pk},
    )
    return record


def _apply_choices(survivor: Customer, merged: Customer, choices: Mapping[str, int]) -> dict[str, Any]:
    """Set the chosen values on the survivor; returns what was decided for each field that differed."""
    custom = {name: source for name, source in choices.items() if name.startswith(CUSTOM_PREFIX)}
    unknown = set(choices) - set(MERGE_FIELDS) - set(custom)
    if unknown:
        raise ValidationError(_("Unknown fields: %(names)s") % {"names": ", ".join(sorted(unknown))})
    decided = {}
    for name in MERGE_FIELDS:
        source = choices.get(name, survivor.pk)
        if source not in (survivor.pk, merged.pk):
            raise ValidationError(
                _("Choose the value of %(field)s from one of the two customers.") % {"field": name}
            )
        attname = Customer._meta.get_field(name).attname
        if getattr(survivor, attname) == getattr(merged, attname):
            continue
        before = _display(survivor, name)
        if source == merged.pk:
            setattr(survivor, attname, getattr(merged, attname))
            if name == "owner":
                survivor.owner = merged.owner
        decided[name] = {
            "kept": "merged" if source == merged.pk else "survivor",
            "value": _display(survivor, name),
            "survivor": before,
            "merged": _display(merged, name),
        }
    return decided | _combine_custom(survivor, merged, custom)


def _combine_custom(survivor: Customer, merged: Customer, choices: Mapping[str, int]) -> dict[str, Any]:
    """The survivor's custom values, with the merged customer's for the keys it lacks and where
    ``choices`` (``custom.<key>`` → customer id) picks the merged customer (its empty value clears the
    key). Returns what was decided per key whose values differed, as stored values (the explanation shows
    them in the reader's language)."""
    active = {f.key for f in custom_fields.fields_of(CustomField.Entity.CUSTOMER)}
    for name, source in choices.items():
        if name.removeprefix(CUSTOM_PREFIX) not in active:
            raise ValidationError(_("Unknown fields: %(names)s") % {"names": name})
        if source not in (survivor.pk, merged.pk):
            raise ValidationError(
                _("Choose the value of %(field)s from one of the two customers.") % {"field": name}
            )
    mine, theirs = dict(survivor.custom or {}), merged.custom or {}
    values, decided = dict(mine), {}
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) == theirs.get(key):
            continue
        name = f"{CUSTOM_PREFIX}{key}"
        source = choices.get(name) or (survivor.pk if key in mine else merged.pk)
        if source == merged.pk:
            values.pop(key, None)
            if key in theirs:
                values[key] = theirs[key]
        decided[name] = {
            "kept": "merged" if source == merged.pk else "survivor",
            "value": values.get(key),
            "survivor": mine.get(key),
            "merged": theirs.get(key),
        }
    survivor.custom = values
    return decided


def _combine_status(survivor: Customer, merged: Customer, *, actor: User, at) -> None:
    """The further status of the two wins (active > churned > lead), with the earliest customer-since date."""
    status = max(survivor.status, merged.status, key=lambda s: _STATUS_RANK[s])
    starts = [d for d in (survivor.became_customer_at, merged.became_customer_at) if d]
    if status != Customer.Status.LEAD:
        survivor.became_customer_at = min(starts) if starts else at
    if status == Customer.Status.CHURNED:
        churned = max((c for c in (survivor, merged) if c.churned_at), key=lambda c: c.churned_at)
        survivor.churned_at, survivor.churn_reason = churned.churned_at, churned.churn_reason
    elif status == Customer.Status.ACTIVE:
        survivor.churned_at, survivor.churn_reason = None, ""
    if status != survivor.status:
        CustomerStatusChange.objects.create(
            customer=survivor,
            from_status=survivor.status,
            to_status=status,
            at=at,
            by=actor,
            reason=_("merge"),
        )
        survivor.status = status


def _move_related(survivor: Customer, merged: Customer, *, actor: User) -> dict[str, int]:
    """Repoint every reverse relation of the merged customer to the survivor; counts per model."""
    moved: dict[str, int] = {}
    for relation in Customer._meta.related_objects:
        model, fk = relation.related_model, relation.field
        if fk.name == "merged_into" or model in _STAYS or relation.many_to_many:
            continue
        rows = model._base_manager.filter(**{fk.name: merged})
        if relation.one_to_one:
            if model._base_manager.filter(**{fk.name: survivor}).exists():
                kept = rows.count()
                if kept:
                    moved[f"{model._meta.model_name}_kept"] = kept
                continue
        else:
            clashing = _unique_clashes(model, fk, survivor)
            if clashing is not None:
                kept = rows.filter(clashing).count()
                if kept:
                    moved[f"{model._meta.model_name}_kept"] = kept
                rows = rows.exclude(clashing)
        count = _repoint(model, fk, rows, survivor, actor=actor)
        if count:
            moved[model._meta.model_name] = count
    return moved


def _unique_clashes(model: type[models.Model], fk: models.ForeignKey, survivor: Customer) -> Q | None:
    """Rows that would duplicate a survivor's row under a unique rule containing ``fk``, or None."""
    rules: list[tuple[tuple[str, ...], Q | None]] = [
        (tuple(c.fields), c.condition)
        for c in model._meta.constraints
        if isinstance(c, models.UniqueConstraint) and c.fields and fk.name in c.fields
    ]
    rules += [(tuple(fields), None) for fields in model._meta.unique_together if fk.name in fields]
    clash = Q()
    for fields, condition in rules:
        others = [f for f in fields if f != fk.name]
        existing = model._base_manager.filter(**{fk.name: survivor})
        if condition is not None:
            existing = existing.filter(condition)
        for values in existing.values_list(*others):
            if None in values:  # NULLs never clash in a unique index
                continue
            same = Q(**dict(zip(others, values, strict=True)))
            clash |= same & condition if condition is not None else same
    return clash or None


def _repoint(
    model: type[models.Model],
    fk: models.ForeignKey,
    rows: models.QuerySet,
    survivor: Customer,
    *,
    actor: User,
) -> int:
    """Move rows; audited models (simple-history) get a history row each (and a version bump if versioned).

    Rows with an ``updated_at`` get it set to now: the KPI facts re-read records changed since their last
    run by it.
    """
    names = {f.name for f in model._meta.concrete_fields}
    stamp = {"updated_at": timezone.now()} if "updated_at" in names else {}
    try:
        get_history_manager_for_model(model)
    except NotHistoricalModelError:
        return rows.update(**{fk.name: survivor}, **stamp)
    objs = list(rows)
    has_version = "version" in names
    for obj in objs:
        setattr(obj, fk.name, survivor)
        for name, value in stamp.items():
            setattr(obj, name, value)
        if has_version:
            obj.version += 1
    fields = [fk.name, *stamp, *(["version"] if has_version else [])]
    if objs:
        bulk_update_with_history(
            objs,
            model,
            fields,
            batch_size=500,
            default_user=actor,
            default_change_reason=_("customer merged"),
        )
    return len(objs)


def _settle_candidates(
    survivor: Customer, merged: Customer, candidate: DuplicateCandidate | None, *, actor: User, at
) -> None:
    """Close the reviewed pair; drop the merged customer's other open pairs (the next scan re-proposes
    what still applies to the survivor) and carry its "not a duplicate" decisions over to the survivor."""
    if candidate is not None:
        candidate.status, candidate.decided_at, candidate.decided_by = (
            DuplicateCandidate.Status.MERGED,
            at,
            actor,
        )
        candidate.save(update_fields=["status", "decided_at", "decided_by"])
    involving = Q(customer_a=merged) | Q(customer_b=merged)
    DuplicateCandidate.objects.filter(involving, status=DuplicateCandidate.Status.OPEN).delete()
    carried = []
    for decision in DuplicateCandidate.objects.filter(
        involving, status=DuplicateCandidate.Status.NOT_DUPLICATE
    ):
        other = decision.customer_b_id if decision.customer_a_id == merged.pk else decision.customer_a_id
        if other == survivor.pk:
            continue
        a, b = sorted((survivor.pk, other))
        carried.append(
            DuplicateCandidate(
                customer_a_id=a,
                customer_b_id=b,
                score=decision.score,
                reason=decision.reason,
                name_similarity=decision.name_similarity,
                status=DuplicateCandidate.Status.NOT_DUPLICATE,
                found_at=decision.found_at,
                decided_at=decision.decided_at,
                decided_by_id=decision.decided_by_id,
            )
        )
    for pair in carried:
        DuplicateCandidate.objects.filter(
            customer_a_id=pair.customer_a_id,
            customer_b_id=pair.customer_b_id,
            status=DuplicateCandidate.Status.OPEN,
        ).update(status=DuplicateCandidate.Status.NOT_DUPLICATE, decided_at=at, decided_by=actor)
    DuplicateCandidate.objects.bulk_create(carried, ignore_conflicts=True)


def merge_explanation(record: CustomerMerge) -> dict[str, list]:
    """A merge record in words: chosen values and the merged record's snapshot per field label (in form
    order), and the moved records per model name (plural)."""
    from django.apps import apps

    def label(name: str) -> str:
        return str(Customer._meta.get_field(name).verbose_name)

    order = [*MERGE_FIELDS, "status", "created_at"]
    moved = []
    for key, count in record.moved.items():
        model_name, _sep, _rest = key.partition("_kept")
        model = next((m for m in apps.get_models() if m._meta.model_name == model_name), None)
        name = str(model._meta.verbose_name_plural) if model else model_name
        moved.append({"label": name, "count": count, "kept": bool(_sep)})

    def chosen(name: str) -> dict[str, Any]:
        found = record.chosen[name]
        shown = {key: _shown(name, found[key]) for key in ("value", "survivor", "merged") if key in found}
        return {**found, **shown, "label": label(name)}

    custom_chosen, custom_snapshot = _custom_explained(record)
    return {
        "chosen": [chosen(f) for f in order if f in record.chosen] + custom_chosen,
        "snapshot": [
            (label(f), _shown(f, record.merged_snapshot[f])) for f in order if f in record.merged_snapshot
        ]
        + custom_snapshot,
        "moved": [m for m in moved if not m["kept"]],
        "kept": [m for m in moved if m["kept"]],
    }


def _custom_explained(record: CustomerMerge) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The custom fields of a merge record: decided values and the merged record's snapshot, labelled and
    shown in the reader's language (archived fields keep their labels); no query without any."""
    chosen = {
        k.removeprefix(CUSTOM_PREFIX): v for k, v in record.chosen.items() if k.startswith(CUSTOM_PREFIX)
    }
    snapshot = {
        k.removeprefix(CUSTOM_PREFIX): v
        for k, v in record.merged_snapshot.items()
        if k.startswith(CUSTOM_PREFIX)
    }
    if not (chosen or snapshot):
        return [], []
    values = [
        snapshot,
        *({k: found.get(part) for k, found in chosen.items()} for part in ("value", "survivor", "merged")),
    ]
    shown = custom_fields_shown(entity=CustomField.Entity.CUSTOMER, values=values)
    return (
        [
            {
                **chosen[key],
                **{part: shown.value(key, chosen[key].get(part)) for part in ("value", "survivor", "merged")},
                "label": shown.label(key),
            }
            for key in shown.keys(chosen)
        ],
        [(shown.label(key), shown.value(key, snapshot[key])) for key in shown.keys(snapshot)],
    )


@atomic_retrying
def duplicate_mark_not_duplicate(*, candidate: DuplicateCandidate, actor: User) -> DuplicateCandidate:
    """Remember that the pair is two different customers; the scan never proposes it again."""
    _ensure_manager(actor)
    candidate = DuplicateCandidate.objects.select_for_update().get(pk=candidate.pk)
    if candidate.status != DuplicateCandidate.Status.OPEN:
        raise MergeConflict(_("Someone has already decided about this pair."))
    candidate.status = DuplicateCandidate.Status.NOT_DUPLICATE
    candidate.decided_at, candidate.decided_by = timezone.now(), actor
    candidate.save(update_fields=["status", "decided_at", "decided_by"])
    return candidate
