"""A manager adds a custom field and a rule; a rep fills the field on a new deal, which triggers the rule;
a real Celery worker runs it and the task appears in the rep's workspace — in a real browser."""

import pytest
from celery import Celery
from playwright.sync_api import expect

from crm.models import Activity, AutomationRule, AutomationRun, CustomField, Deal
from tests.e2e.conftest import sign_in
from tests.factories import make_customer, make_manager, make_user
from tests.fault_kit import redis_server
from tests.test_faults import celery_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def settle(page) -> None:
    """Wait for the htmx request a choice started to be answered and swapped in."""
    page.wait_for_timeout(100)
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def test_manager_defines_a_field_and_a_rule_and_the_reps_deal_gets_its_task(
    browser, live_server, tmp_path, shot
):
    make_manager(username="mara", first_name="Mara")
    rep = make_user(username="rita", first_name="Rita")
    customer = make_customer(rep, name="Klinikum Nord")

    manager_context = browser.new_context(base_url=live_server.url, locale="en-GB")
    page = manager_context.new_page()
    page.set_default_timeout(10_000)
    sign_in(page, "mara")
    page.get_by_role("link", name="Custom fields").first.click()
    page.get_by_role("link", name="New field").click()
    page.get_by_label("Record type").select_option("deal")
    page.get_by_label("Key").fill("device_lot")
    page.get_by_label("Label (English)").fill("Device lot")
    page.get_by_label("Label (Chinese)").fill("器械批号")
    page.get_by_label("Type", exact=True).select_option("text")
    page.get_by_role("button", name="Create field").click()
    expect(page.get_by_text("device_lot")).to_be_visible()
    field = CustomField.objects.get(key="device_lot")
    assert field.entity == "deal" and field.label_zh == "器械批号"

    page.get_by_role("link", name="Automation").first.click()
    page.get_by_role("link", name="New rule").click()
    page.get_by_label("Name").fill("Check the lot")
    # Each of these choices re-renders the form (htmx) with the inputs that fit it: wait for it.
    page.get_by_label("When").select_option("deal.created")
    settle(page)
    page.locator("[name='conditions-0-field']").select_option("custom.device_lot")
    settle(page)
    page.locator("[name='conditions-0-op']").select_option("set")
    page.locator("[name='actions-0-type']").select_option("create_task")
    settle(page)
    expect(page.locator("[name='actions-0-days']")).to_be_visible()
    page.locator("[name='actions-0-days']").fill("2")
    page.locator("[name='actions-0-subject_en']").fill("Check lot {{ custom.device_lot }} for {{ customer }}")
    page.get_by_label("Switch on now").check()
    shot(page, "automation-rule-form", phone=False)
    page.get_by_role("button", name="Save rule").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Check the lot")
    rule = AutomationRule.objects.get(name="Check the lot")
    assert rule.is_active and rule.trigger == "deal.created"
    assert [(c["field"], c["op"]) for c in rule.conditions] == [("custom.device_lot", "set")]
    assert rule.actions[0]["type"] == "create_task" and rule.actions[0]["days"] == 2
    manager_context.close()

    rep_context = browser.new_context(base_url=live_server.url, locale="en-GB")
    page = rep_context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, "rita")
    page.goto(f"/crm/deals/new/?customer={customer.pk}")
    page.get_by_label("Title").fill("Infusion pumps")
    page.get_by_label("Amount").fill("18000")
    page.get_by_label("Device lot").fill("LOT-42")
    page.get_by_role("button", name="Create deal").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Infusion pumps")
    expect(page.get_by_text("LOT-42")).to_be_visible()
    deal = Deal.objects.get(title="Infusion pumps")
    assert deal.custom == {"device_lot": "LOT-42"}
    (run,) = AutomationRun.objects.filter(rule=rule)

    with redis_server() as (redis_url, _redis), celery_worker(redis_url, tmp_path / "worker.log"):
        sender = Celery("e2e-probe", broker=redis_url, set_as_current=False)
        sender.send_task("crm.tasks.run_automation", args=[run.pk])
        sender.close()
        wait_until(
            lambda: Activity.objects.filter(deal=deal, kind="task").exists(),
            timeout=60,
            what="the rule's task",
        )
    page.goto("/crm/")
    expect(page.get_by_text("Check lot LOT-42 for Klinikum Nord", exact=True)).to_be_visible()
    shot(page, "automation-task-in-workspace", phone=False)
    run.refresh_from_db()
    assert run.status == AutomationRun.Status.DONE
    assert not errors, errors
    rep_context.close()
