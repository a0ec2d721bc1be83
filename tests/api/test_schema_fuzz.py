"""A fuzz run over the OpenAPI document (schemathesis): every operation, with generated parameters and
bodies, as a rep and as a manager. No answer is a 500, and every answer matches the schema."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from crm.custom_fields.services import field_create
from tests.api.conftest import token_for
from tests.factories import make_customer, make_deal, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _operations():
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("role", ["rep", "manager"])
def test_every_operation_answers_within_its_schema(role, settings_rate):
    user = make_user() if role == "rep" else make_manager()
    _custom_fields()  # the lists document (and take) a filter per field
    customer = make_customer(user if role == "rep" else None)
    make_deal(customer)
    make_ticket(customer)
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    operations = _operations()
    assert len(operations) >= 20

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        for operation in operations:
            case = data.draw(operation.as_strategy())
            case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def _custom_fields():
    manager = make_manager()
    options = [{"key": "a", "en": "A"}, {"key": "b", "en": "B"}]
    kinds = ("choice", "multi_choice", "yes_no", "user", "date", "integer", "decimal", "money", "text")
    for entity in ("customer", "deal", "ticket"):
        for kind in kinds:
            choices = options if "choice" in kind else None
            field_create(
                actor=manager, entity=entity, key=f"f_{kind}", label_en=kind, kind=kind, choices=choices
            )


@pytest.fixture
def settings_rate(settings):
    """No rate limit, and the app called through WSGI keeps the test's connection (and transaction) open,
    as Django's test client does."""
    settings.CRM_API_RATE = "100000/min"
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
