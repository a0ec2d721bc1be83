"""Campaigns (KPIS.md §10.11): their services, touches and attribution on customers and deals, merges, the
campaign pages (validation, bad input, optimistic locking, access), imports and the API."""

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from crm import services
from crm.campaigns import services as campaign_services
from crm.campaigns.touches import last_touch_campaign
from crm.data import imports, merge
from crm.models import Campaign, CampaignTouch, Customer, Deal, ImportJob
from crm.services import ConcurrentEditError
from crm.tasks import run_import
from tests.factories import (
    make_agent,
    make_campaign,
    make_closed_deal,
    make_customer,
    make_deal,
    make_import_job,
    make_manager,
    make_user,
)

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
ZONE = ZoneInfo("Pacific/Kiritimati")


@pytest.fixture(autouse=True)
def _far_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=ZONE)


@pytest.fixture
def manager():
    return make_manager(username="mia")


def touches(customer: Customer) -> list[tuple[str, datetime]]:
    return list(customer.campaign_touches.order_by("at", "id").values_list("campaign__name", "at"))


# Services
# ---------------------------------------------------------------------------------------------------------


def test_campaign_names_are_unique_whatever_their_case(manager):
    make_campaign(name="Spring Fair", actor=manager)
    with pytest.raises(ValidationError) as caught:
        make_campaign(name="  spring fair ", actor=manager)
    assert "name" in caught.value.error_dict


def test_only_managers_write_campaigns(manager):
    rep = make_user()
    with pytest.raises(PermissionDenied):
        make_campaign(actor=rep)
    campaign = make_campaign(actor=manager)
    with pytest.raises(PermissionDenied):
        campaign_services.campaign_update(campaign=campaign, actor=rep, data={"cost": 1}, version=None)
    with pytest.raises(PermissionDenied):
        campaign_services.campaign_set_archived(campaign=campaign, actor=rep, archived=True)


def test_the_database_refuses_a_run_ending_before_it_starts_and_a_negative_cost(manager):
    with pytest.raises(ValidationError):
        make_campaign(start=date(2026, 3, 2), end=date(2026, 3, 1), actor=manager)
    with pytest.raises(ValidationError):
        make_campaign(cost=-1, actor=manager)


def test_a_stale_version_is_refused_with_what_changed_and_by_whom(manager):
    campaign = make_campaign(name="Fair", cost=1000, actor=manager)
    other = make_manager(username="otto")
    campaign_services.campaign_update(campaign=campaign, actor=other, data={"cost": Decimal(2000)}, version=1)
    with pytest.raises(ConcurrentEditError) as caught:
        campaign_services.campaign_update(
            campaign=campaign, actor=manager, data={"name": "Fair 2"}, version=1
        )
    assert caught.value.changes == {"cost": (Decimal("1000.00"), Decimal("2000.00"))}
    assert caught.value.changed_by == [other]
    campaign.refresh_from_db()
    assert (campaign.name, campaign.version) == ("Fair", 2)


def test_a_customer_created_with_a_campaign_is_touched_at_its_creation(manager):
    fair = make_campaign(name="Fair", actor=manager)
    customer = make_customer(manager, status="lead", at=at(3, 2), campaign=fair)
    assert touches(customer) == [("Fair", at(3, 2))]


def test_changing_the_campaign_touches_once_and_repeats_are_not_written(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    customer = make_customer(manager, status="lead", at=at(3, 2), campaign=fair)
    services.customer_update(customer=customer, actor=manager, data={"name": "Renamed"})
    assert len(touches(customer)) == 1  # no campaign change, no touch
    services.customer_update(customer=customer, actor=manager, data={"campaign": webinar})
    assert [name for name, _at in touches(customer)] == ["Fair", "Webinar"]
    # The Webinar is already the latest: recording it again writes nothing.
    assert campaign_services.customer_touch_add(customer=customer, campaign=webinar, actor=manager) is None
    assert len(touches(customer)) == 2


def test_a_touch_by_hand_sets_the_first_touch_only_when_there_is_none(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    plain = make_customer(manager, status="lead", at=at(3, 2))
    campaign_services.customer_touch_add(customer=plain, campaign=webinar, actor=manager, at=at(3, 20))
    plain.refresh_from_db()
    assert plain.campaign == webinar
    brought = make_customer(manager, status="lead", at=at(3, 2), campaign=fair)
    campaign_services.customer_touch_add(customer=brought, campaign=webinar, actor=manager, at=at(3, 20))
    brought.refresh_from_db()
    assert brought.campaign == fair  # first touch stays
    assert [name for name, _at in touches(brought)] == ["Fair", "Webinar"]


def test_a_rep_records_touches_on_their_own_customers_only(manager):
    rep, other = make_user(), make_user()
    webinar = make_campaign(name="Webinar", actor=manager)
    with pytest.raises(PermissionDenied):
        campaign_services.customer_touch_add(customer=make_customer(other), campaign=webinar, actor=rep)
    assert campaign_services.customer_touch_add(customer=make_customer(rep), campaign=webinar, actor=rep)


def test_a_new_deal_takes_the_campaign_that_last_touched_its_customer_before_it(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    customer = make_customer(manager, status="lead", at=at(3, 2), campaign=fair)
    campaign_services.customer_touch_add(customer=customer, campaign=webinar, actor=manager, at=at(3, 20))
    assert make_deal(customer, at=at(3, 10)).campaign == fair  # before the webinar touched it
    assert make_deal(customer, at=at(3, 20)).campaign == webinar  # the same instant counts
    assert make_deal(customer, at=at(3, 1)).campaign is None  # before any touch
    chosen = make_deal(customer, at=at(3, 25), campaign=fair)  # chosen by hand, kept
    assert chosen.campaign == fair
    assert last_touch_campaign(customer=customer, at=at(4, 1)) == webinar


def test_a_deal_keeps_its_campaign_when_the_customer_is_touched_later(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    customer = make_customer(manager, status="lead", at=at(3, 2), campaign=fair)
    deal = make_deal(customer, at=at(3, 5))
    campaign_services.customer_touch_add(customer=customer, campaign=webinar, actor=manager, at=at(3, 20))
    deal.refresh_from_db()
    assert deal.campaign == fair
    deal = services.deal_update(deal=deal, actor=manager, data={"campaign": webinar}, version=deal.version)
    assert deal.campaign == webinar  # editable


# Merges (KPIS.md §10.13)
# ---------------------------------------------------------------------------------------------------------


def test_the_survivor_keeps_its_attribution_and_the_touches_move(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    survivor = make_customer(manager, status="lead", at=at(3, 2), campaign=fair)
    duplicate = make_customer(manager, status="lead", at=at(3, 5), campaign=webinar)
    won = make_closed_deal(duplicate, created=at(3, 6), closed=at(3, 9))
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=manager)
    survivor.refresh_from_db()
    assert survivor.campaign == fair
    assert touches(survivor) == [("Fair", at(3, 2)), ("Webinar", at(3, 5))]
    assert not CampaignTouch.objects.filter(customer=duplicate).exists()
    won.refresh_from_db()
    assert (won.customer, won.campaign) == (survivor, webinar)  # the deal keeps its last touch


def test_a_merge_reads_the_touches_as_one_customers_history(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    survivor = make_customer(manager, status="lead", at=at(3, 2))
    duplicate = make_customer(manager, status="lead", at=at(3, 5), campaign=fair)
    campaign_services.customer_touch_add(customer=survivor, campaign=fair, actor=manager, at=at(3, 3))
    campaign_services.customer_touch_add(customer=survivor, campaign=webinar, actor=manager, at=at(3, 10))
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=manager)
    survivor.refresh_from_db()
    # The survivor had no first touch of its own until the fair's (it takes the one it got): Fair. The
    # duplicate's Fair touch (5 March) repeats the Fair of 3 March: one customer, touched once by it.
    assert survivor.campaign == fair
    assert touches(survivor) == [("Fair", at(3, 3)), ("Webinar", at(3, 10))]


def test_a_survivor_without_a_campaign_takes_the_merged_ones(manager):
    fair = make_campaign(name="Fair", actor=manager)
    survivor = make_customer(manager, status="lead", at=at(3, 2))
    duplicate = make_customer(manager, status="lead", at=at(3, 5), campaign=fair)
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=manager)
    survivor.refresh_from_db()
    assert survivor.campaign == fair


# Pages: the campaign form, validation and bad input
# ---------------------------------------------------------------------------------------------------------


def _form(**overrides: str) -> dict[str, str]:
    return {"name": "Spring fair", "channel": "event", "start": "2026-03-01", "end": "2026-03-31",
            "cost": "3,100", "note": "", **overrides}  # fmt: skip


def test_a_manager_creates_a_campaign_through_the_page(client, manager):
    client.force_login(manager)
    response = client.post(reverse("crm:campaign_create"), _form())
    campaign = Campaign.objects.get()
    assert response.status_code == 302 and response["Location"] == campaign.get_absolute_url()
    assert (campaign.cost, campaign.days, campaign.channel) == (Decimal("3100.00"), 31, "event")
    page = client.get(campaign.get_absolute_url())
    assert page.status_code == 200 and "Spring fair" in page.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("end", "2026-02-28", "The last day cannot be before the first day."),
        ("cost", "-5", "Ensure this value is greater than or equal to 0."),
        ("cost", "1" * 30, ""),
        ("cost", "NaN", ""),
        ("cost", "1e309", ""),
        ("start", "0000-01-01", ""),
        ("start", "9999-12-31", "Enter a date between"),
        ("name", "a\x00b", "Null characters are not allowed."),
        ("name", "x" * 10_000, "at most 200 characters"),
        ("name", "   ", "This field is required."),
        ("channel", "tv", "Select a valid choice."),
    ],
)
def test_bad_input_gets_a_field_error_in_the_rerendered_form(client, manager, field, value, message):
    client.force_login(manager)
    response = client.post(reverse("crm:campaign_create"), _form(**{field: value}), headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'class="field field-invalid' in body and f'name="{field}"' in body
    assert message in body
    assert not Campaign.objects.exists()


def test_a_name_taken_is_an_error_at_the_name(client, manager):
    make_campaign(name="Spring fair", actor=manager)
    client.force_login(manager)
    response = client.post(reverse("crm:campaign_create"), _form(name="SPRING FAIR"), headers=HTMX)
    assert response.status_code == 200
    assert "Another campaign has this name" in response.content.decode()


def test_two_managers_editing_at_once_the_second_sees_the_change(client, manager):
    campaign = make_campaign(name="Fair", cost=1000, actor=manager)
    url = reverse("crm:campaign_update", args=[campaign.pk])
    campaign_services.campaign_update(
        campaign=campaign, actor=make_manager(username="otto"), data={"cost": Decimal(1500)}, version=1
    )
    client.force_login(manager)
    response = client.post(url, _form(name="Fair", version="1"), headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "Someone else saved this campaign" in body and "otto" in body
    assert 'name="version" value="2"' in body
    campaign.refresh_from_db()
    assert campaign.cost == Decimal("1500.00")
    # Saving again applies it knowingly.
    response = client.post(url, _form(name="Fair", version="2"))
    campaign.refresh_from_db()
    assert response.status_code == 302 and campaign.cost == Decimal("3100.00")


def test_archiving_hides_a_campaign_from_the_pickers_but_keeps_it_where_set(client, manager):
    fair = make_campaign(name="Fair", actor=manager)
    customer = make_customer(manager, campaign=fair)
    client.force_login(manager)
    client.post(reverse("crm:campaign_archive", args=[fair.pk]))
    fair.refresh_from_db()
    assert fair.is_archived
    new_form = client.get(reverse("crm:customer_create")).content.decode()
    assert f'value="{fair.pk}"' not in new_form
    edit_form = client.get(reverse("crm:customer_update", args=[customer.pk])).content.decode()
    assert f'value="{fair.pk}" selected' in edit_form
    client.post(reverse("crm:campaign_restore", args=[fair.pk]))
    fair.refresh_from_db()
    assert not fair.is_archived


def test_the_customer_form_takes_a_campaign_and_refuses_a_bad_one(client, manager):
    fair = make_campaign(name="Fair", actor=manager)
    client.force_login(manager)
    data = {"name": "Acme", "kind": "company", "source": "event", "language": "en", "campaign": str(fair.pk)}
    client.post(reverse("crm:customer_create"), data)
    customer = Customer.objects.get(name="Acme")
    assert customer.campaign == fair and len(touches(customer)) == 1
    for bad in ("99999999", "x", "\x00", "9" * 40, "-1"):
        response = client.post(
            reverse("crm:customer_create"), {**data, "name": "B", "campaign": bad}, headers=HTMX
        )
        assert response.status_code == 200
        assert "Choose one of the campaigns in the list." in response.content.decode()
    assert Customer.objects.count() == 1


def test_the_lists_filter_by_campaign(client, manager):
    fair = make_campaign(name="Fair", actor=manager)
    brought = make_customer(manager, name="Brought GmbH", campaign=fair)
    make_customer(manager, name="Other GmbH")
    make_deal(brought, title="Fair deal")
    client.force_login(manager)
    customers = client.get(reverse("crm:customer_list"), {"campaign": fair.pk}).content.decode()
    assert "Brought GmbH" in customers and "Other GmbH" not in customers
    deals = client.get(reverse("crm:deal_list"), {"campaign": fair.pk}).content.decode()
    assert "Fair deal" in deals
    # A bad value is ignored, never a server error.
    assert client.get(reverse("crm:customer_list"), {"campaign": "\x00"}).status_code == 200


def test_exports_carry_the_campaign(client, manager):
    fair = make_campaign(name="Fair", actor=manager)
    make_deal(make_customer(manager, campaign=fair), title="Fair deal")
    client.force_login(manager)
    for name in ("crm:customer_export", "crm:deal_export"):
        response = client.get(reverse(name), {"format": "csv"})
        lines = b"".join(response.streaming_content).decode("utf-8-sig").splitlines()
        header = lines[0].split(",")
        assert "Campaign" in header
        assert lines[1].split(",")[header.index("Campaign")] == "Fair"


# Access
# ---------------------------------------------------------------------------------------------------------


def test_campaign_pages_are_the_managers(client, manager):
    campaign = make_campaign(actor=manager)
    for user in (make_user(), make_agent()):
        client.force_login(user)
        for name, args in (
            ("crm:campaign_list", []),
            ("crm:campaign_create", []),
            ("crm:campaign_detail", [campaign.pk]),
            ("crm:campaign_update", [campaign.pk]),
        ):
            assert client.get(reverse(name, args=args)).status_code == 404
        for name in ("crm:campaign_archive", "crm:campaign_restore", "crm:campaign_update"):
            assert client.post(reverse(name, args=[campaign.pk]), _form()).status_code == 404
        assert client.get(reverse("metrics:campaigns")).status_code == 404
    campaign.refresh_from_db()
    assert campaign.version == 1


def test_a_rep_records_a_touch_on_their_customer_and_not_on_a_colleagues(client, manager):
    rep, other = make_user(), make_user()
    webinar = make_campaign(name="Webinar", actor=manager)
    mine, theirs = make_customer(rep), make_customer(other)
    client.force_login(rep)
    page = client.get(mine.get_absolute_url()).content.decode()
    assert reverse("crm:customer_touch", args=[mine.pk]) in page
    assert (
        client.post(reverse("crm:customer_touch", args=[theirs.pk]), {"campaign": webinar.pk}).status_code
        == 404
    )
    assert (
        client.post(reverse("crm:customer_touch", args=[mine.pk]), {"campaign": webinar.pk}).status_code
        == 302
    )
    assert touches(mine)[0][0] == "Webinar" and not touches(theirs)


def test_a_campaign_page_counts_only_what_the_viewer_may_see_and_the_rep_filter_shows_their_own(
    client, manager
):
    rep, other = make_user(), make_user()
    fair = make_campaign(name="Fair", actor=manager)
    make_customer(rep, name="Mine GmbH", campaign=fair)
    make_customer(other, name="Theirs GmbH", campaign=fair)
    client.force_login(rep)
    body = client.get(reverse("crm:customer_list"), {"campaign": fair.pk}).content.decode()
    assert "Mine GmbH" in body and "Theirs GmbH" not in body


# Imports
# ---------------------------------------------------------------------------------------------------------


def run(job: ImportJob, *, mode: str = "both", all_or_nothing: bool = False) -> ImportJob:
    imports.import_job_start(job=job, actor=job.created_by, mode=mode, all_or_nothing=all_or_nothing)
    run_import(job.pk)
    return ImportJob.objects.get(pk=job.pk)


def test_campaigns_are_imported_and_updated_by_name(manager):
    make_campaign(name="Spring Fair", cost=100, start=date(2026, 3, 1), end=date(2026, 3, 3), actor=manager)
    content = (
        "Name,Channel,Start date,End date,Budget,Notes\n"
        'spring fair,event,2026-03-01,2026-03-05,"3.100,00",Hall 4\n'
        "Webinar series,website,01.04.2026,30.06.2026,1500,\n"
        "Backwards,ads,2026-05-02,2026-05-01,10,\n"
        "Too dear,ads,2026-05-01,2026-05-02,99999999999999,\n"
        "Webinar Series,ads,2026-04-01,2026-04-02,1,\n"
    )
    job = make_import_job(manager, content, kind="campaigns", name="campaigns.csv")
    assert set(job.mapping.values()) == {"name", "channel", "start", "end", "cost", "note"}
    job = run(job)
    assert (job.created_count, job.updated_count, job.failed_count) == (1, 1, 3)
    fair = Campaign.objects.get(name="Spring Fair")
    assert (fair.end, fair.cost, fair.note, fair.version) == (
        date(2026, 3, 5),
        Decimal("3100.00"),
        "Hall 4",
        2,
    )
    webinar = Campaign.objects.get(name="Webinar series")
    assert (webinar.start, webinar.end, webinar.channel) == (date(2026, 4, 1), date(2026, 6, 30), "website")
    messages = {entry["row"]: " ".join(entry["messages"]) for entry in job.report}
    assert "The last day cannot be before the first day." in messages[4]
    assert "is too large" in messages[5]
    assert "Same campaign as row 3." in messages[6]


def test_reps_cannot_import_campaigns(client):
    rep = make_user()
    with pytest.raises(PermissionDenied):
        make_import_job(rep, "Name,Start,End\nX,2026-01-01,2026-01-02\n", kind="campaigns")
    client.force_login(rep)
    page = client.get(reverse("crm:import_upload"), {"kind": "campaigns"}).content.decode()
    assert 'value="campaigns"' not in page
    assert client.get(reverse("crm:import_template"), {"kind": "campaigns"}).status_code == 404


def test_the_campaign_column_of_customers_matches_by_name_and_refuses_an_unknown_one(manager):
    fair = make_campaign(name="Spring Fair", actor=manager)
    content = "Name,E-mail,Campaign\nAcme,acme@example.com,SPRING FAIR\nGhost,ghost@example.com,Autumn fair\n"
    job = run(make_import_job(manager, content))
    assert (job.created_count, job.failed_count) == (1, 1)
    acme = Customer.objects.get(name="Acme")
    assert acme.campaign == fair and [name for name, _at in touches(acme)] == ["Spring Fair"]
    message = " ".join(job.report[0]["messages"])
    assert message.startswith("Campaign: there is no campaign named “Autumn fair”")


def test_an_import_naming_a_campaign_for_an_existing_customer_records_a_touch(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    brought = make_customer(manager, name="Brought", email="b@example.com", campaign=fair)
    plain = make_customer(manager, name="Plain", email="p@example.com")
    job = run(
        make_import_job(
            manager, "E-mail,Name,Campaign\nb@example.com,Brought,Webinar\np@example.com,Plain,Webinar\n"
        )
    )
    assert job.updated_count == 2
    brought.refresh_from_db()
    plain.refresh_from_db()
    assert brought.campaign == fair and [n for n, _a in touches(brought)] == ["Fair", "Webinar"]
    assert plain.campaign == webinar and [n for n, _a in touches(plain)] == ["Webinar"]
    # The same list again changes nothing.
    again = run(make_import_job(manager, "E-mail,Name,Campaign\nb@example.com,Brought,Webinar\n"))
    assert again.skipped_count == 1 and len(touches(brought)) == 2


def test_the_campaign_column_of_deals_sets_the_last_touch_or_lets_it_be_found(manager):
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    customer = make_customer(
        manager, name="Acme", email="acme@example.com", status="lead", at=at(1, 5), campaign=fair
    )
    content = (
        "Title,Customer,Campaign,Created on\n"
        "Chosen,acme@example.com,webinar,2026-02-01\n"
        "Found,acme@example.com,,2026-02-01\n"
        "Bad,acme@example.com,Nope,\n"
    )
    job = run(make_import_job(manager, content, kind="deals", name="deals.csv"))
    assert (job.created_count, job.failed_count) == (2, 1)
    assert Deal.objects.get(title="Chosen").campaign == webinar
    assert Deal.objects.get(title="Found").campaign == fair
    assert customer.deals.count() == 2


def test_the_campaign_template_maps_itself(manager):
    rows = imports.template_rows("campaigns")
    assert set(imports.guess_mapping("campaigns", rows[0]).values()) == {
        "name", "channel", "start", "end", "cost", "note",
    }  # fmt: skip


def test_the_customer_detail_shows_its_campaign_and_touches(client, manager):
    fair = make_campaign(name="Fair", actor=manager)
    customer = make_customer(manager, campaign=fair, at=timezone.now() - timedelta(days=3))
    client.force_login(manager)
    body = client.get(customer.get_absolute_url()).content.decode()
    assert "Campaign (first touch)" in body and "Campaign touches" in body and "Fair" in body


def test_the_campaign_list_filters_in_place(client, manager):
    make_campaign(name="Spring fair", channel="event", actor=manager)
    old = make_campaign(name="Old mailing", channel="other", actor=manager)
    campaign_services.campaign_set_archived(campaign=old, actor=manager, archived=True)
    client.force_login(manager)
    page = client.get(reverse("crm:campaign_list")).content.decode()
    assert "Spring fair" in page and "Old mailing" not in page  # archived ones on request
    fragment = client.get(reverse("crm:campaign_list"), {"state": "archived"}, headers=HTMX)
    body = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in body and 'id="campaign-table"' in body
    assert "Old mailing" in body and "Spring fair" not in body
    for hostile in ("\x00", "x" * 10_000, "9999-12-31"):
        assert client.get(reverse("crm:campaign_list"), {"q": hostile, "channel": hostile}).status_code == 200
