"""Rotting deals (KPIS.md §10.7): an open deal untouched — no activity, stage move or edit — for longer
than its stage's rotting days is marked on the board and listed in its owner's workspace. Worked by hand,
in a reporting time zone far from UTC."""

from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm import selectors, services
from crm.models import Deal, PipelineStage
from tests.factories import make_customer, make_deal, make_user, stage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def far_from_utc(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14


def touched(deal: Deal, *, days_ago: float, activity_days_ago: float | None = None) -> None:
    """Make ``deal`` last edited ``days_ago`` (and its last activity ``activity_days_ago``) days ago."""
    now = timezone.now()
    last = now - timedelta(days=activity_days_ago) if activity_days_ago is not None else None
    Deal.objects.filter(pk=deal.pk).update(
        created_at=now - timedelta(days=90), updated_at=now - timedelta(days=days_ago), last_activity_at=last
    )


def test_a_deal_rots_after_its_stages_rotting_days_and_any_touch_resets_it():
    first = stage()
    PipelineStage.objects.filter(pk=first.pk).update(rotting_days=10)
    rep = make_user()
    customer = make_customer(rep)
    rotting, fresh, called, edited = (make_deal(customer) for _ in range(4))
    touched(rotting, days_ago=11, activity_days_ago=12)  # 11 days untouched > 10
    touched(fresh, days_ago=9, activity_days_ago=30)  # edited 9 days ago: not yet
    touched(called, days_ago=40, activity_days_ago=2)  # a call 2 days ago
    touched(edited, days_ago=40, activity_days_ago=40)
    services.deal_update(deal=edited, actor=rep, data={"amount": 5000}, version=None)  # an edit now
    now = timezone.now()
    found = list(selectors.deals_rotting(qs=Deal.objects.all(), now=now))
    assert found == [Deal.objects.get(pk=rotting.pk)]
    # The next stage allows longer: the same deal there is not rotting.
    later = PipelineStage.objects.filter(kind="open").order_by("order")[1]
    PipelineStage.objects.filter(pk=later.pk).update(rotting_days=30)
    Deal.objects.filter(pk=rotting.pk).update(stage=later)
    assert not selectors.deals_rotting(qs=Deal.objects.all(), now=now).exists()


def test_closed_deals_never_rot():
    deal = make_deal()
    services.deal_move_stage(deal=deal, stage=stage("won"), actor=deal.owner)
    touched(deal, days_ago=100)
    assert not selectors.deals_rotting(qs=Deal.objects.all(), now=timezone.now()).exists()


def test_the_board_marks_rotting_cards_and_the_workspace_lists_the_owners_own(client):
    rep, other = make_user(), make_user()
    mine = make_deal(make_customer(rep), title="Old pumps")
    fine = make_deal(make_customer(rep), title="New valves")
    theirs = make_deal(make_customer(other), title="Their stale deal")
    touched(mine, days_ago=20)
    touched(theirs, days_ago=20)
    client.force_login(rep)
    board = client.get(reverse("crm:deal_board")).content.decode()
    card = board[board.index(f'data-deal="{mine.pk}"') - 60 : board.index(f'data-deal="{mine.pk}"')]
    assert "deal-rotting" in card
    assert "Rotting · 20 days idle" in board
    assert "Their stale deal" not in board  # another rep's deals stay hidden
    fine_card = board[board.index(f'data-deal="{fine.pk}"') - 60 : board.index(f'data-deal="{fine.pk}"')]
    assert "deal-rotting" not in fine_card
    workspace = client.get(reverse("crm:workspace")).content.decode()
    assert "1 of my deals is rotting" in workspace and "Old pumps" in workspace
    assert "Their stale deal" not in workspace
    client.force_login(other)
    assert "Old pumps" not in client.get(reverse("crm:workspace")).content.decode()


def test_the_workspace_counts_all_rotting_deals_and_shows_the_longest_untouched(client):
    rep = make_user()
    customer = make_customer(rep)
    deals = [make_deal(customer, title=f"Deal {n}") for n in range(10)]
    for n, deal in enumerate(deals):
        touched(deal, days_ago=15 + n)
    client.force_login(rep)
    page = client.get(reverse("crm:workspace")).content.decode()
    assert "10 of my deals are rotting" in page
    assert "Deal 9" in page and "Deal 2" in page and "Deal 1<" not in page  # the 8 untouched longest


def test_rotting_days_are_validated_per_stage():
    from django.core.exceptions import ValidationError

    first = stage()
    first.rotting_days = 0
    with pytest.raises(ValidationError):
        first.full_clean()
    first.rotting_days = 366
    with pytest.raises(ValidationError):
        first.full_clean()
    assert PipelineStage._meta.get_field("rotting_days").default == 14


def test_the_rotting_kpis_count_value_and_share_by_hand_per_rep_and_company():
    """Now is 20 March 2026, noon on Kiritimati (UTC+14); the first stage rots after 10 days."""
    from datetime import datetime
    from decimal import Decimal
    from zoneinfo import ZoneInfo

    from metrics.models import Scope
    from tests.metrics.kit import compute

    now = datetime(2026, 3, 20, 12, tzinfo=ZoneInfo("Pacific/Kiritimati"))
    PipelineStage.objects.filter(pk=stage().pk).update(rotting_days=10)
    ana, ben = make_user(), make_user()

    def deal(owner, amount: int, *, untouched_days: float, won: bool = False) -> Deal:
        made = make_deal(make_customer(owner), amount=Decimal(amount))
        if won:
            services.deal_move_stage(deal=made, stage=stage("won"), actor=owner)
        at = now - timedelta(days=untouched_days)
        Deal.objects.filter(pk=made.pk).update(
            created_at=now - timedelta(days=60), updated_at=at, last_activity_at=at - timedelta(days=1)
        )
        return made

    deal(ana, 1000, untouched_days=11)  # rotting
    deal(ana, 3000, untouched_days=5)  # 5 days: not yet
    deal(ben, 2000, untouched_days=20)  # rotting
    deal(ben, 9000, untouched_days=40, won=True)  # closed: never rots
    first_day = date(2026, 3, 1)
    for code, company, ana_value in (
        ("rotting_deals", Decimal(2), Decimal(1)),
        ("rotting_value", Decimal(3000), Decimal(1000)),
        ("rotting_share", Decimal(50), Decimal(25)),  # 3000 of 6000 open; Ana's 1000 of her 4000
    ):
        rows = compute(code, first_day=first_day, now=now)
        assert Decimal(rows[(Scope.COMPANY, "")].value) == company, code
        assert Decimal(rows[(Scope.USER, str(ana.pk))].value) == ana_value, code


def test_a_pipeline_worth_billions_is_stored_and_its_share_counts_deals():
    """The rotting share's sample size was its denominator, the open pipeline's amount: at 5 M demo deals it
    passed 2³¹ and the nightly rebuild failed writing it. Sample sizes are bigints now, and the share's is
    the number of open deals (what significance and the low-n warning read), not a sum of euros."""
    from decimal import Decimal

    from metrics.models import KpiSnapshot, Scope
    from metrics.services import snapshots_recompute

    PipelineStage.objects.filter(pk=stage().pk).update(rotting_days=10)
    owner = make_user()
    for _ in range(2):
        made = make_deal(make_customer(owner), amount=Decimal(1_600_000_000))
        touched(made, days_ago=30, activity_days_ago=31)
    today = timezone.localdate()
    run = snapshots_recompute(
        start=today.replace(day=1),
        end=today + timedelta(days=1),
        granularities=["month"],
        kpis=["rotting_share"],
    )
    assert run.status == "ok", run.error
    company = KpiSnapshot.objects.get(kpi="rotting_share", granularity="month", scope=Scope.COMPANY)
    assert company.value == Decimal(100) and company.denominator == Decimal(3_200_000_000)
    assert company.sample_size == 2
