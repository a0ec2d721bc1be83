"""The data-quality rule set (KPIS.md §7): one definition per rule, used by the KPI engine, the
data-quality page and the importer.

Each :class:`Rule` says, once, what a good record looks like:

- ``applies`` (SQL, a ``Q``): the records the rule concerns, e.g. open deals for "has an amount";
- ``broken`` (SQL, a ``Q``): among those, the records that break it. ``rule.failing`` is both together;
- ``check`` (Python): the same rule on the values of a record not saved yet (the importer's rows). It is
  at least as strict as the SQL form, so whatever passes entry passes the scan.

The ``Q`` objects need no annotations and no joins beyond the model's own columns, so they work in
``filter()``, in ``Count(filter=…)`` and in the KPI engine's ``count(where=…)`` alike. Checked records are
those of :func:`checked`: live customers (not merged, not internal or test), their deals, their tickets
that are not spam.

The company's required custom fields are checked by one rule per record type ("required custom field
missing"), whose SQL reads the field definitions itself (:func:`custom_missing`): a field made required
or archived counts from the next query on, and no rule list has to be rebuilt.

Bumping ``RULESET_VERSION`` when a rule is added or changed lets charts annotate the step change.
"""

import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import BooleanField, CharField, Count, Exists, F, Func, OuterRef, Q, QuerySet, Value
from django.urls import reverse
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm import normalize
from crm.custom_fields import services as custom_fields
from crm.custom_fields.models import CustomField
from crm.models import Customer, Deal, Ticket

RULESET_VERSION = 2  # 2: required custom fields

# A text field holding only a placeholder (or nothing) is empty: "", " ", "-", "n/a", "none", "null",
# "unknown", "?". The same pattern runs in PostgreSQL (``~*``) and in Python (``re.IGNORECASE``).
EMPTY_PATTERN = r"^\s*(-+|n/?a|none|null|unknown|\?+)?\s*$"
# The shape of an e-mail address, as PostgreSQL can check it; entry uses Django's stricter validator.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_EMPTY = re.compile(EMPTY_PATTERN, re.IGNORECASE)


class Kind(models.TextChoices):
    REQUIRED = "required", _("Required field")
    FORMAT = "format", _("Format")
    CONSISTENCY = "consistency", _("Consistency")


def is_empty(value: Any) -> bool:
    """True for None and for text that is blank or a placeholder such as "n/a" or "-"."""
    if value is None:
        return True
    return isinstance(value, str) and bool(_EMPTY.match(value))


def empty(field_name: str) -> Q:
    """SQL form of :func:`is_empty` for a text column."""
    return Q(**{f"{field_name}__iregex": EMPTY_PATTERN})


def email_is_valid(value: str) -> bool:
    try:
        validate_email(value.strip())
    except ValidationError:
        return False
    return True


@dataclass(frozen=True)
class Rule:
    code: str
    model: type[models.Model]
    kind: str
    field: str
    label: Promise
    message: Promise
    broken: Q
    applies: Q = field(default_factory=Q)
    check: Callable[[Mapping[str, Any]], bool] | None = None

    @property
    def model_label(self) -> str:
        """What the rule checks, e.g. "customer" (a template would call the model class itself)."""
        return str(self.model._meta.verbose_name)

    @property
    def failing(self) -> Q:
        """Records this rule concerns and that break it."""
        return self.applies & self.broken

    def fails(self, values: Mapping[str, Any]) -> bool:
        """The Python form: does a record with these values break the rule? Rules without one say no."""
        return bool(self.check and self.check(values))


def _filled(values: Mapping[str, Any], name: str) -> bool:
    return not is_empty(values.get(name))


WON, OPEN = Deal.Status.WON, Deal.Status.OPEN


def has_custom_key(outer: str = "custom") -> Func:
    """SQL: the outer record's ``custom`` holds the inner custom field's key (``custom ? key``)."""
    return Func(
        OuterRef(outer), F("key"), template="(%(expressions)s)", arg_joiner=" ? ", output_field=BooleanField()
    )


def required_fields(entity: str) -> QuerySet:
    """The active required custom fields of ``entity`` (a subquery: no query of its own)."""
    return CustomField.objects.filter(entity=entity, is_active=True, required=True)


def custom_missing(entity: str) -> Q:
    """Records lacking the value of at least one active required custom field that applies to them (a
    deal field required from a stage on: deals in that stage or a later one of its pipeline, not lost)."""
    missing = required_fields(entity).filter(~Q(has_custom_key()))
    if entity != CustomField.Entity.DEAL:
        return Q(Exists(missing))
    from_stage = missing.filter(
        required_from_stage__pipeline_id=OuterRef("stage__pipeline_id"),
        required_from_stage__order__lte=OuterRef("stage__order"),
    )
    return Q(Exists(missing.filter(required_from_stage__isnull=True))) | (
        ~Q(status=Deal.Status.LOST) & Q(Exists(from_stage))
    )


def _custom_check(entity: str) -> Callable[[Mapping[str, Any]], bool]:
    """The Python form of :func:`custom_missing` (``custom``: the stored values; deals: ``stage``)."""

    def check(values: Mapping[str, Any]) -> bool:
        stored = values.get("custom") or {}
        return any(
            custom_fields.required_here(field, values.get("stage")) and field.key not in stored
            for field in custom_fields.fields_of(entity)
        )

    return check


def _custom_rule(model: type[models.Model], entity: str, label: Promise) -> Rule:
    return Rule(
        code=f"{entity}_custom_required",
        model=model,
        kind=Kind.REQUIRED,
        field="custom",
        label=label,
        message=_("A required custom field is empty."),
        broken=custom_missing(entity),
        check=_custom_check(entity),
    )


RULES: tuple[Rule, ...] = (
    # Customers: required fields.
    Rule(
        code="customer_contact",
        model=Customer,
        kind=Kind.REQUIRED,
        field="email",
        label=_("Customer has an e-mail or phone"),
        message=_("No e-mail address and no phone number."),
        broken=empty("email") & empty("phone"),
        check=lambda v: not (_filled(v, "email") or _filled(v, "phone")),
    ),
    _custom_rule(Customer, CustomField.Entity.CUSTOMER, _("Customer has its required custom fields")),
    *(
        Rule(
            code=f"customer_{name}",
            model=Customer,
            kind=Kind.REQUIRED,
            field=name,
            label=label,
            message=message,
            broken=empty(name),
            check=lambda v, name=name: not _filled(v, name),
        )
        for name, label, message in (
            ("industry", _("Customer has an industry"), _("The industry is missing.")),
            ("city", _("Customer has a city"), _("The city is missing.")),
            ("segment", _("Customer has a segment"), _("The segment is missing.")),
        )
    ),
    # Customers: formats.
    Rule(
        code="customer_email_format",
        model=Customer,
        kind=Kind.FORMAT,
        field="email",
        label=_("E-mail address is well-formed"),
        message=_("The e-mail address is not valid."),
        applies=~empty("email"),
        broken=~Q(email__regex=EMAIL_PATTERN),
        check=lambda v: _filled(v, "email") and not email_is_valid(v["email"]),
    ),
    Rule(
        code="customer_phone_format",
        model=Customer,
        kind=Kind.FORMAT,
        field="phone",
        label=_("Phone number is valid"),
        message=_("The phone number cannot be read as a number (add the country code)."),
        applies=~empty("phone"),
        broken=Q(phone_key=""),
        check=lambda v: _filled(v, "phone") and not normalize.phone_is_valid(v["phone"]),
    ),
    # Deals: required fields of open deals.
    Rule(
        code="deal_open_amount",
        model=Deal,
        kind=Kind.REQUIRED,
        field="amount",
        label=_("Open deal has an amount"),
        message=_("The open deal has no amount."),
        applies=Q(status=OPEN),
        broken=Q(amount__isnull=True),
        check=lambda v: v.get("status") == OPEN and v.get("amount") is None,
    ),
    Rule(
        code="deal_open_close_date",
        model=Deal,
        kind=Kind.REQUIRED,
        field="expected_close_date",
        label=_("Open deal has an expected close date"),
        message=_("The open deal has no expected close date."),
        applies=Q(status=OPEN),
        broken=Q(expected_close_date__isnull=True),
        check=lambda v: v.get("status") == OPEN and v.get("expected_close_date") is None,
    ),
    _custom_rule(Deal, CustomField.Entity.DEAL, _("Deal has its required custom fields")),
    # Deals: consistency.
    Rule(
        code="deal_won_amount",
        model=Deal,
        kind=Kind.CONSISTENCY,
        field="amount",
        label=_("Won deal has an amount"),
        message=_("The deal is won but has no amount."),
        applies=Q(status=WON),
        broken=Q(amount__isnull=True) | Q(amount=0),
        check=lambda v: v.get("status") == WON and not v.get("amount"),
    ),
    Rule(
        code="deal_won_close_date",
        model=Deal,
        kind=Kind.CONSISTENCY,
        field="closed_at",
        label=_("Won deal has a close date"),
        message=_("The deal is won but has no close date."),
        applies=Q(status=WON),
        broken=Q(closed_at__isnull=True),
        check=lambda v: v.get("status") == WON and v.get("closed_at") is None,
    ),
    Rule(
        code="deal_amount_nonneg",
        model=Deal,
        kind=Kind.CONSISTENCY,
        field="amount",
        label=_("Amount is not negative"),
        message=_("The amount is negative."),
        broken=Q(amount__lt=0),
        check=lambda v: v.get("amount") is not None and v["amount"] < 0,
    ),
    Rule(
        code="deal_closed_after_created",
        model=Deal,
        kind=Kind.CONSISTENCY,
        field="closed_at",
        label=_("Deal closed after it was created"),
        message=_("The deal closed before it was created."),
        broken=Q(closed_at__lt=F("created_at")),
        check=lambda v: bool(v.get("closed_at") and v.get("created_at") and v["closed_at"] < v["created_at"]),
    ),
    Rule(
        code="deal_term_order",
        model=Deal,
        kind=Kind.CONSISTENCY,
        field="term_end",
        label=_("Term ends after it starts"),
        message=_("The term ends before it starts."),
        broken=Q(term_end__lte=F("term_start")),
        check=lambda v: bool(v.get("term_end") and v.get("term_start") and v["term_end"] <= v["term_start"]),
    ),
    _custom_rule(Ticket, CustomField.Entity.TICKET, _("Ticket has its required custom fields")),
    # Tickets: consistency.
    Rule(
        code="ticket_solved_time",
        model=Ticket,
        kind=Kind.CONSISTENCY,
        field="solved_at",
        label=_("Solved ticket has a solved time"),
        message=_("The ticket is solved or closed but has no solved time."),
        applies=Q(status__in=[Ticket.Status.SOLVED, Ticket.Status.CLOSED]),
        broken=Q(solved_at__isnull=True),
        check=lambda v: (
            v.get("status") in (Ticket.Status.SOLVED, Ticket.Status.CLOSED) and v.get("solved_at") is None
        ),
    ),
    Rule(
        code="ticket_closed_after_created",
        model=Ticket,
        kind=Kind.CONSISTENCY,
        field="closed_at",
        label=_("Ticket closed after it was created"),
        message=_("The ticket was closed before it was created."),
        broken=Q(closed_at__lt=F("created_at")),
        check=lambda v: bool(v.get("closed_at") and v.get("created_at") and v["closed_at"] < v["created_at"]),
    ),
    Rule(
        code="ticket_solved_after_created",
        model=Ticket,
        kind=Kind.CONSISTENCY,
        field="solved_at",
        label=_("Ticket solved after it was created"),
        message=_("The ticket was solved before it was created."),
        broken=Q(solved_at__lt=F("created_at")),
        check=lambda v: bool(v.get("solved_at") and v.get("created_at") and v["solved_at"] < v["created_at"]),
    ),
)
RULES_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in RULES}
MODELS: tuple[type[models.Model], ...] = (Customer, Deal, Ticket)
# The columns a failure list shows for each model: its label and the URL it links to.
_TITLE = {Customer: "name", Deal: "title", Ticket: "subject"}


def rules_for(model: type[models.Model], *, kinds: Iterable[str] | None = None) -> list[Rule]:
    """The rules of one model, optionally only some kinds (``Kind.REQUIRED`` …)."""
    wanted = set(kinds) if kinds is not None else None
    return [r for r in RULES if r.model is model and (wanted is None or r.kind in wanted)]


def live_records(model: type[models.Model]) -> QuerySet:
    """Every record the rules check: live customers, their deals, their tickets that are not spam."""
    live = {"merged_into__isnull": True, "is_internal": False}
    if model is Customer:
        return Customer.objects.filter(**live)
    if model is Deal:
        return Deal.objects.filter(**{f"customer__{k}": v for k, v in live.items()})
    if model is Ticket:
        return Ticket.objects.filter(is_spam=False, **{f"customer__{k}": v for k, v in live.items()})
    raise ValueError(f"no data-quality rules for {model!r}")


def checked(model: type[models.Model], *, user: User | None = None) -> QuerySet:
    """The checked records of ``model``, limited to what ``user`` may see when one is given."""
    from crm import selectors

    qs = live_records(model)
    if user is None or user.is_manager:
        return qs
    visible = {
        Customer: selectors.customer_list,
        Deal: selectors.deal_list,
        Ticket: selectors.ticket_list,
    }[model](user=user)
    return qs.filter(pk__in=visible.values("pk"))


def failing_any(model: type[models.Model], *, kinds: Iterable[str] | None = None) -> Q:
    """Records breaking at least one rule of ``model`` (of the given kinds); ``~failing_any(...)`` are the
    records that pass them all (e.g. complete records: ``~failing_any(Customer, kinds=[Kind.REQUIRED])``)."""
    return reduce(operator.or_, (rule.failing for rule in rules_for(model, kinds=kinds)))


def invalid(model: type[models.Model]) -> Q:
    """Records breaking at least one format or consistency rule (the validation error rate's numerator)."""
    return failing_any(model, kinds=[Kind.FORMAT, Kind.CONSISTENCY])


def row_failures(
    model: type[models.Model], values: Mapping[str, Any], *, kinds: Iterable[str] | None = None
) -> list[Rule]:
    """The rules a record with ``values`` (not saved yet) would break, by their Python form."""
    return [rule for rule in rules_for(model, kinds=kinds) if rule.fails(values)]


@dataclass(frozen=True)
class Failure:
    model: str
    pk: int
    rule: str
    message: str
    title: str = ""

    @property
    def url(self) -> str:
        return reverse(f"crm:{self.model}_detail", args=[self.pk])


def iter_failures(
    *, querysets: Mapping[type[models.Model], QuerySet] | None = None, rules: Iterable[Rule] = RULES
) -> Iterator[Failure]:
    """Every (record, rule) failure, streamed: one indexed query per rule, never a Python loop that
    evaluates rules record by record. ``querysets`` narrows the records per model (default: all checked)."""
    for rule in rules:
        qs = (querysets or {}).get(rule.model)
        qs = live_records(rule.model) if qs is None else qs
        rows = qs.filter(rule.failing).order_by("pk").values_list("pk", _TITLE[rule.model])
        for pk, title in rows.iterator(chunk_size=2000):
            yield Failure(rule.model._meta.model_name, pk, rule.code, str(rule.message), title)


def failure_counts(*, querysets: Mapping[type[models.Model], QuerySet] | None = None) -> dict[str, int]:
    """Failures per rule code, one aggregate query per model (conditional counts)."""
    return {code: counts["failing"] for code, counts in rule_counts(querysets=querysets).items()}


def rule_counts(
    *, querysets: Mapping[type[models.Model], QuerySet] | None = None
) -> dict[str, dict[str, int]]:
    """Per rule code: the records it checks and those failing it, in one scan per model (conditional
    counts of both at once)."""
    counts: dict[str, dict[str, int]] = {}
    for model in MODELS:
        qs = (querysets or {}).get(model)
        qs = live_records(model) if qs is None else qs
        aggregates = {}
        for rule in rules_for(model):
            aggregates[f"{rule.code}__failing"] = Count("pk", filter=rule.failing)
            aggregates[f"{rule.code}__checked"] = (
                Count("pk", filter=rule.applies) if rule.applies else Count("pk")
            )
        for name, n in qs.aggregate(**aggregates).items():
            code, what = name.rsplit("__", 1)
            counts.setdefault(code, {})[what] = n
    return counts


# Selectors for the data-quality page
# ---------------------------------------------------------------------------------------------------------


def quality_failure_list(*, user: User, rule: str | None = None) -> QuerySet:
    """Failures the user may fix, as one UNION query of ``{"model", "pk", "rule", "title"}`` rows ordered
    by rule then record; it paginates (``count()`` and slicing run in SQL). Use :func:`failure_links` to
    turn a page into display rows. An unknown ``rule`` gives no rows.
    """
    rules = [RULES_BY_CODE[rule]] if rule in RULES_BY_CODE else ([] if rule else list(RULES))
    parts = [
        checked(r.model, user=user)
        .filter(r.failing)
        .annotate(
            f_model=Value(r.model._meta.model_name, output_field=CharField()),
            f_rule=Value(r.code, output_field=CharField()),
            f_title=F(_TITLE[r.model]),
        )
        .values("f_model", "pk", "f_rule", "f_title")
        .order_by()
        for r in rules
    ]
    if not parts:
        return Customer.objects.none().values("pk")
    first, *rest = parts
    return first.union(*rest, all=True).order_by("f_rule", "pk")


def failure_links(rows: Iterable[Mapping[str, Any]]) -> list[Failure]:
    """Display rows for one page of :func:`quality_failure_list`: message and link to the record."""
    return [
        Failure(
            row["f_model"],
            row["pk"],
            row["f_rule"],
            str(RULES_BY_CODE[row["f_rule"]].message),
            row["f_title"],
        )
        for row in rows
    ]


def quality_failure_counts(*, user: User) -> list[dict[str, Any]]:
    """Per rule: the rule, how many records it checks and how many of those the user may see fail."""
    counts = rule_counts(querysets={model: checked(model, user=user) for model in MODELS})
    return [{"rule": rule, **counts[rule.code]} for rule in RULES]
