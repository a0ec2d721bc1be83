"""Automation rules ("when … if … then …") and their run log."""

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder


class AutomationRule(models.Model):
    class Trigger(models.TextChoices):
        DEAL_CREATED = "deal.created", _("a deal is created")
        DEAL_STAGE_CHANGED = "deal.stage_changed", _("a deal changes stage")
        DEAL_WON = "deal.won", _("a deal is won")
        DEAL_LOST = "deal.lost", _("a deal is lost")
        DEAL_IDLE = "deal.idle", _("a deal sits in a stage without activity")
        CUSTOMER_CREATED = "customer.created", _("a customer is created")
        CUSTOMER_STATUS_CHANGED = "customer.status_changed", _("a customer changes status")
        TICKET_CREATED = "ticket.created", _("a ticket is created")
        TICKET_SLA_NEAR = "ticket.sla_near", _("a ticket gets near its SLA")
        TICKET_SOLVED = "ticket.solved", _("a ticket is solved")
        SURVEY_ANSWERED = "survey.answered", _("a survey is answered with a low score")
        ACTIVITY_LOGGED = "activity.logged", _("an activity is logged")

    class Builtin(models.TextChoices):
        SURVEY_FOLLOW_UP = "survey_follow_up", _("Follow up a low survey score")
        TICKET_AUTO_ASSIGN = "ticket_auto_assign", _("Assign new tickets to the least busy agent")

    name = models.CharField(_("name"), max_length=120)
    trigger = models.CharField(_("when"), max_length=30, choices=Trigger.choices)
    # What narrows the trigger: {"stage": id, "days": n, "hours": n, "score_max": n, "activity_kind": k,
    # "status": s}; see crm.automation.rules.TRIGGER_PARAMS.
    params = models.JSONField(_("trigger settings"), default=dict, blank=True, encoder=StorableJSONEncoder)
    # [{"field": "amount" | "custom.<key>" | ..., "op": "gte", "value": ...}], all must hold.
    conditions = models.JSONField(_("if"), default=list, blank=True, encoder=StorableJSONEncoder)
    # [{"type": "create_task", ...}], done in order.
    actions = models.JSONField(_("then"), default=list, encoder=StorableJSONEncoder)
    is_active = models.BooleanField(_("on"), default=False)
    builtin = models.CharField(_("built-in"), max_length=30, choices=Builtin.choices, blank=True)
    # A run-log note ({"text": msgid, "params": {...}}) saying why the CRM switched the rule off.
    disabled_reason = models.JSONField(_("why it was switched off"), default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated"), validators=[validate_date_in_range])

    # Set on the rules list by the selectors (rule_list), not fields.
    counts: dict[str, int]
    when: str

    class Meta:
        ordering = ["-builtin", "name", "id"]
        verbose_name = _("automation rule")
        verbose_name_plural = _("automation rules")
        constraints = [
            models.UniqueConstraint(
                fields=["builtin"], condition=~Q(builtin=""), name="automation_builtin_once"
            ),
        ]
        indexes = [models.Index(fields=["trigger"], condition=Q(is_active=True), name="automation_active")]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return str(self.get_builtin_display()) if self.builtin else self.name

    def disabled_reason_text(self) -> str:
        return note_text(self.disabled_reason) if self.disabled_reason else ""


class AutomationRun(models.Model):
    """One rule on one record for one event: written once (the unique key), done once (its row lock)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting")
        DONE = "done", _("done")
        SKIPPED = "skipped", _("conditions not met")
        STOPPED = "stopped", _("stopped by the loop guard")
        FAILED = "failed", _("failed")

    rule = models.ForeignKey(AutomationRule, on_delete=models.CASCADE, related_name="runs")
    object_type = models.CharField(_("record type"), max_length=10)
    object_id = models.BigIntegerField(_("record"))
    event_key = models.CharField(_("event"), max_length=120)
    event = models.JSONField(default=dict, blank=True, encoder=StorableJSONEncoder)
    depth = models.PositiveSmallIntegerField(default=0)
    # The (rule, record type, record id) links of the chain of rules that led here (the loop guard).
    chain = models.JSONField(default=list, blank=True)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.PENDING)
    # [{"text": an English msgid, "params": {...}}]: translated when shown (``outcome_text``).
    outcome = models.JSONField(_("outcome"), default=list, blank=True, encoder=StorableJSONEncoder)
    created_at = models.DateTimeField(_("created"), validators=[validate_date_in_range])
    finished_at = models.DateTimeField(
        _("finished"), null=True, blank=True, validators=[validate_date_in_range]
    )

    # Set on the run log by the selectors (runs_with_records), not fields.
    record: tuple[str, str] | None
    record_type: str

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("rule run")
        verbose_name_plural = _("rule runs")
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "object_type", "object_id", "event_key"], name="automation_run_once"
            ),
        ]
        indexes = [
            models.Index(fields=["rule", "-created_at"], name="automation_run_log"),
            models.Index(fields=["created_at"], condition=Q(status="pending"), name="automation_run_pending"),
            BrinIndex(fields=["created_at"], name="automation_run_created_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.object_type}:{self.object_id} {self.event_key} ({self.status})"

    def outcome_text(self) -> str:
        """What the run did or why it did not, in the page's language."""
        return " ".join(note_text(entry) for entry in self.outcome or [])


def note_text(entry: dict) -> str:
    """A note in the page's language."""
    text = gettext(entry.get("text", ""))
    try:
        return text % entry["params"] if entry.get("params") else text
    except (KeyError, TypeError, ValueError):
        return text


def note(text: str, **params: object) -> dict:
    """One entry of a run's outcome: ``text`` is an English msgid (marked with gettext_noop)."""
    return (
        {"text": text, "params": {k: str(v)[:300] for k, v in params.items()}} if params else {"text": text}
    )
