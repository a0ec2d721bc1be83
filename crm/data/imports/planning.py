"""Row plans: clean every cell of a row, match it to an existing record, and decide what the import
will do with it (create, update, skip) — shared by the preview and the run.
"""

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils.translation import gettext as _
from psycopg import sql as pg

from accounts.models import User
from crm import normalize, selectors, services
from crm.custom_fields import services as custom_fields
from crm.data import quality
from crm.data.imports import campaigns
from crm.data.imports.cells import Context, RowError
from crm.data.imports.fields import CUSTOM_PREFIX, import_fields
from crm.models import Customer, Deal, ImportJob, PipelineStage, Ticket

CHUNK_SIZE = 2000


CREATE, UPDATE, SKIP, FAIL = "create", "update", "skip", "fail"
# Fields an import may change on an existing record (deals: the stage moves through deal_move_stage).
UPDATABLE = {
    ImportJob.Kind.CUSTOMERS: {*services.CUSTOMER_FIELDS, "status"},
    ImportJob.Kind.DEALS: {*services.DEAL_FIELDS, "stage", "lost_reason"} - {"customer"},
    ImportJob.Kind.TICKETS: set(),
    ImportJob.Kind.CAMPAIGNS: campaigns.UPDATABLE,
}


@dataclass
class RowPlan:
    row: int
    cells: list[str]
    values: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    action: str = CREATE
    target: Any = None
    changes: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.action = FAIL
        self.messages.append(message)


class SeenKeys:
    """The match keys met so far in one file, with the first row that had each: duplicates inside the
    file. Kept in a temporary table, so memory stays flat however long the file is; the table belongs
    to the surrounding transaction and is dropped when it ends (planning always runs in one)."""

    def __init__(self) -> None:
        if not connection.in_atomic_block:
            raise RuntimeError("SeenKeys needs a transaction (its table lives until the transaction ends)")
        self.table = pg.Identifier(f"crm_import_seen_{uuid.uuid4().hex[:16]}")
        with connection.cursor() as cursor:
            cursor.execute(
                pg.SQL(
                    "CREATE TEMPORARY TABLE {} (key uuid PRIMARY KEY, row integer NOT NULL) ON COMMIT DROP"
                ).format(self.table)
            )

    @staticmethod
    def digest(kind: str, key: Any) -> str:
        raw = hashlib.blake2b(f"{kind}\x00{key}".encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=raw))

    def first_rows(self, entries: list[tuple[str, int]]) -> dict[str, int]:
        """Register (key, row) pairs in row order; returns the first row of the file with each key."""
        if not entries:
            return {}
        keys, rows = [key for key, _row in entries], [row for _key, row in entries]
        with connection.cursor() as cursor:
            cursor.execute(
                pg.SQL(
                    "INSERT INTO {} (key, row) SELECT k, r FROM unnest(%s::uuid[], %s::int[]) "
                    "WITH ORDINALITY AS t(k, r, o) ORDER BY o ON CONFLICT (key) DO NOTHING"
                ).format(self.table),
                [keys, rows],
            )
            cursor.execute(
                pg.SQL("SELECT key::text, row FROM {} WHERE key = ANY(%s::uuid[])").format(self.table), [keys]
            )
            return dict(cursor.fetchall())


class Planner:
    """Turns the rows of one job into plans, chunk by chunk; the preview and the run share it."""

    def __init__(self, job: ImportJob, actor: User, mode: str) -> None:
        self.job, self.actor, self.mode = job, actor, mode
        self.kind = job.kind
        self.fields = {f.name: f for f in import_fields(job.kind)}
        self.columns = {int(index): name for index, name in job.mapping.items() if name in self.fields}
        self.ctx = Context(actor=actor, kind=job.kind, date_order=job.date_order)
        self.seen = SeenKeys()
        # Customer id → the campaign of their latest touch, for the rows of the chunk naming a campaign.
        self.latest_campaigns: dict[int, int] = {}

    def chunks(self, rows: Iterable[tuple[int, list[str]]]) -> Iterator[list[RowPlan]]:
        chunk: list[RowPlan] = []
        for number, cells in rows:
            chunk.append(RowPlan(row=number, cells=cells))
            if len(chunk) >= CHUNK_SIZE:
                yield self.plan(chunk)
                chunk = []
        if chunk:
            yield self.plan(chunk)

    def plan(self, chunk: list[RowPlan]) -> list[RowPlan]:
        for plan in chunk:
            self._clean(plan)
        {
            ImportJob.Kind.CUSTOMERS: self._plan_customers,
            ImportJob.Kind.DEALS: self._plan_deals,
            ImportJob.Kind.TICKETS: self._plan_tickets,
            ImportJob.Kind.CAMPAIGNS: lambda plans: campaigns.plan_campaigns(self, plans),
        }[self.kind]([p for p in chunk if p.action != FAIL])
        return chunk

    def _clean(self, plan: RowPlan) -> None:
        for index, name in self.columns.items():
            spec = self.fields[name]
            text = plan.cells[index].strip() if index < len(plan.cells) else ""
            if not text:
                continue
            try:
                plan.values[name] = spec.convert(text, self.ctx)
            except RowError as exc:
                plan.fail(f"{spec.label}: {exc}")
        for spec in self.fields.values():
            if (
                spec.required
                and spec.name not in plan.values
                and not any(m.startswith(f"{spec.label}:") for m in plan.messages)
            ):
                plan.fail(_("%(field)s is required.") % {"field": spec.label})
        if self.actor.is_rep:
            plan.values.pop("owner", None)
        custom = {
            name.removeprefix(CUSTOM_PREFIX): plan.values.pop(name)
            for name in [n for n in plan.values if n.startswith(CUSTOM_PREFIX)]
        }
        if custom:
            plan.values["custom"] = custom

    def _claim(self, claims: list[tuple[RowPlan, str, Any, str]]) -> None:
        """Register each row's key; a row whose key an earlier row of the file had fails with the
        message ("… as row %(row)s"). One batch per chunk, kept in the database, not in memory."""
        digests = [self.seen.digest(kind, key) for _plan, kind, key, _message in claims]
        first = self.seen.first_rows(
            [(d, plan.row) for d, (plan, *_rest) in zip(digests, claims, strict=True)]
        )
        for digest, (plan, _kind, _key, message) in zip(digests, claims, strict=True):
            if plan.action != FAIL and first[digest] != plan.row:
                plan.fail(message % {"row": first[digest]})

    def _quality(self, plan: RowPlan, model: type, values: dict[str, Any]) -> None:
        for rule in quality.row_failures(
            model, values, kinds=[quality.Kind.FORMAT, quality.Kind.CONSISTENCY]
        ):
            plan.fail(str(rule.message))

    # Customers ------------------------------------------------------------------------------------------

    def _plan_customers(self, plans: list[RowPlan]) -> None:
        for plan in plans:
            self._quality(plan, Customer, plan.values)
            plan.values["email_key"] = normalize.email_key(plan.values.get("email", ""))
            plan.values["phone_key"] = normalize.phone_key(plan.values.get("phone", ""))
        plans = [p for p in plans if p.action != FAIL]
        same_email, same_phone = _("Same e-mail as row %(row)s."), _("Same phone number as row %(row)s.")
        self._claim(
            [(p, "email", p.values["email_key"], same_email) for p in plans if p.values["email_key"]]
            + [(p, "phone", p.values["phone_key"], same_phone) for p in plans if p.values["phone_key"]]
        )
        plans = [p for p in plans if p.action != FAIL]
        existing = self._existing_customers(plans)
        matches = [(plan, *self._match_customer(plan, existing)) for plan in plans]
        same_customer = _("Matches the same customer as row %(row)s.")
        self._claim([(plan, "customer", match.pk, same_customer) for plan, match, _how in matches if match])
        named = [match.pk for plan, match, _how in matches if match and "campaign" in plan.values]
        self.latest_campaigns = campaigns.latest_campaigns(named)
        for plan, match, how in matches:
            if plan.action != FAIL:
                self._decide(plan, match, how)

    def _existing_customers(self, plans: list[RowPlan]) -> dict[str, dict[Any, Customer]]:
        emails = {p.values["email_key"] for p in plans} - {""}
        phones = {p.values["phone_key"] for p in plans} - {""}
        ids = {p.values["id"] for p in plans if "id" in p.values}
        if not (emails or phones or ids):
            return {"id": {}, "email": {}, "phone": {}}
        found = (
            Customer.objects.filter(merged_into__isnull=True)
            .filter(Q(email_key__in=emails) | Q(phone_key__in=phones) | Q(pk__in=ids))
            .order_by("-pk")
        )
        index: dict[str, dict[Any, Customer]] = {"id": {}, "email": {}, "phone": {}}
        for customer in found:  # newest first, so the oldest customer with a key wins
            index["id"][customer.pk] = customer
            if customer.email_key:
                index["email"][customer.email_key] = customer
            if customer.phone_key:
                index["phone"][customer.phone_key] = customer
        return index

    def _match_customer(
        self, plan: RowPlan, existing: dict[str, dict[Any, Customer]]
    ) -> tuple[Customer | None, str]:
        values = plan.values
        if "id" in values:
            match = existing["id"].get(values["id"])
            if match is None or not self._may_edit(match):
                plan.fail(
                    _("There is no customer with ID %(id)s that you may change.") % {"id": values["id"]}
                )
                return None, ""
            return match, _("ID")
        for key, how in (("email", _("e-mail")), ("phone", _("phone"))):
            match = existing[key].get(values[f"{key}_key"]) if values[f"{key}_key"] else None
            if match is not None:
                if not self._may_edit(match):
                    # Counted, never named: a rep must not learn a colleague's customer from an e-mail.
                    plan.fail(
                        _("A colleague's customer already has this %(key)s; ask a manager to import it.")
                        % {"key": how}
                    )
                    return None, ""
                return match, how
        return None, ""

    def _may_edit(self, customer: Customer) -> bool:
        return self.actor.is_manager or customer.owner_id == self.actor.pk

    def _decide(self, plan: RowPlan, match: Any, how: str) -> None:
        if match is None:
            if self.mode == ImportJob.Mode.UPDATE:
                plan.action = SKIP
                plan.messages.append(_("No existing record matches; not created in update-only mode."))
            else:
                plan.action = CREATE
            return
        plan.target = match
        if self.mode == ImportJob.Mode.CREATE:
            plan.action = SKIP
            plan.messages.append(
                _("Already exists (same %(key)s: %(name)s); not changed in create-only mode.")
                % {"key": how, "name": str(match)}
            )
            return
        plan.changes = self._changes(plan, match)
        if plan.action == FAIL:
            return
        if not plan.changes:
            plan.action = SKIP
            plan.messages.append(
                _("No changes (matched %(name)s by %(key)s).") % {"name": str(match), "key": how}
            )
        else:
            plan.action = UPDATE

    def _changes(self, plan: RowPlan, match: Any) -> dict[str, Any]:
        """The mapped, non-empty values that differ from the record's; empty cells never erase data."""
        updatable = UPDATABLE[self.kind]
        changes = {}
        for name, value in plan.values.items():
            if name not in updatable:
                continue
            if name == "custom":
                stored = match.custom or {}
                value = {key: v for key, v in value.items() if stored.get(key) != v}
                differs = bool(value)
            elif name == "campaign" and self.kind == ImportJob.Kind.CUSTOMERS:
                # A touch unless it is the customer's first-touch or latest campaign already.
                differs = value.pk not in (match.campaign_id, self.latest_campaigns.get(match.pk))
            elif name in ("owner", "stage", "campaign"):
                differs = getattr(match, f"{name}_id") != value.pk
            elif name == "email":
                differs = normalize.email_key(match.email) != normalize.email_key(value)
            else:
                differs = getattr(match, name) != value
            if differs:
                changes[name] = value
        if "lost_reason" in changes and "stage" not in changes:
            del changes["lost_reason"]
        if self.kind == ImportJob.Kind.CUSTOMERS and changes.get("status") == Customer.Status.LEAD:
            plan.fail(_("A customer cannot become a lead again."))
        return changes

    # Deals and tickets ------------------------------------------------------------------------------------

    def _resolve_customers(self, plans: list[RowPlan]) -> None:
        """Find each row's customer among those the user may see: by e-mail, phone, then exact name."""
        refs = {p.values["customer"] for p in plans}
        emails = {normalize.email_key(r) for r in refs if "@" in r}
        phones = {k for r in refs if (k := normalize.phone_key(r))}
        names = {normalize.name_key(r) for r in refs}
        visible = selectors.customer_list(user=self.actor).select_related(None)
        found = visible.filter(Q(email_key__in=emails) | Q(phone_key__in=phones) | Q(name_key__in=names))
        by_email: dict[str, Customer] = {}
        by_phone: dict[str, Customer] = {}
        by_name: dict[str, list[Customer]] = {}
        for customer in found.order_by("-pk"):  # the oldest customer with a key wins
            if customer.email_key:
                by_email[customer.email_key] = customer
            if customer.phone_key:
                by_phone[customer.phone_key] = customer
            by_name.setdefault(customer.name_key, []).append(customer)
        for plan in plans:
            ref = plan.values["customer"]
            customer = by_email.get(normalize.email_key(ref)) if "@" in ref else None
            if customer is None and (key := normalize.phone_key(ref)):
                customer = by_phone.get(key)
            if customer is None:
                named = by_name.get(normalize.name_key(ref), [])
                if len(named) > 1:
                    plan.fail(
                        _("%(n)s customers are called “%(ref)s”; use the customer's e-mail instead.")
                        % {"n": len(named), "ref": ref}
                    )
                    continue
                customer = named[0] if named else None
            if customer is None:
                plan.fail(
                    _("No customer you may see matches “%(ref)s” (e-mail, phone or exact name).")
                    % {"ref": ref}
                )
                continue
            plan.values["customer"] = customer

    def _plan_deals(self, plans: list[RowPlan]) -> None:
        self._resolve_customers(plans)
        plans = [p for p in plans if p.action != FAIL]
        ids = {p.values["id"] for p in plans if "id" in p.values}
        existing = {d.pk: d for d in selectors.deal_list(user=self.actor).filter(pk__in=ids)} if ids else {}
        decided: list[tuple[RowPlan, Any]] = []
        claims: list[tuple[RowPlan, str, Any, str]] = []
        for plan in plans:
            values = plan.values
            match = None
            if "id" in values:
                match = existing.get(values["id"])
                if match is None:
                    plan.fail(
                        _("There is no deal with ID %(id)s that you may change.") % {"id": values["id"]}
                    )
                    continue
            stage = values.get("stage") or (match.stage if match else None)
            if not self._has_stage_fields(plan, match, stage):
                continue
            closing = stage is not None and stage.kind != PipelineStage.Kind.OPEN
            if "stage" in values and stage.kind == PipelineStage.Kind.LOST and not values.get("lost_reason"):
                plan.fail(_("Say why the deal was lost (Lost reason)."))
                continue
            if values.get("closed_at") and not closing:
                plan.fail(_("Only won or lost deals have a close date; set the stage to Won or Lost."))
                continue
            created = values.get("created_at") or (match.created_at if match else None)
            created = created or values.get("closed_at") or self.ctx.now
            self._quality(
                plan,
                Deal,
                {
                    "amount": values.get("amount", match.amount if match else None),
                    "status": stage.kind if stage else Deal.Status.OPEN,
                    "created_at": created,
                    "closed_at": (values.get("closed_at") or created) if closing else None,
                },
            )
            if plan.action == FAIL:
                continue
            if match is not None:
                claims.append((plan, "deal", match.pk, _("Updates the same deal as row %(row)s.")))
            else:
                key = f"{values['customer'].pk}:{normalize.name_key(values['title'])}"
                claims.append((plan, "new deal", key, _("Same customer and title as row %(row)s.")))
            decided.append((plan, match))
        self._claim(claims)
        for plan, match in decided:
            if plan.action != FAIL:
                self._decide(plan, match, _("ID") if match else "")

    @cached_property
    def _first_stage(self) -> PipelineStage | None:
        """Where a new deal without a stage starts (as ``deal_create`` places it)."""
        return (
            PipelineStage.objects.filter(pipeline__is_default=True, kind=PipelineStage.Kind.OPEN)
            .order_by("order")
            .first()
        )

    def _has_stage_fields(self, plan: RowPlan, match: Deal | None, stage: PipelineStage | None) -> bool:
        """Whether the row fills every deal field required from its stage on (the deal's stored values
        count); a row missing one fails, as a missing required column does."""
        stored = {**(match.custom if match else {}), **plan.values.get("custom", {})}
        for spec in self.fields.values():
            field = spec.custom
            if field is None or field.required_from_stage_id is None or field.key in stored:
                continue
            if custom_fields.required_here(field, stage or self._first_stage):
                plan.fail(_("%(field)s is required.") % {"field": spec.label})
        return plan.action != FAIL

    def _plan_tickets(self, plans: list[RowPlan]) -> None:
        self._resolve_customers(plans)
        claims: list[tuple[RowPlan, str, Any, str]] = []
        for plan in plans:
            if plan.action == FAIL:
                continue
            values = plan.values
            created = values.get("created_at") or self.ctx.now
            status = values.get("status", Ticket.Status.NEW)
            done = status in (Ticket.Status.SOLVED, Ticket.Status.CLOSED)
            if values.get("solved_at") and not done:
                plan.fail(_("Only solved or closed tickets have a solved date."))
                continue
            self._quality(
                plan,
                Ticket,
                {
                    "status": status,
                    "created_at": created,
                    "solved_at": (values.get("solved_at") or created) if done else None,
                },
            )
            if plan.action == FAIL:
                continue
            text = f"{values['subject']}\x00{values.get('description', '')}".casefold()
            key = f"{values['customer'].pk}:{text}"
            claims.append((plan, "ticket", key, _("Same customer, subject and description as row %(row)s.")))
        self._claim(claims)
        for plan, *_rest in claims:
            if plan.action != FAIL:
                self._decide(plan, None, "")


# Writing
