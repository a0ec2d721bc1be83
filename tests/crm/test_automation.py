"""Automation rules: each trigger and each action, conditions (custom fields included), the loop guard,
exactly-once runs when events and workers race, broken rules, the built-in rules, and a real worker."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import Celery
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import UsageEvent
from crm import services
from crm.automation import engine
from crm.automation.events import automation_emit
from crm.automation.services import dry_run, rule_create, rule_update, rules_disable_for_field
from crm.custom_fields.services import field_create, field_update
from crm.models import (
    Activity,
    AutomationRule,
    AutomationRun,
    Customer,
    CustomField,
    Deal,
    PipelineStage,
    Ticket,
    WebhookDelivery,
    WebhookSubscription,
)
from tests.conftest import seed_defaults
from tests.factories import (
    make_agent,
    make_answer,
    make_customer,
    make_deal,
    make_manager,
    make_survey,
    make_team,
    make_ticket,
    make_user,
    stage,
)
from tests.fault_kit import redis_server
from tests.test_faults import celery_worker, wait_until

Trigger = AutomationRule.Trigger
Status = AutomationRun.Status
TASK = {"type": "create_task", "assignee": "owner", "days": 3, "subject_en": "Call {{ customer }}"}


def run_pending() -> list[str]:
    """Do every waiting run, oldest first, as a worker would (including the runs they cause)."""
    done = []
    while (
        pk := AutomationRun.objects.filter(status=Status.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    ):
        done.append(engine.run_one(pk))
    return done


def rule(trigger: str, actions: list[dict], *, params=None, conditions=None, author=None) -> AutomationRule:
    return rule_create(
        actor=author or make_manager(),
        name=f"When {trigger}",
        trigger=trigger,
        params=params or {},
        conditions=conditions or [],
        actions=actions,
        is_active=True,
    )


def tasks_for(record) -> list[Activity]:
    field = {Deal: "deal", Ticket: "ticket", Customer: "customer"}[type(record)]
    return list(Activity.objects.filter(kind="task", **{field: record}).order_by("pk"))


def only_run(of: AutomationRule) -> AutomationRun:
    (run,) = AutomationRun.objects.filter(rule=of)
    return run


# Triggers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_deal_creates_the_owners_task_due_in_n_days_after_the_commit():
    created = rule(Trigger.DEAL_CREATED, [TASK])
    deal = make_deal()
    run = only_run(created)
    assert run.status == Status.PENDING and tasks_for(deal) == []  # nothing before the worker runs it
    assert run_pending() == [Status.DONE]
    (task,) = tasks_for(deal)
    assert task.user == deal.owner and task.subject == f"Call {deal.customer.name}"
    assert timedelta(days=2, hours=23) < task.due_at - timezone.now() <= timedelta(days=3)
    run.refresh_from_db()
    assert run.status == Status.DONE and "Call" in run.outcome_text()
    # The rule's task is the system's doing: it does not count as the owner using the CRM.
    event = UsageEvent.objects.get(object_type="activity", object_id=task.pk, verb=UsageEvent.Verb.CREATE)
    assert event.via == UsageEvent.Via.SYSTEM


@pytest.mark.django_db
def test_nothing_runs_for_a_change_that_rolls_back(django_capture_on_commit_callbacks):
    rule(Trigger.DEAL_CREATED, [TASK])
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        make_deal()
        raise RuntimeError
    assert callbacks == [] and not AutomationRun.objects.exists()


@pytest.mark.django_db
def test_a_stage_change_fires_only_for_the_chosen_stage_and_won_and_lost_fire_on_closing():
    target = PipelineStage.objects.filter(kind="open").order_by("order")[1]
    moved = rule(Trigger.DEAL_STAGE_CHANGED, [TASK], params={"stage": target.pk})
    won = rule(Trigger.DEAL_WON, [{"type": "add_note", "text_en": "Won {{ deal }} for {{ amount }}"}])
    lost = rule(Trigger.DEAL_LOST, [TASK])
    deal, other = make_deal(), make_deal()
    services.deal_move_stage(deal=deal, stage=target, actor=deal.owner)
    services.deal_move_stage(
        deal=other, stage=PipelineStage.objects.filter(kind="open").order_by("order")[2], actor=other.owner
    )
    services.deal_move_stage(deal=deal, stage=stage("won"), actor=deal.owner)
    services.deal_move_stage(deal=other, stage=stage("lost"), actor=other.owner, lost_reason="Price")
    run_pending()
    assert [r.object_id for r in moved.runs.all()] == [deal.pk]
    assert [r.object_id for r in won.runs.all()] == [deal.pk]
    assert [r.object_id for r in lost.runs.all()] == [other.pk]
    note = Activity.objects.get(deal=deal, kind="note")
    assert note.subject == f"Won {deal.title} for 1000.00"
    assert len(tasks_for(deal)) == 1 and len(tasks_for(other)) == 1


@pytest.mark.django_db
def test_a_deal_idle_for_n_days_fires_once_per_idle_stretch_from_the_sweep():
    idle = rule(Trigger.DEAL_IDLE, [TASK], params={"days": 7})
    deal = make_deal(at=timezone.now() - timedelta(days=8))
    fresh = make_deal()
    long_idle = make_deal(at=timezone.now() - timedelta(days=60))  # idle for months: not a new crossing
    assert engine.sweep()["idle"] == 1
    assert engine.sweep()["idle"] == 0  # the same stretch never fires twice
    run_pending()
    assert [r.object_id for r in idle.runs.all()] == [deal.pk]
    assert tasks_for(fresh) == [] and tasks_for(long_idle) == []
    # The rule's own task is activity on the deal: the next stretch starts from it.
    deal.refresh_from_db()
    assert deal.last_activity_at is not None
    later = timezone.now() + timedelta(days=8)
    assert engine.sweep(now=later)["idle"] == 2  # the deal again, and the fresh one's first stretch
    assert sorted(idle.runs.values_list("object_id", flat=True)) == sorted([deal.pk, deal.pk, fresh.pk])


@pytest.mark.django_db
def test_customer_created_and_status_changed():
    created = rule(Trigger.CUSTOMER_CREATED, [{"type": "add_note", "text_en": "Welcome {{ customer }}"}])
    churned = rule(Trigger.CUSTOMER_STATUS_CHANGED, [TASK], params={"status": "churned"})
    customer = make_customer(status=Customer.Status.LEAD)
    services.customer_set_status(customer=customer, status="active", actor=customer.owner)
    services.customer_set_status(customer=customer, status="churned", actor=customer.owner, reason="Moved")
    run_pending()
    assert only_run(created).status == Status.DONE
    assert Activity.objects.get(customer=customer, kind="note").subject == f"Welcome {customer.name}"
    assert only_run(churned).event == {"from": "active", "to": "churned"}
    assert len(tasks_for(customer)) == 1


@pytest.mark.django_db
def test_ticket_created_is_assigned_solved_mails_the_customer_and_sla_near_fires(
    no_auto_assign, django_capture_on_commit_callbacks
):
    agent = make_agent()
    rule(Trigger.TICKET_CREATED, [{"type": "assign_ticket", "user": None}])
    rule(
        Trigger.TICKET_SOLVED,
        [
            {
                "type": "send_email",
                "to": "customer",
                "subject_en": "Solved: {{ ticket }}",
                "subject_zh": "已解决：{{ ticket }}",
                "body_en": "Hello {{ customer }}",
                "body_zh": "您好 {{ customer }}",
            }
        ],
    )
    near = rule(Trigger.TICKET_SLA_NEAR, [TASK], params={"hours": 80})
    ticket = make_ticket(make_customer(language="zh-hans"), priority="normal")  # 72 h to resolve
    run_pending()
    ticket.refresh_from_db()
    assert ticket.assignee == agent
    assert engine.sweep()["sla"] == 1 and engine.sweep()["sla"] == 0
    services.ticket_set_status(ticket=ticket, status="solved", actor=agent)
    with django_capture_on_commit_callbacks(execute=True):
        run_pending()
    (message,) = mail.outbox
    assert message.subject == f"已解决：{ticket.subject}" and message.to == [ticket.customer.email]
    assert only_run(near).status == Status.DONE and len(tasks_for(ticket)) == 1


@pytest.mark.django_db
def test_a_low_survey_score_fires_and_a_high_one_does_not():
    manager = make_manager()
    low = rule(
        Trigger.SURVEY_ANSWERED,
        [{"type": "create_task", "assignee": "manager", "days": 1}],
        params={"score_max": 4},
    )
    survey = make_survey("nps")
    unhappy, happy = make_customer(), make_customer()
    make_answer(survey, unhappy, 3, timezone.now())
    make_answer(survey, happy, 9, timezone.now())
    run_pending()
    assert [r.object_id for r in low.runs.all()] == [unhappy.pk]
    assert [t.user for t in Activity.objects.filter(customer=unhappy, kind="task", user__role="manager")] == [
        manager
    ]


@pytest.mark.django_db
def test_an_activity_of_a_kind_moves_its_deal_and_sets_fields():
    proposal = PipelineStage.objects.filter(kind="open").order_by("order")[2]
    field = field_create(
        actor=make_manager(), entity="deal", key="next_step", label_en="Next step", kind="text"
    )
    rule(
        Trigger.ACTIVITY_LOGGED,
        [{"type": "set_stage", "stage": proposal.pk}],
        params={"activity_kind": "meeting"},
    )
    rule(
        Trigger.DEAL_STAGE_CHANGED,
        [
            {"type": "set_field", "field": f"custom.{field.key}", "value": "Send the quote"},
            {"type": "set_field", "field": "probability", "value": "55"},
        ],
        params={"stage": proposal.pk},
    )
    deal = make_deal()
    services.activity_log(actor=deal.owner, customer=deal.customer, deal=deal, kind="call", subject="Call")
    run_pending()
    deal.refresh_from_db()
    assert deal.stage != proposal  # a call is not a meeting
    services.activity_log(
        actor=deal.owner, customer=deal.customer, deal=deal, kind="meeting", subject="Visit"
    )
    run_pending()
    deal.refresh_from_db()
    assert deal.stage == proposal and deal.custom == {"next_step": "Send the quote"}
    assert deal.probability == 55
    assert deal.history.count() == 4  # created, moved, and each field set: all in the audit trail


@pytest.mark.django_db
def test_set_owner_and_a_webhook_action(settings):
    new_owner = make_user()
    manager = make_manager()
    subscription = WebhookSubscription.objects.create(
        name="Rules",
        url="https://hooks.example.com/in",
        events=[WebhookSubscription.Event.AUTOMATION_RULE_FIRED],
        secret="whsec_x",
        owner=manager,
        created_at=timezone.now(),
    )
    fired = rule(
        Trigger.DEAL_CREATED, [{"type": "set_owner", "user": new_owner.pk}, {"type": "fire_webhook"}]
    )
    deal = make_deal()
    run_pending()
    deal.refresh_from_db()
    assert deal.owner == new_owner
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    assert delivery.payload["type"] == "automation.rule_fired"
    assert delivery.payload["data"] == {
        "rule": {"id": fired.pk, "name": fired.name},
        "record": {"type": "deal", "id": deal.pk},
    }


@pytest.mark.django_db
def test_send_email_to_the_owner_in_their_language_and_a_failed_run_without_an_address(
    django_capture_on_commit_callbacks,
):
    mailed = rule(
        Trigger.DEAL_WON,
        [
            {
                "type": "send_email",
                "to": "owner",
                "subject_en": "Won: {{ deal }}",
                "subject_zh": "赢单：{{ deal }}",
                "body_en": "{{ customer }} signed for {{ amount }}.",
                "body_zh": "{{ customer }} 签约 {{ amount }}。",
            }
        ],
    )
    english = make_user(email="ada@example.com", language="en")
    chinese = make_user(email="li@example.com", language="zh-hans")
    silent = make_user(email="")
    deals = {who: make_deal(make_customer(who)) for who in (english, chinese, silent)}
    for deal in deals.values():
        services.deal_move_stage(deal=deal, stage=stage("won"), actor=deal.owner)
    with django_capture_on_commit_callbacks(execute=True):
        run_pending()
    sent = {message.to[0]: message for message in mail.outbox}
    assert set(sent) == {"ada@example.com", "li@example.com"}  # to the owners, never the customers
    ada, li = sent["ada@example.com"], sent["li@example.com"]
    assert ada.subject == f"Won: {deals[english].title}"
    assert ada.body == f"{deals[english].customer.name} signed for 1000.00."
    assert li.subject == f"赢单：{deals[chinese].title}"
    runs = {r.object_id: r for r in mailed.runs.all()}
    assert (
        runs[deals[english].pk].status == Status.DONE
        and "ada@example.com" in runs[deals[english].pk].outcome_text()
    )
    failed = runs[deals[silent].pk]
    assert failed.status == Status.FAILED and "no e-mail address" in failed.outcome_text()


# Conditions
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_conditions_on_amount_owner_team_and_a_custom_choice_field():
    manager = make_manager()
    line = field_create(
        actor=manager,
        entity="deal",
        key="product_line",
        label_en="Product line",
        label_zh="产品线",
        kind="choice",
        choices=[
            {"key": "pumps", "en": "Pumps", "zh": "泵"},
            {"key": "valves", "en": "Valves", "zh": "阀门"},
        ],
    )
    rep = make_user()
    big_pumps = rule(
        Trigger.DEAL_CREATED,
        [TASK],
        conditions=[
            {"field": "amount", "op": "gte", "value": "5000"},
            {"field": f"custom.{line.key}", "op": "eq", "value": "泵"},  # a label reads as its option
            {"field": "owner", "op": "eq", "value": rep.pk},
        ],
        author=manager,
    )
    customer = make_customer(rep)
    small = make_deal(customer, amount=Decimal("100"), custom={"product_line": "pumps"})
    valves = make_deal(customer, amount=Decimal("9000"), custom={"product_line": "valves"})
    match = make_deal(customer, amount=Decimal("9000"), custom={"product_line": "pumps"})
    elsewhere = make_deal(amount=Decimal("9000"), custom={"product_line": "pumps"})
    run_pending()
    outcome = {r.object_id: r.status for r in big_pumps.runs.all()}
    assert outcome == {
        small.pk: Status.SKIPPED,
        valves.pk: Status.SKIPPED,
        match.pk: Status.DONE,
        elsewhere.pk: Status.SKIPPED,
    }
    assert dry_run(big_pumps)["records"] == 1


@pytest.mark.django_db
def test_a_condition_on_the_team_matches_its_members_deals_only():
    manager = make_manager()
    north, south = make_team(name="North"), make_team(name="South")
    in_north, in_south, no_team = make_user(team=north), make_user(team=south), make_user()
    northern = rule(
        Trigger.DEAL_CREATED,
        [TASK],
        conditions=[{"field": "team", "op": "eq", "value": north.pk}],
        author=manager,
    )
    not_northern = rule(
        Trigger.DEAL_CREATED,
        [TASK],
        conditions=[{"field": "team", "op": "ne", "value": north.pk}],
        author=manager,
    )
    deals = {who: make_deal(make_customer(who)) for who in (in_north, in_south, no_team)}
    run_pending()
    assert {r.object_id: r.status for r in northern.runs.all()} == {
        deals[in_north].pk: Status.DONE,
        deals[in_south].pk: Status.SKIPPED,
        deals[no_team].pk: Status.SKIPPED,
    }
    assert {r.object_id: r.status for r in not_northern.runs.all()} == {
        deals[in_north].pk: Status.SKIPPED,
        deals[in_south].pk: Status.DONE,
        deals[no_team].pk: Status.DONE,  # no team is not North
    }
    assert [t.user for t in tasks_for(deals[in_north])] == [in_north]
    assert dry_run(northern)["records"] == 1


@pytest.mark.django_db
def test_a_condition_on_the_stage_matches_deals_in_that_stage_only():
    first, proposal = PipelineStage.objects.filter(kind="open").order_by("order")[:3:2]
    in_proposal = rule(
        Trigger.DEAL_CREATED,
        [{"type": "add_note", "text_en": "Started in {{ stage }}"}],
        conditions=[{"field": "stage", "op": "eq", "value": proposal.pk}],
    )
    elsewhere = rule(
        Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "stage", "op": "ne", "value": proposal.pk}]
    )
    early, late = make_deal(stage=first), make_deal(stage=proposal)
    run_pending()
    assert {r.object_id: r.status for r in in_proposal.runs.all()} == {
        early.pk: Status.SKIPPED,
        late.pk: Status.DONE,
    }
    assert {r.object_id: r.status for r in elsewhere.runs.all()} == {
        early.pk: Status.DONE,
        late.pk: Status.SKIPPED,
    }
    assert Activity.objects.get(deal=late, kind="note").subject == f"Started in {proposal.name}"
    assert not Activity.objects.filter(deal=early, kind="note").exists()
    assert len(tasks_for(early)) == 1 and tasks_for(late) == []


@pytest.mark.django_db
def test_the_dry_run_counts_the_last_seven_days_only():
    created = rule(Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "amount", "op": "gt", "value": "500"}])
    for _ in range(3):
        make_deal(at=timezone.now() - timedelta(days=2))
    make_deal(amount=Decimal("100"), at=timezone.now() - timedelta(days=1))
    make_deal(at=timezone.now() - timedelta(days=30))
    AutomationRun.objects.all().delete()
    result = dry_run(created)
    assert result["records"] == 3 and result["events"] == 3 and len(result["sample"]) == 3
    assert not AutomationRun.objects.exists()  # a dry run writes nothing


# The loop guard
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_rule_never_refires_on_its_own_change_to_the_same_record():
    stages = list(PipelineStage.objects.filter(kind="open").order_by("order"))
    bounce = rule(Trigger.DEAL_STAGE_CHANGED, [{"type": "set_stage", "stage": stages[2].pk}])
    deal = make_deal()
    services.deal_move_stage(deal=deal, stage=stages[1], actor=deal.owner)
    run_pending()
    deal.refresh_from_db()
    assert deal.stage == stages[2]
    assert sorted(r.status for r in bounce.runs.all()) == [Status.DONE, Status.STOPPED]


@pytest.mark.django_db
def test_a_chain_of_rules_stops_at_depth_three():
    chain = rule(Trigger.ACTIVITY_LOGGED, [TASK])  # each task is a new activity, which fires it again
    deal = make_deal()
    services.activity_log(actor=deal.owner, customer=deal.customer, deal=deal, kind="call", subject="Call")
    run_pending()
    runs = list(chain.runs.order_by("depth"))
    assert [(r.depth, r.status) for r in runs] == [
        (0, Status.DONE),
        (1, Status.DONE),
        (2, Status.DONE),
        (3, Status.STOPPED),
    ]
    assert len(tasks_for(deal)) == 3
    assert "three" in runs[-1].outcome_text()


# Exactly once
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_events_racing_for_one_record_write_one_run_and_do_it_once():
    """Two sweeps report the same event at once, then two workers get the same run at once."""
    seed_defaults()
    won = rule(Trigger.DEAL_WON, [TASK])
    deal = make_deal()
    AutomationRun.objects.all().delete()
    start = threading.Barrier(2)
    results: list = []

    def emit() -> None:
        try:
            start.wait()
            with transaction.atomic():
                automation_emit(trigger=Trigger.DEAL_WON, obj=deal, key="closed:race", rules=[won])
        finally:
            connection.close()

    def work(pk: int) -> None:
        try:
            start.wait()
            results.append(engine.run_one(pk))
        finally:
            connection.close()

    for target, args in ((emit, ()), (work, None)):
        if args is None:
            (pk,) = AutomationRun.objects.values_list("pk", flat=True)
            args = (pk,)
        threads = [threading.Thread(target=target, args=args) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sorted(results, key=str) == [None, Status.DONE]
    assert AutomationRun.objects.count() == 1 and len(tasks_for(deal)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_rule_after_the_commit(tmp_path):
    seed_defaults()
    with redis_server() as (redis_url, _redis), celery_worker(redis_url, tmp_path / "worker.log"):
        rule(Trigger.DEAL_CREATED, [TASK])
        deal = make_deal()
        (run,) = AutomationRun.objects.all()
        sender = Celery("automation-probe", broker=redis_url, set_as_current=False)
        sender.send_task("crm.tasks.run_automation", args=[run.pk])
        sender.send_task("crm.tasks.run_automation", args=[run.pk])  # a duplicate message: done once
        sender.close()

        def done() -> bool:
            run.refresh_from_db()
            return run.status == Status.DONE

        wait_until(done, timeout=60, what="the worker to run the rule")
        wait_until(lambda: len(tasks_for(deal)) >= 1, timeout=10, what="the task")
    assert len(tasks_for(deal)) == 1


# Broken rules and the built-in rules
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_archiving_a_field_switches_off_the_rules_using_it_with_the_reason():
    manager = make_manager()
    field = field_create(actor=manager, entity="deal", key="lot", label_en="Lot", kind="text")
    uses = rule(Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "custom.lot", "op": "set"}])
    other = rule(Trigger.DEAL_CREATED, [TASK])
    field_update(actor=manager, field=field, is_active=False)
    uses.refresh_from_db()
    other.refresh_from_db()
    assert not uses.is_active and "lot" in uses.disabled_reason_text() and other.is_active


@pytest.mark.django_db
def test_a_rule_whose_field_was_removed_fails_its_run_and_is_switched_off_never_stuck():
    manager = make_manager()
    field = field_create(actor=manager, entity="deal", key="lot", label_en="Lot", kind="text")
    broken = rule(Trigger.DEAL_CREATED, [{"type": "set_field", "field": "custom.lot", "value": "A1"}])
    make_deal()
    CustomField.objects.filter(pk=field.pk).delete()  # gone behind the CRM's back
    assert run_pending() == [Status.FAILED]
    broken.refresh_from_db()
    assert not broken.is_active and "lot" in broken.disabled_reason_text()
    assert "lot" in only_run(broken).outcome_text()
    make_deal()
    assert AutomationRun.objects.filter(rule=broken).count() == 1  # off: no more runs


@pytest.mark.django_db
def test_an_action_that_fails_rolls_back_the_runs_other_actions_and_says_why():
    failing = rule(
        Trigger.DEAL_CREATED,
        [TASK, {"type": "send_email", "to": "customer", "subject_en": "Hi"}],
    )
    deal = make_deal(make_customer(email=""))
    assert run_pending() == [Status.FAILED]
    assert tasks_for(deal) == []
    assert "no e-mail address" in only_run(failing).outcome_text()


@pytest.mark.django_db
def test_a_bad_definition_is_refused_when_saved():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="days"):
        rule(Trigger.DEAL_IDLE, [TASK])
    with pytest.raises(ValidationError, match="removed"):
        rule(Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "custom.nothing", "op": "set"}])
    with pytest.raises(ValidationError, match="Only a ticket"):
        rule(Trigger.DEAL_CREATED, [{"type": "assign_ticket"}])


@pytest.mark.django_db
def test_the_builtin_rules_log_their_runs_and_can_be_switched_off():
    agent = make_agent()
    assign = AutomationRule.objects.get(builtin="ticket_auto_assign")
    follow_up = AutomationRule.objects.get(builtin="survey_follow_up")
    ticket = make_ticket()
    assert ticket.assignee == agent and only_run(assign).status == Status.DONE
    survey = make_survey("nps")
    unhappy = make_customer()
    make_answer(survey, unhappy, 2, timezone.now())
    assert len(tasks_for(unhappy)) == 1 and only_run(follow_up).object_id == unhappy.pk
    manager = make_manager()
    rule_update(actor=manager, rule=assign, is_active=False)
    rule_update(actor=manager, rule=follow_up, is_active=False)
    assert make_ticket().assignee is None
    other = make_customer()
    make_answer(survey, other, 1, timezone.now())
    assert tasks_for(other) == []
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        rule_update(actor=manager, rule=assign, name="Mine now")


@pytest.mark.django_db
def test_only_managers_define_rules():
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        rule(Trigger.DEAL_CREATED, [TASK], author=make_user())
    assert not rules_disable_for_field(field=CustomField(entity="deal", key="x"))


@pytest.mark.django_db
def test_the_dry_run_of_near_the_sla_counts_the_tickets_that_came_near_in_the_window(no_auto_assign):
    near = rule(Trigger.TICKET_SLA_NEAR, [TASK], params={"hours": 48})
    came_near = make_ticket(priority="normal", at=timezone.now() - timedelta(days=2))  # due in 24 h
    make_ticket(priority="normal")  # due in 72 h: 48 h before it is still to come
    solved_early = make_ticket(priority="normal", at=timezone.now() - timedelta(days=2))
    services.ticket_set_status(
        ticket=solved_early,
        status="solved",
        actor=solved_early.customer.owner,
        at=timezone.now() - timedelta(days=2),
    )
    result = dry_run(near)
    assert result["records"] == 1 and [t.pk for t in result["sample"]] == [came_near.pk]


# What a review found
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_stored_value_that_is_not_a_number_fails_no_query_and_leaves_no_run_waiting():
    field_create(actor=make_manager(), entity="deal", key="size", label_en="Size", kind="integer")
    sized = rule(
        Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "custom.size", "op": "gt", "value": "3"}]
    )
    big, odd = make_deal(custom={"size": 9}), make_deal()
    Deal.objects.filter(pk=odd.pk).update(custom={"size": "abc"})  # written behind the CRM's back
    assert sorted(run_pending()) == [Status.DONE, Status.SKIPPED]
    assert {r.object_id: r.status for r in sized.runs.all()} == {big.pk: Status.DONE, odd.pk: Status.SKIPPED}


@pytest.mark.django_db
def test_a_required_activity_field_does_not_stop_the_tasks_rules_and_follow_ups_create():
    field_create(
        actor=make_manager(), entity="activity", key="outcome", label_en="Outcome", kind="text", required=True
    )
    rule(Trigger.DEAL_CREATED, [TASK, {"type": "add_note", "text_en": "Noted"}])
    deal = make_deal()
    assert run_pending() == [Status.DONE]
    assert len(tasks_for(deal)) == 1
    unhappy = make_customer()
    make_answer(make_survey("nps"), unhappy, 1, timezone.now())  # the built-in follow-up
    assert len(tasks_for(unhappy)) == 1


@pytest.mark.django_db
def test_a_task_for_the_least_busy_rep_goes_to_a_rep_who_does_not_own_the_customer():
    other_rep = make_user()
    rule(Trigger.DEAL_CREATED, [{"type": "create_task", "assignee": "rep", "days": 1, "subject_en": "Help"}])
    deal = make_deal()
    busy_owner = deal.owner
    for _ in range(3):
        services.activity_log(
            actor=busy_owner, customer=deal.customer, kind="task", subject="Busy", due_at=timezone.now()
        )
    assert run_pending()[-1] == Status.DONE
    assert Activity.objects.get(subject="Help").user == other_rep


@pytest.mark.django_db
def test_changing_a_fields_options_switches_off_the_rules_whose_values_no_longer_fit():
    manager = make_manager()
    line = field_create(
        actor=manager,
        entity="deal",
        key="line",
        label_en="Line",
        kind="choice",
        choices=[{"key": "pumps", "en": "Pumps"}, {"key": "valves", "en": "Valves"}],
    )
    uses_valves = rule(
        Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "custom.line", "op": "eq", "value": "valves"}]
    )
    uses_pumps = rule(
        Trigger.DEAL_CREATED, [TASK], conditions=[{"field": "custom.line", "op": "eq", "value": "pumps"}]
    )
    field_update(actor=manager, field=line, choices=[{"key": "pumps", "en": "Pumps"}])
    uses_valves.refresh_from_db()
    uses_pumps.refresh_from_db()
    assert not uses_valves.is_active and "valves" in uses_valves.disabled_reason_text()
    assert uses_pumps.is_active


@pytest.mark.django_db
def test_erasing_a_customer_scrubs_only_their_own_runs():
    from crm.data.privacy import customer_erase_personal_data

    rule(Trigger.DEAL_CREATED, [TASK])
    li = make_customer(name="Li")
    lisa = make_customer(name="Lisa Chen")
    li_deal, lisa_deal = make_deal(li), make_deal(lisa)
    run_pending()
    customer_erase_personal_data(customer=li, actor=make_manager())
    texts = {run.object_id: run.outcome_text() for run in AutomationRun.objects.filter(object_type="deal")}
    assert "Call Lisa Chen" in texts[lisa_deal.pk]  # another customer's run is left as it was
    assert texts[li_deal.pk].startswith(f"Task “Call Erased customer #{li.pk}”")
