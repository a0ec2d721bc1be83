"""Forecast categories on deals and versioned stage probabilities (KPIS.md §10.6): the stage gives the
default, a deal may set its own; every change of a stage's probability leaves a version. On Kiritimati
time (UTC+14)."""

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.sites import site
from django.test import RequestFactory
from django.urls import reverse

from crm import services
from crm.data import imports
from crm.forecasting.services import (
    SINCE_EVER,
    StaleProbabilityError,
    stage_probability_record,
    stage_probability_set,
    stage_versions_seed,
)
from crm.models import Deal, ForecastCategory, PipelineStage, StageProbabilityVersion
from crm.tasks import run_import
from tests.api.conftest import Api, token_for
from tests.factories import (
    make_admin,
    make_customer,
    make_deal,
    make_import_job,
    make_manager,
    make_user,
    stage,
)

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")


@pytest.fixture(autouse=True)
def far_from_utc(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def st(name: str) -> PipelineStage:
    return PipelineStage.objects.get(pipeline__is_default=True, name=name)


def test_the_seeded_stages_have_sensible_categories_and_a_first_version():
    categories = dict(
        PipelineStage.objects.filter(pipeline__is_default=True).values_list("name", "forecast_category")
    )
    assert categories == {
        "Lead in": "pipeline",
        "Qualified": "pipeline",
        "Proposal": "best_case",
        "Negotiation": "commit",
        "Won": "commit",
        "Lost": "omitted",
    }
    for stage_ in PipelineStage.objects.all():
        first = stage_.probability_versions.get()
        assert (first.probability, first.valid_from, first.reason) == (
            stage_.probability,
            SINCE_EVER,
            "initial",
        )
    assert stage_versions_seed() == 0  # idempotent


def test_a_deal_takes_its_stages_category_unless_it_sets_its_own():
    deal = make_deal(stage=st("Qualified"))
    assert deal.forecast_category == "" and deal.effective_forecast_category == ForecastCategory.PIPELINE
    deal = services.deal_update(
        deal=deal, actor=deal.owner, data={"forecast_category": "commit"}, version=None
    )
    assert deal.effective_forecast_category == ForecastCategory.COMMIT
    assert deal.get_effective_forecast_category_display() == "Commit"
    # The history keeps it.
    assert [h.forecast_category for h in deal.history.order_by("history_date")] == ["", "commit"]
    moved = services.deal_move_stage(deal=deal, stage=st("Negotiation"), actor=deal.owner)
    assert moved.forecast_category == "commit"  # the deal's own call stays when the stage moves


def test_an_unknown_category_is_refused_by_the_service_and_the_database():
    deal = make_deal()
    with pytest.raises(Exception, match=r"forecast_category|not a valid choice"):
        services.deal_update(deal=deal, actor=deal.owner, data={"forecast_category": "maybe"}, version=None)
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Deal.objects.filter(pk=deal.pk).update(forecast_category="maybe")


def test_the_form_edits_it_and_the_pages_show_it(client):
    rep = make_user()
    deal = make_deal(make_customer(rep), title="Pumps", stage=st("Proposal"))
    client.force_login(rep)
    detail = client.get(deal.get_absolute_url()).content.decode()
    assert "Best case" in detail and "(from the stage)" in detail
    url = reverse("crm:deal_update", args=[deal.pk])
    form = client.get(url).content.decode()
    assert 'name="forecast_category"' in form and "From the stage" in form
    data = {
        "title": "Pumps", "customer": deal.customer_id, "kind": "new", "source": "other", "amount": "1000",
        "version": deal.version, "forecast_category": "omitted",
    }  # fmt: skip
    assert client.post(url, data).status_code == 302
    deal.refresh_from_db()
    assert deal.forecast_category == "omitted"
    # A value that is not a category: the form comes back (htmx: 200) with the field's error.
    bad = client.post(
        url,
        {**data, "version": deal.version, "forecast_category": "\x00maybe"},
        headers={"HX-Request": "true"},
    )
    assert bad.status_code == 200 and b"field-error" in bad.content
    deal.refresh_from_db()
    assert deal.forecast_category == "omitted"
    detail = client.get(deal.get_absolute_url()).content.decode()
    assert "Omitted" in detail and "(from the stage)" not in detail


def test_the_list_shows_and_filters_the_effective_category(client):
    rep = make_user()
    customer = make_customer(rep)
    by_stage = make_deal(customer, title="By stage", stage=st("Negotiation"))
    own = make_deal(customer, title="Own call", stage=st("Qualified"), forecast_category="commit")
    other = make_deal(customer, title="Other", stage=st("Negotiation"), forecast_category="best_case")
    client.force_login(rep)
    page = client.get(reverse("crm:deal_list"), {"forecast_category": "commit"}).content.decode()
    assert by_stage.title in page and own.title in page and other.title not in page
    page = client.get(reverse("crm:deal_list"), {"forecast_category": "best_case"}).content.decode()
    assert other.title in page and own.title not in page
    assert (
        client.get(reverse("crm:deal_list"), {"forecast_category": "\ud800"[:0] + "nope"}).status_code == 200
    )
    board = client.get(reverse("crm:deal_board")).content.decode()
    assert "Forecast category set on the deal" in board  # "Own call" differs from its stage


def test_the_api_reads_writes_and_filters_it(client):
    rep = make_user()
    deal = make_deal(make_customer(rep), stage=st("Proposal"))
    api = Api(client, token_for(rep))
    body = api.get(f"/deals/{deal.pk}").json()
    assert (body["forecast_category"], body["effective_forecast_category"]) == ("", "best_case")
    changed = api.patch(f"/deals/{deal.pk}", {"forecast_category": "commit", "version": deal.version})
    assert changed.status_code == 200 and changed.json()["effective_forecast_category"] == "commit"
    refused = api.patch(
        f"/deals/{deal.pk}", {"forecast_category": "certain", "version": changed.json()["version"]}
    )
    assert refused.status_code == 422 and "forecast_category" in refused.json()["error"]["fields"]
    listed = api.get("/deals/", forecast_category="commit").json()["results"]
    assert [d["id"] for d in listed] == [deal.pk]
    assert api.get("/deals/", forecast_category="pipeline").json()["results"] == []


def test_import_maps_the_category_in_both_languages_and_export_writes_it_back(client):
    manager = make_manager()
    customer = make_customer(manager, email="buyer@example.com")
    content = (
        "Title,Customer,Forecast category\n"
        "One,buyer@example.com,Commit\n"
        "Two,buyer@example.com,最佳情况\n"
        "Three,buyer@example.com,\n"
        "Four,buyer@example.com,certainly\n"
    )
    job = make_import_job(manager, content, kind="deals")
    imports.import_job_start(job=job, actor=manager, mode="both", all_or_nothing=False)
    run_import(job.pk)
    job.refresh_from_db()
    categories = dict(Deal.objects.filter(customer=customer).values_list("title", "forecast_category"))
    assert categories == {"One": "commit", "Two": "best_case", "Three": ""}
    assert job.failed_count == 1 and "is not one of" in " ".join(job.report[0]["messages"])
    client.force_login(manager)
    response = client.get(reverse("crm:deal_export"), {"format": "csv"})
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    column = rows[0].index("Forecast category")
    by_title = {row[rows[0].index("Title")]: row[column] for row in rows[1:]}
    assert by_title == {"One": "Commit", "Two": "Best case", "Three": ""}


# Stage probabilities and their versions
# ---------------------------------------------------------------------------------------------------------


def test_setting_a_probability_records_a_version_and_refuses_a_stale_one():
    manager = make_manager()
    proposal = st("Proposal")
    at = datetime(2026, 6, 16, 9, tzinfo=ZONE)
    version = stage_probability_set(stage_id=proposal.pk, probability=35, expected=50, actor=manager, at=at)
    assert (version.probability, version.valid_from, version.set_by, version.reason) == (
        35,
        at,
        manager,
        "calibration",
    )
    proposal.refresh_from_db()
    assert proposal.probability == 35
    with pytest.raises(StaleProbabilityError) as stale:
        stage_probability_set(stage_id=proposal.pk, probability=20, expected=50, actor=manager)
    assert stale.value.current == 35
    for kwargs, message in (
        ({"stage_id": stage("won").pk, "probability": 90, "expected": 100}, "keep 100"),
        ({"stage_id": proposal.pk, "probability": 35, "expected": 35}, "already"),
        ({"stage_id": proposal.pk, "probability": 101, "expected": 35}, "from 0 to 100"),
        ({"stage_id": 0, "probability": 10, "expected": 35}, "no such stage"),
    ):
        with pytest.raises(Exception, match=message):
            stage_probability_set(actor=manager, **kwargs)
    with pytest.raises(Exception, match="Only managers"):
        stage_probability_set(stage_id=proposal.pk, probability=20, expected=35, actor=make_user())
    assert list(
        proposal.probability_versions.order_by("valid_from").values_list("probability", flat=True)
    ) == [50, 35]


def test_the_admins_pipeline_settings_record_each_probability_change(client):
    admin_user = make_admin()
    proposal = st("Proposal")
    request = RequestFactory().post("/")
    request.user = admin_user
    model_admin = site._registry[PipelineStage]
    proposal.probability = 45
    model_admin.save_model(request, proposal, form=None, change=True)
    model_admin.save_model(request, proposal, form=None, change=True)  # saved again unchanged: no version
    assert list(proposal.probability_versions.values_list("probability", "reason", "set_by")) == [
        (50, "initial", None),
        (45, "admin", admin_user.pk),
    ]
    assert stage_probability_record(stage=proposal, actor=None, reason="admin") is None
    # A new stage is versioned from the start.
    new = PipelineStage.objects.create(pipeline=proposal.pipeline, name="Trial", order=35, probability=60)
    model_admin.save_model(request, new, form=None, change=False)
    assert new.probability_versions.get().probability == 60
    # Versions are history: the admin may read them, not change them.
    version_admin = site._registry[StageProbabilityVersion]
    assert not version_admin.has_change_permission(request) and not version_admin.has_delete_permission(
        request
    )
