"""Duplicate scan (blocking, scoring, decisions, scale), merge service and the review pages."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import UsageEvent
from crm import selectors
from crm.data import dedupe, merge
from crm.data.dedupe import duplicate_scan
from crm.data.merge import MergeConflict, customer_merge, duplicate_mark_not_duplicate
from crm.models import (
    Activity,
    Customer,
    CustomerMerge,
    CustomerStatusChange,
    Deal,
    DuplicateCandidate,
    Ticket,
)
from crm.tasks import scan_duplicates
from tests.factories import (
    make_agent,
    make_customer,
    make_deal,
    make_duplicate_pair,
    make_invitation,
    make_manager,
    make_survey,
    make_task,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def pairs() -> dict[frozenset, DuplicateCandidate]:
    return {frozenset((p.customer_a_id, p.customer_b_id)): p for p in DuplicateCandidate.objects.all()}


def pair_of(a: Customer, b: Customer) -> DuplicateCandidate | None:
    return pairs().get(frozenset((a.pk, b.pk)))


@pytest.fixture
def rep():
    return make_user(username="rita")


@pytest.fixture
def manager():
    return make_manager(username="mia")


# Scan
# ---------------------------------------------------------------------------------------------------------


def test_scan_finds_same_email_phone_and_company_name(rep):
    a = make_customer(
        rep, name="Nordlicht Solar GmbH", email="Kontakt@Nordlicht.example", phone="+49 40 1234567"
    )
    b = make_customer(rep, name="Nordlicht Solar AG", email="kontakt@nordlicht.example", phone="040/1234567")
    c = make_customer(rep, name="Hanse Logistik", email="a@hanse.example", phone="+49 421 555000")
    d = make_customer(rep, name="Elbe Transporte", email="b@elbe.example", phone="0421 555000")
    e = make_customer(rep, name="Kranich Bau KG", email="x@kranich.example")
    f = make_customer(rep, name="Kranich-Bau", email="y@other.example")
    make_customer(rep, name="Somebody Else", email="z@else.example")
    result = duplicate_scan()
    assert result.pairs == 3
    same_all = pair_of(a, b)
    # kontakt@ is a shared mailbox, weaker evidence than a personal address: 1 − 0.4 × 0.15 × 0.3.
    assert same_all.reason == "email,phone,name" and same_all.score == Decimal("0.982")
    assert same_all.get_reason_display() == "same e-mail + same phone + same name"
    assert pair_of(c, d).reason == "phone" and pair_of(c, d).score == Decimal("0.850")
    assert pair_of(e, f).reason == "name" and pair_of(e, f).score == Decimal("0.700")


def test_scan_finds_similar_names_and_same_company_domain(rep):
    a = make_customer(rep, name="Nordlicht Solartechnik", email="a.berg@nordlicht-solar.example")
    b = make_customer(rep, name="Nordlicht Solartechnick", email="")
    c = make_customer(rep, name="Anna Schmidt", kind="person", email="anna.schmidt@hanse-logistik.example")
    d = make_customer(rep, name="A. Schmidt", kind="person", email="a.schmidt@hanse-logistik.example")
    duplicate_scan()
    similar = pair_of(a, b)
    assert similar.reason == "similar_name" and similar.name_similarity == Decimal("0.808")
    assert similar.get_reason_display() == "similar name 0.81"
    by_domain = pair_of(c, d)
    assert by_domain.reason == "similar_name,domain"
    assert by_domain.get_reason_display() == "similar name 0.64 + same e-mail domain"


def test_free_mail_domains_and_role_mailboxes_do_not_count_as_a_company_domain(rep):
    make_customer(rep, name="Anna Müller", kind="person", email="anna.mueller@gmail.com")
    make_customer(rep, name="Anna Mueller", kind="person", email="a.mueller@gmail.com")
    make_customer(rep, name="Acme Solar", email="sales@acme.example")
    make_customer(rep, name="Acme Solaris", email="info@acme.example")
    make_customer(rep, name="Jan Becker", kind="person", email="jan@qq.com")
    make_customer(rep, name="Jan Becker", kind="person", email="becker@163.com")
    duplicate_scan()
    assert not DuplicateCandidate.objects.exists()


def test_a_shared_role_mailbox_is_weaker_evidence_than_a_personal_address(rep):
    a = make_customer(rep, name="Alpha Trading", email="info@alpha.example")
    b = make_customer(rep, name="Beta Services", email="info@alpha.example")
    c = make_customer(rep, name="Gamma", email="jo@gamma.example")
    d = make_customer(rep, name="Delta", email="jo@gamma.example")
    duplicate_scan()
    assert pair_of(a, b).score == Decimal("0.600")
    assert pair_of(c, d).score == Decimal("0.900")


def test_not_a_duplicate_is_never_proposed_again(rep, manager):
    a = make_customer(rep, name="Twin One", email="same@twins.example")
    b = make_customer(rep, name="Twin Two", email="same@twins.example")
    duplicate_scan()
    duplicate_mark_not_duplicate(candidate=pair_of(a, b), actor=manager)
    scan_duplicates()
    scan_duplicates()
    decided = pair_of(a, b)
    assert decided.status == DuplicateCandidate.Status.NOT_DUPLICATE and decided.decided_by == manager
    assert not dedupe.duplicate_candidate_list(user=manager).exists()


def test_rescanning_is_idempotent_and_drops_pairs_that_no_longer_apply(rep):
    a = make_customer(rep, name="Alpha", email="x@alpha.example")
    b = make_customer(rep, name="Omega", email="x@alpha.example")
    scan_duplicates()
    scan_duplicates()
    assert DuplicateCandidate.objects.count() == 1
    Customer.objects.filter(pk=b.pk).update(
        email="y@omega.example", email_key="y@omega.example", updated_at=timezone.now()
    )
    duplicate_scan(now=timezone.now() + timedelta(minutes=1))
    assert pair_of(a, b) is None


def test_internal_and_merged_customers_are_not_scanned(rep):
    make_customer(rep, name="Test", email="t@crm.example", is_internal=True)
    make_customer(rep, name="Test", email="t@crm.example", is_internal=True)
    survivor = make_customer(rep, name="Acme", email="a@acme.example")
    gone = make_customer(rep, name="Acme", email="a@acme.example")
    Customer.objects.filter(pk=gone.pk).update(merged_into=survivor)
    duplicate_scan()
    assert not DuplicateCandidate.objects.exists()


def test_recent_customers_are_looked_up_through_the_trigram_index(rep):
    old = make_customer(rep, name="Zeppelin Maschinenbau Friedrichshafen", email="")
    new = make_customer(rep, name="Maschinenbau Zeppelin Friedrichshafn", email="")
    # Between the two in alphabetical order of the names and of the reversed names: no neighbours.
    for name in ("Nord Medien", "Ost Studien", "Pol Serien", "Quell Linien", "Rhein Arien"):
        make_customer(rep, name=name, email="")
    with connection.cursor() as cursor:
        cursor.execute("SELECT similarity(%s, %s)", [old.name_key, new.name_key])
        assert cursor.fetchone()[0] >= dedupe.NAME_THRESHOLD
    assert (old.pk, new.pk) not in dedupe._neighbour_pairs()
    duplicate_scan()
    assert pair_of(old, new).reason == "similar_name"


@pytest.mark.parametrize("copies", [3, 30])
def test_the_number_of_queries_does_not_grow_with_the_customers(rep, copies, django_assert_max_num_queries):
    for i in range(copies):
        make_customer(
            rep, name=f"Firm {i} Alpha", email=f"dup{i % 3}@dups.example", phone=f"+49 30 55500{i:02d}"
        )
    with CaptureQueriesContext(connection) as queries:
        duplicate_scan()
    assert DuplicateCandidate.objects.exists()
    assert len(queries) <= 14


# Merge
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def twins(rep):
    other = make_user(username="otto")
    a = make_customer(
        rep, name="Acme GmbH", email="info@acme.example", city="Berlin", status=Customer.Status.LEAD
    )
    b = make_customer(
        other, name="ACME", email="sales@acme.example", industry="Energy", phone="+49 30 1234567"
    )
    return a, b


def test_merge_moves_everything_and_keeps_the_loser(manager, twins):
    survivor, loser = twins
    deal = make_deal(loser, title="Loser deal")
    ticket = make_ticket(loser, subject="Loser ticket")
    task = make_task(loser, subject="Call back")
    survey = make_survey()
    invitation = make_invitation(survey, loser)
    history_rows = loser.status_changes.count()
    record = customer_merge(
        survivor=survivor,
        merged=loser,
        actor=manager,
        choices={"industry": loser.pk, "phone": loser.pk, "owner": loser.pk},
    )
    survivor.refresh_from_db()
    loser.refresh_from_db()
    assert loser.merged_into == survivor
    assert Customer.objects.filter(pk=loser.pk).exists()
    assert not selectors.customer_list(user=manager).filter(pk=loser.pk).exists()
    for obj in (deal, ticket, task, invitation):
        obj.refresh_from_db()
        assert obj.customer_id == survivor.pk
    # The survivor keeps its own history plus the merge's change of its status; the loser keeps its own.
    assert CustomerStatusChange.objects.filter(customer=survivor).count() == 1 + 1
    assert loser.status_changes.count() == history_rows
    assert (survivor.name, survivor.city, survivor.industry, survivor.owner) == (
        "Acme GmbH",
        "Berlin",
        "Energy",
        loser.owner,
    )
    assert survivor.phone_key == "+49301234567"
    assert (
        survivor.status == Customer.Status.ACTIVE and survivor.became_customer_at == loser.became_customer_at
    )
    assert record.moved == {
        "deal": 1,
        "ticket": 1,
        "activity": 1,
        "surveyinvitation": 1,
    }
    assert record.chosen["industry"] == {
        "kept": "merged",
        "value": "Energy",
        "survivor": "",
        "merged": "Energy",
    }
    assert record.chosen["city"]["kept"] == "survivor"
    assert record.merged_snapshot["name"] == "ACME"
    latest = survivor.history.first()
    assert (
        latest.history_change_reason == f"Merged with ACME (#{loser.pk})" and latest.history_user == manager
    )
    assert loser.history.first().history_change_reason.startswith("Merged into Acme GmbH")
    assert deal.history.first().customer_id == survivor.pk and deal.version == 2
    assert UsageEvent.objects.filter(verb="merge", object_id=survivor.pk, user=manager).exists()


def test_merge_settles_the_candidate_pairs(manager, twins, rep):
    survivor, loser = twins
    third = make_customer(rep, name="Acme Holding")
    fourth = make_customer(rep, name="Not Acme")
    candidate = make_duplicate_pair(survivor, loser)
    make_duplicate_pair(loser, third)
    make_duplicate_pair(loser, fourth, status="not_duplicate")
    customer_merge(survivor=survivor, merged=loser, actor=manager, candidate=candidate)
    candidate.refresh_from_db()
    assert candidate.status == "merged" and candidate.decided_by == manager
    assert pair_of(loser, third) is None
    assert pair_of(survivor, fourth).status == "not_duplicate"


def test_rows_that_would_break_a_unique_rule_stay_with_the_merged_customer(manager, twins):
    from surveys.models import SurveyCampaign

    survivor, loser = twins
    survey = make_survey()
    campaign = SurveyCampaign.objects.create(survey=survey, created_at=timezone.now())
    kept = make_invitation(survey, loser, campaign=campaign)
    make_invitation(survey, survivor, campaign=campaign)
    moved = make_invitation(survey, loser)
    record = customer_merge(survivor=survivor, merged=loser, actor=manager)
    kept.refresh_from_db()
    moved.refresh_from_db()
    assert kept.customer_id == loser.pk and moved.customer_id == survivor.pk
    assert record.moved["surveyinvitation"] == 1 and record.moved["surveyinvitation_kept"] == 1


def test_merging_a_customer_that_was_merged_meanwhile_is_refused(manager, twins, rep):
    survivor, loser = twins
    third = make_customer(rep, name="Acme Third")
    stale_copy = Customer.objects.get(pk=loser.pk)
    customer_merge(survivor=survivor, merged=loser, actor=manager)
    with pytest.raises(MergeConflict, match="already been merged"):
        customer_merge(survivor=third, merged=stale_copy, actor=manager)
    with pytest.raises(MergeConflict):
        customer_merge(survivor=stale_copy, merged=third, actor=manager)
    assert Customer.objects.get(pk=third.pk).merged_into is None


def test_a_decided_pair_cannot_be_merged_or_dismissed_again(manager, twins):
    candidate = make_duplicate_pair(*twins)
    duplicate_mark_not_duplicate(candidate=candidate, actor=manager)
    with pytest.raises(MergeConflict, match="already decided"):
        customer_merge(survivor=twins[0], merged=twins[1], actor=manager, candidate=candidate)
    with pytest.raises(MergeConflict):
        duplicate_mark_not_duplicate(candidate=candidate, actor=manager)


def test_only_managers_merge(twins, rep):
    with pytest.raises(PermissionDenied):
        customer_merge(survivor=twins[0], merged=twins[1], actor=rep)
    with pytest.raises(ValidationError):
        customer_merge(survivor=twins[0], merged=twins[0], actor=make_manager())


def test_merge_generic_relations_cover_every_reverse_foreign_key():
    names = {rel.related_model._meta.label for rel in Customer._meta.related_objects}
    assert {
        "crm.Deal",
        "crm.Ticket",
        "crm.Activity",
        "crm.CustomerStatusChange",
        "surveys.SurveyInvitation",
    } <= names
    assert (CustomerMerge, DuplicateCandidate, CustomerStatusChange) == merge._STAYS


# Pages
# ---------------------------------------------------------------------------------------------------------


def test_duplicate_pages_are_for_managers_only(client, twins, rep):
    candidate = make_duplicate_pair(*twins)
    for user in (rep, make_agent()):
        client.force_login(user)
        assert client.get(reverse("crm:duplicate_list")).status_code == 404
        assert (
            client.get(reverse("crm:duplicate_detail", args=[candidate.pk]), headers=HTMX).status_code == 404
        )
        assert client.post(reverse("crm:duplicate_detail", args=[candidate.pk])).status_code == 404
        assert client.post(reverse("crm:duplicate_dismiss", args=[candidate.pk])).status_code == 404
        assert client.post(reverse("crm:duplicate_scan")).status_code == 404
    assert Customer.objects.filter(merged_into__isnull=False).count() == 0


def test_duplicate_list_page_and_fragment(client, manager, twins):
    make_duplicate_pair(*twins, reason="email,similar_name")
    client.force_login(manager)
    page = client.get(reverse("crm:duplicate_list"))
    assert page.status_code == 200 and b"<html" in page.content
    assert b"ACME" in page.content and b"same e-mail + similar name" in page.content
    fragment = client.get(reverse("crm:duplicate_list"), {"status": "merged"}, headers=HTMX)
    assert b"<html" not in fragment.content and b"ACME" not in fragment.content
    assert client.post(reverse("crm:duplicate_scan"))["Location"] == reverse("crm:duplicate_list")


def test_review_and_merge_through_the_page(client, manager, twins):
    survivor, loser = twins
    make_deal(loser)
    candidate = make_duplicate_pair(survivor, loser)
    client.force_login(manager)
    page = client.get(reverse("crm:duplicate_detail", args=[candidate.pk])).content.decode()
    assert "Record to keep" in page and "Deals: 1" in page
    form = {"survivor": survivor.pk, "name": loser.pk, "email": survivor.pk, "industry": loser.pk}
    response = client.post(reverse("crm:duplicate_detail", args=[candidate.pk]), form, headers=HTMX)
    assert response["HX-Redirect"] == reverse("crm:customer_merges", args=[survivor.pk])
    survivor.refresh_from_db()
    assert survivor.name == "ACME" and survivor.deals.count() == 1
    explained = client.get(reverse("crm:customer_merges", args=[survivor.pk])).content.decode()
    assert "Merged by mia" in explained and "Energy" in explained
    detail = client.get(survivor.get_absolute_url()).content.decode()
    assert "1 duplicate record was merged into this customer" in detail


def test_merging_a_pair_merged_meanwhile_shows_a_message_not_an_error(client, manager, twins, rep):
    survivor, loser = twins
    customer_merge(survivor=survivor, merged=loser, actor=manager)
    fresh = make_duplicate_pair(loser, make_customer(rep, name="Yet another"))
    client.force_login(manager)
    response = client.post(
        reverse("crm:duplicate_detail", args=[fresh.pk]), {"survivor": fresh.customer_a_id}, headers=HTMX
    )
    assert response.status_code == 200
    assert b"already been merged into another customer meanwhile" in response.content


def test_dismissing_a_pair(client, manager, twins):
    candidate = make_duplicate_pair(*twins)
    client.force_login(manager)
    response = client.post(reverse("crm:duplicate_dismiss", args=[candidate.pk]))
    assert response.status_code == 302
    candidate.refresh_from_db()
    assert candidate.status == "not_duplicate"
    again = client.post(reverse("crm:duplicate_dismiss", args=[candidate.pk]), follow=True)
    assert b"already decided" in again.content


def test_merge_explanations_follow_the_access_rules(client, manager, twins, rep):
    survivor, loser = twins
    customer_merge(survivor=survivor, merged=loser, actor=manager)
    client.force_login(rep)
    assert client.get(reverse("crm:customer_merges", args=[survivor.pk])).status_code == 200
    client.force_login(make_user())
    assert client.get(reverse("crm:customer_merges", args=[survivor.pk])).status_code == 404


def test_activity_and_ticket_counts_on_the_review_page_do_not_multiply(client, manager, twins):
    survivor, loser = twins
    for _ in range(3):
        make_deal(loser)
        make_ticket(loser)
    Activity.objects.filter(customer=loser).delete()
    make_task(loser)
    candidate = make_duplicate_pair(survivor, loser)
    client.force_login(manager)
    page = client.get(reverse("crm:duplicate_detail", args=[candidate.pk])).content.decode()
    assert "Deals: 3 · tickets: 3 · activities: 1" in page
    assert (
        Deal.objects.filter(customer=loser).count() == 3
        and Ticket.objects.filter(customer=loser).count() == 3
    )
