"""Staff adoption KPIs against hand-worked values (KPIS.md §7). Times are Europe/Berlin wall-clock times."""

from datetime import date

import pytest

from accounts.models import User
from accounts.services import user_deactivate
from metrics.models import Scope
from tests.factories import make_login, make_team, make_usage_event, make_user
from tests.metrics.kit import compute, d, local, row, value

pytestmark = pytest.mark.django_db

SEATED = local(2026, 1, 1)


@pytest.fixture
def staff():
    team = make_team()
    u1 = make_user(team=team, at=SEATED)
    make_usage_event(u1, local(2026, 3, 2, 10), verb="create")
    make_usage_event(u1, local(2026, 3, 2, 15))
    make_usage_event(u1, local(2026, 3, 31, 23, 59, 59))  # still March
    make_usage_event(u1, local(2026, 4, 1))  # April
    make_login(u1, local(2026, 3, 2, 9))
    u2 = make_user(team=team, at=SEATED)  # only imports, but signs in
    make_usage_event(u2, local(2026, 3, 3), via="import", verb="create")
    make_login(u2, local(2026, 3, 5))
    u3 = make_user(at=local(2026, 3, 28))  # seat younger than 7 days at the end of March
    make_usage_event(u3, local(2026, 3, 29))
    u4 = make_user(with_seat=False, at=SEATED)  # no seat: in neither numerator nor denominator
    make_usage_event(u4, local(2026, 3, 10), verb="create")
    robot = make_user(at=SEATED)
    User.objects.filter(pk=robot.pk).update(is_service_account=True)
    make_usage_event(robot, local(2026, 3, 10), via="api")
    u5 = make_user(at=SEATED)
    make_usage_event(u5, local(2026, 3, 10))
    user_deactivate(user=u5, at=local(2026, 3, 15))  # no seat at the end of March
    u6 = make_user(at=SEATED)
    make_usage_event(u6, local(2026, 3, 20), via="api", verb="create")  # API: active, but no web creation
    return {"team": team, "u1": u1, "u2": u2, "u4": u4}


def test_adoption_rate_action_based(staff):
    # Licensed at the end of March: u1, u2, u6. Active (web/API action): u1, u6 → 2 / 3.
    r = row("adoption_rate")
    assert (r.numerator, r.denominator) == (2, 3)
    assert value("adoption_rate") == d("66.666667")
    assert value("adoption_rate", Scope.TEAM, staff["team"].pk) == d("50")
    assert value("adoption_rate", Scope.USER, staff["u1"].pk) == d("100")
    # A user without a seat has no adoption figure at all.
    assert row("adoption_rate", Scope.USER, staff["u4"].pk) is None
    # Before anyone had a seat: no licensed users → NULL.
    assert row("adoption_rate", first_day=date(2025, 6, 1)).value is None


def test_access_adoption_login_based(staff):
    # Signed in during March: u1 and u2 (imports do not make u2 active, the login counts here) → 2 / 3.
    assert value("access_adoption") == d("66.666667")
    assert value("access_adoption", Scope.USER, staff["u2"].pk) == d("100")


def test_records_created_per_active_user(staff):
    # Web creations by active licensed users: u1's one (u6 created through the API) ÷ 2 active users.
    assert value("records_per_active_user") == d("0.5")
    assert row("records_per_active_user", first_day=date(2025, 6, 1)).value is None


def test_active_days_per_user(staff):
    # u1 acted on 2 and 31 March, u2 on none (imports), u6 on 20 March → (2 + 0 + 1) / 3 licensed = 1.
    assert value("active_days_per_user") == d("1")
    # April: u1's action at 00:00 on 1 April; licensed u1, u2, u3, u6 → 1 / 4.
    assert value("active_days_per_user", first_day=date(2026, 4, 1)) == d("0.25")
    # ISO week of Monday 30 March: u1 active on Tuesday 31 March and Wednesday 1 April; u3's seat is 9 days
    # old when the week ends (6 April 00:00) and counts, its action of Sunday 29 March does not →
    # licensed u1, u2, u3, u6 → 2 / 4.
    assert value("active_days_per_user", granularity="week", first_day=date(2026, 3, 30)) == d("0.5")


def test_a_running_month_is_compared_with_the_same_days_of_the_month_before(staff):
    """KPIS.md §10.1: on 12 April, adoption is compared with 1–12 March: seated at the start of 13 March
    are u1, u2, u6 and u5 (deactivated on the 15th); active in those days u1 (2 March) and u5 (10 March);
    signed in u1 and u2."""
    now = local(2026, 4, 12, 12)

    def compared(code: str) -> dict:
        rows = compute(code, first_day=date(2026, 4, 1), now=now, also=(date(2026, 3, 1),))
        return rows[(Scope.COMPANY, "")].extra.compared

    adoption = compared("adoption_rate")
    assert (adoption["numerator"], adoption["denominator"], adoption["until"]) == (2.0, 4.0, "2026-03-13")
    access = compared("access_adoption")
    assert (access["numerator"], access["denominator"]) == (2.0, 4.0)
    team = compute("adoption_rate", first_day=date(2026, 4, 1), now=now, also=(date(2026, 3, 1),))
    assert team[(Scope.TEAM, str(staff["team"].pk))].extra.compared["denominator"] == 2.0
