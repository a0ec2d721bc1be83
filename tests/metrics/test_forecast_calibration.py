"""Stage-probability calibration (KPIS.md §10.6), worked by hand on Kiritimati time (UTC+14), and the page.

Now is 15 July 2026; the window is the deals closed in the last four whole quarters, 1 July 2025 – 1 July
2026. The company has a second pipeline, "Projects", with one open stage, Offer, configured at 60 %.

Offer: 20 deals reached it, 3 won → 15 %. Wilson 95 %: centre 0.15 + 1.96²/40 = 0.24604, spread
1.96·√(0.15·0.85/20 + 1.96²/1600) = 0.183612, ÷ (1 + 1.96²/20) = 1.19208 → [0.05237, 0.36043]; 60 % lies
outside: suggest 15 %.
Negotiation (default pipeline, 75 %): 20 reached (one of them moved back to Proposal before it was lost,
which does not un-reach Negotiation), 15 won → 75 %, Wilson [0.53130, 0.88814]: 75 % inside, no suggestion.
Not counted: a deal lost as "duplicate", and one closed in June 2025 (before the window).
"""

from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from crm import services
from crm.models import Pipeline, PipelineStage, StageProbabilityVersion
from metrics.forecasts import selectors
from metrics.forecasts.models import FrozenForecastItem
from metrics.forecasts.services import forecast_calibration_compute, forecasts_freeze
from tests.factories import make_agent, make_customer, make_deal, make_manager, make_user

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
NOW = datetime(2026, 7, 15, 12, tzinfo=ZONE)
URL = "/metrics/forecasts/"
APPLY = "/metrics/forecasts/apply/"


FORM = "application/x-www-form-urlencoded"


def encoded(data: dict[str, str]) -> str:
    """Form or query text, byte-exact (lone surrogates too, as a hostile client sends them)."""
    return "&".join(f"{k}={quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in data.items())


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def far_from_utc(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def st(name: str) -> PipelineStage:
    return PipelineStage.objects.get(pipeline__is_default=True, name=name)


def walk(customer, path: list[PipelineStage], *, won: bool, closed: datetime, reason: str = "Price") -> None:
    """A deal created at the first stage of ``path`` 60 days before it closed, moved through the rest a day
    apart, then won or lost."""
    from datetime import timedelta

    start = closed - timedelta(days=60)
    deal = make_deal(customer, at=start, stage=path[0])
    for i, step in enumerate(path[1:], start=1):
        deal = services.deal_move_stage(deal=deal, stage=step, actor=deal.owner, at=start + timedelta(days=i))
    end = PipelineStage.objects.get(pipeline=path[0].pipeline, kind="won" if won else "lost")
    services.deal_move_stage(
        deal=deal, stage=end, actor=deal.owner, at=closed, lost_reason="" if won else reason
    )


def projects_pipeline() -> PipelineStage:
    """The "Projects" pipeline; returns its open stage, Offer (60 %)."""
    projects = Pipeline.objects.create(name="Projects")
    offer = PipelineStage.objects.create(
        pipeline=projects, name="Offer", order=10, probability=60, kind="open"
    )
    PipelineStage.objects.create(pipeline=projects, name="Won", order=90, probability=100, kind="won")
    PipelineStage.objects.create(pipeline=projects, name="Lost", order=99, probability=0, kind="lost")
    return offer


@pytest.fixture
def offer():
    return projects_pipeline()


@pytest.fixture
def history():
    rep = make_user(username="rita")
    customer = make_customer(rep)
    offer = projects_pipeline()
    march = local(2026, 3, 10)
    for i in range(20):
        walk(customer, [offer], won=i < 3, closed=march)
    lead, proposal, negotiation = st("Lead in"), st("Proposal"), st("Negotiation")
    for i in range(19):
        walk(customer, [lead, proposal, negotiation], won=i < 15, closed=march)
    walk(customer, [lead, proposal, negotiation, proposal], won=False, closed=march)  # back, then lost
    walk(customer, [lead, proposal], won=False, closed=march)  # lost before Negotiation
    walk(customer, [lead, proposal, negotiation], won=False, closed=march, reason="Duplicate of 12")
    walk(customer, [lead, proposal, negotiation], won=True, closed=local(2025, 6, 20))  # before the window
    calibration = forecast_calibration_compute(now=NOW)
    return {"rep": rep, "customer": customer, "offer": offer, "calibration": calibration}


def rows_by_stage(calibration) -> dict[str, selectors.StageCalibration]:
    return {row.stage.name: row for row in selectors.stage_calibration_list(calibration=calibration)}


def test_a_mis_set_stage_gets_the_empirical_rate_suggested(history):
    offer = rows_by_stage(history["calibration"])["Offer"]
    assert (offer.configured, offer.reached, offer.won) == (60, 20, 3)
    low, high = offer.interval
    assert low == pytest.approx(0.05237, abs=5e-5) and high == pytest.approx(0.36043, abs=5e-5)
    assert offer.outside and offer.suggestion == 15


def test_a_well_set_stage_gets_no_suggestion(history):
    rows = rows_by_stage(history["calibration"])
    negotiation = rows["Negotiation"]
    assert (negotiation.reached, negotiation.won) == (20, 15)
    low, high = negotiation.interval
    assert low == pytest.approx(0.53130, abs=5e-5) and high == pytest.approx(0.88814, abs=5e-5)
    assert not negotiation.outside and negotiation.suggestion is None
    # Proposal was reached by one more deal (lost there): 15 of 21.
    assert (rows["Proposal"].reached, rows["Proposal"].won) == (21, 15)


def test_too_few_deals_suggest_nothing(history):
    from crm.models import Pipeline as P

    small = P.objects.create(name="Small")
    first = PipelineStage.objects.create(pipeline=small, name="Try", order=10, probability=90, kind="open")
    PipelineStage.objects.create(pipeline=small, name="Won", order=90, probability=100, kind="won")
    PipelineStage.objects.create(pipeline=small, name="Lost", order=99, probability=0, kind="lost")
    for _ in range(5):
        walk(history["customer"], [first], won=False, closed=local(2026, 3, 1))
    row = rows_by_stage(forecast_calibration_compute(now=NOW))["Try"]
    assert row.reached == 5 and row.outside and row.low_sample and row.suggestion is None


def test_the_manager_applies_a_suggestion_and_past_frozen_forecasts_keep_theirs(client, history):
    offer, customer = history["offer"], history["customer"]
    waiting = make_deal(
        customer,
        title="Waiting",
        at=local(2026, 6, 20),
        stage=offer,
        expected_close_date=local(2026, 8, 10).date(),
    )
    forecasts_freeze(now=local(2026, 8, 1, 0, 1))
    manager = make_manager()
    client.force_login(manager)
    page = client.get(URL)
    assert page.status_code == 200
    assert b"Apply 15 %" in page.content
    answer = client.post(
        APPLY, {"stage": offer.pk, "expected": 60, "probability": 15}, headers={"HX-Request": "true"}
    )
    assert answer.status_code == 200 and b"<html" not in answer.content
    assert b"now has 15 %" in answer.content
    offer.refresh_from_db()
    assert offer.probability == 15
    version = StageProbabilityVersion.objects.filter(stage=offer).latest("valid_from")
    assert (version.probability, version.set_by, version.reason) == (15, manager, "calibration")
    assert "3 / 20" in version.note
    frozen = FrozenForecastItem.objects.get(granularity="month", deal=waiting)
    assert frozen.probability == 60  # frozen before: keeps the probability it used
    # The suggestion is gone: 15 % lies inside the interval now.
    assert b"Apply 15 %" not in client.get(URL).content


def test_a_stale_or_second_click_is_refused(client, history):
    offer = history["offer"]
    client.force_login(make_manager())
    first = client.post(
        APPLY, {"stage": offer.pk, "expected": 60, "probability": 15}, headers={"HX-Request": "true"}
    )
    assert b"now has 15 %" in first.content
    # The same click again (a second tab, or two managers at once): the page showed 60 %.
    second = client.post(
        APPLY, {"stage": offer.pk, "expected": 60, "probability": 15}, headers={"HX-Request": "true"}
    )
    assert second.status_code == 200
    assert b"changed this stage&#x27;s probability to 15 %" in second.content
    assert StageProbabilityVersion.objects.filter(stage=offer).count() == 1  # the one change


def test_reps_and_agents_may_not_apply(client, history):
    offer = history["offer"]
    for user in (history["rep"], make_agent()):
        client.force_login(user)
        for headers in ({}, {"HX-Request": "true"}):
            answer = client.post(
                APPLY, {"stage": offer.pk, "expected": 60, "probability": 15}, headers=headers
            )
            assert answer.status_code == 404
    offer.refresh_from_db()
    assert offer.probability == 60 and not StageProbabilityVersion.objects.filter(stage=offer).exists()
    client.logout()
    assert client.post(APPLY, {"stage": offer.pk, "expected": 60, "probability": 15}).status_code == 302


@pytest.mark.parametrize(
    "data",
    [
        {"stage": "abc", "expected": "60", "probability": "15"},
        {"stage": "LOST", "expected": "0", "probability": "15"},
        {"stage": "OFFER", "expected": "60", "probability": "999"},
        {"stage": "OFFER", "expected": "60", "probability": "-1"},
        {"stage": "OFFER", "expected": "\x00", "probability": "15"},
        {"stage": "OFFER", "expected": "60", "probability": "\ud800"},
        {"stage": "OFFER", "expected": "60", "probability": "9" * 10_000},
        {"stage": "OFFER", "expected": "60", "probability": "60"},
        {"stage": "9" * 30, "expected": "60", "probability": "15"},
        {},
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(client, offer, data):
    lost = PipelineStage.objects.get(pipeline=offer.pipeline, kind="lost")
    data = {k: {"OFFER": str(offer.pk), "LOST": str(lost.pk)}.get(v, v) for k, v in data.items()}
    client.force_login(make_manager())
    body = encoded(data)
    answer = client.post(APPLY, body, content_type=FORM, headers={"HX-Request": "true"})
    assert answer.status_code == 200
    assert b'role="alert"' in answer.content
    offer.refresh_from_db()
    assert offer.probability == 60 and not StageProbabilityVersion.objects.filter(stage=offer).exists()
    # Without htmx: back to the page, with the error as a message.
    plain = client.post(APPLY, body, content_type=FORM)
    assert plain.status_code == 302


def test_a_rep_sees_their_own_numbers_only(client, history):
    rep, other = history["rep"], make_user(username="otto", first_name="Otto")
    client.force_login(rep)
    page = client.get(URL)
    assert page.status_code == 200
    body = page.content.decode()
    assert "Stage probabilities against what happened" not in body and "Apply" not in body
    assert "Otto" not in body
    assert client.get(URL, headers={"HX-Request": "true"}).status_code == 200
    client.force_login(make_agent())
    assert client.get(URL).status_code == 404
    client.force_login(other)
    assert client.get(URL).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"granularity": "year"},
        {"granularity": "\x00"},
        {"count": "9" * 10_000},
        {"count": "-1"},
        {"granularity": "\ud800", "count": "NaN"},
    ],
)
def test_bad_filters_fall_back_to_the_defaults(client, offer, query):
    client.force_login(make_manager())
    assert client.get(f"{URL}?{encoded(query)}").status_code == 200


def test_the_page_reads_a_bounded_number_of_queries(client, history, django_assert_max_num_queries):
    forecasts_freeze(now=NOW)
    for n in range(15):
        make_user(username=f"extra{n}")
    manager = make_manager()
    client.force_login(manager)
    with django_assert_max_num_queries(14):
        assert client.get(URL).status_code == 200
    client.force_login(history["rep"])
    with django_assert_max_num_queries(12):
        assert client.get(URL).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_two_managers_applying_at_the_same_moment_give_one_change_and_one_refusal():
    """The first click locks the stage's row; the second waits for it, then finds the probability changed
    (it saw 60 %) and is refused: one version, never two."""
    import threading

    from django.db import connection, transaction

    from crm.forecasting.services import StaleProbabilityError, stage_probability_set
    from tests.conftest import seed_defaults

    seed_defaults()
    offer = projects_pipeline()
    first_manager, second_manager = make_manager(), make_manager()
    first_holds_lock, outcomes = threading.Event(), {}

    def first() -> None:
        try:
            with transaction.atomic():
                stage_probability_set(stage_id=offer.pk, probability=15, expected=60, actor=first_manager)
                first_holds_lock.set()
                threading.Event().wait(0.5)  # the second click arrives while this one is uncommitted
            outcomes["first"] = "applied"
        finally:
            connection.close()

    def second() -> None:
        first_holds_lock.wait(5)
        try:
            stage_probability_set(stage_id=offer.pk, probability=20, expected=60, actor=second_manager)
            outcomes["second"] = "applied"
        except StaleProbabilityError as exc:
            outcomes["second"] = f"refused, now {exc.current}"
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == {"first": "applied", "second": "refused, now 15"}
    assert list(
        StageProbabilityVersion.objects.filter(stage=offer).values_list("probability", flat=True)
    ) == [15]
